"""The contract for workload certificates between the control plane and a sidecar.

The control plane (the mesh's CA) issues each pod an ECDSA P-256 certificate whose only URI SAN
is the pod's SPIFFE ID, and delivers it with POST /certs on the sidecar's admin API (with the
admin token, like POST /config): a JSON `WorkloadCerts`. The sidecar keeps the key in memory
only; GET /certs shows the certificates in Envoy's shape, never the key. A new POST replaces
the certificates for new handshakes (rotation); connections already open keep theirs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

CERTS_PATH = "/certs"
TRUST_DOMAIN = "cluster.local"


def principal(mesh: str, service: str) -> str:
    """Istio's principal for a service's workloads: its SPIFFE ID without the scheme (the
    mesh is the namespace, the service the service account)."""
    return f"{TRUST_DOMAIN}/ns/{mesh}/sa/{service}"


def spiffe_id(mesh: str, service: str) -> str:
    return f"spiffe://{principal(mesh, service)}"


class WorkloadCerts(BaseModel):
    """What POST /certs carries: PEM text. `cert_chain`: the workload certificate first, then
    any intermediates; `ca`: the roots a peer's chain must lead to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca: str = Field(min_length=1)
    cert_chain: str = Field(min_length=1)
    # SecretStr: never printed by a repr or a log line by accident.
    private_key: SecretStr


# -- reading GET /certs (Envoy's admin.v3.Certificates), leniently -------------------------------
#
#     {"certificates": [{"ca_cert": [...], "cert_chain": [{"subject_alt_names": [{"uri": ...}],
#       "days_until_expiration": "0", "valid_from": "...Z", "expiration_time": "...Z"}]}]}
#
# `meshdev status` and the dashboard may read a newer sidecar or a real Envoy: a field they do
# not understand costs that field, not the answer.


def workload_leaves(answer: object, spiffe_id: str) -> list[dict[str, Any]]:
    """The leaf certificates of an answer's chains, those naming `spiffe_id` if any do (else
    every chain's leaf: a peer that names another identity still has a workload certificate);
    CA certificates are never among them."""
    certificates = answer.get("certificates") if isinstance(answer, dict) else None
    leaves: list[dict[str, Any]] = []
    for cert in certificates if isinstance(certificates, list) else ():
        chain = cert.get("cert_chain") if isinstance(cert, dict) else None
        if isinstance(chain, list) and chain and isinstance(chain[0], dict):
            leaves.append(chain[0])
    named = [leaf for leaf in leaves if spiffe_id in leaf_uris(leaf)]
    return named or leaves


def leaf_uris(leaf: dict[str, Any]) -> list[str]:
    names = leaf.get("subject_alt_names")
    if not isinstance(names, list):
        return []
    return [n["uri"] for n in names if isinstance(n, dict) and isinstance(n.get("uri"), str)]


def timestamp(value: object) -> datetime | None:
    """A protobuf Timestamp in JSON (RFC 3339, any offset, any fraction); None for anything
    else, a time without an offset included (it names no moment)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
