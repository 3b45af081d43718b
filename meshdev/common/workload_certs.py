"""The contract for workload certificates between the control plane and a sidecar.

The control plane (the mesh's CA) issues each pod an ECDSA P-256 certificate whose only URI SAN
is the pod's SPIFFE ID, and delivers it with POST /certs on the sidecar's admin API (with the
admin token, like POST /config): a JSON `WorkloadCerts`. The sidecar keeps the key in memory
only; GET /certs shows the certificates in Envoy's shape, never the key. A new POST replaces
the certificates for new handshakes (rotation); connections already open keep theirs.
"""

from __future__ import annotations

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
