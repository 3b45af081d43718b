"""A pod's workload certificate, from its admin API's GET /certs (Envoy's admin.v3.Certificates).

    {"certificates": [{"ca_cert": [...], "cert_chain": [{"subject_alt_names": [{"uri": ...}],
      "days_until_expiration": "0", "valid_from": "...Z", "expiration_time": "...Z"}]}]}

Read leniently, as topology.py reads /config_dump: the dashboard may watch a newer sidecar,
or a real Envoy, and a field it does not understand costs that field, not the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The workload certificate in use: the leaf of its chain."""

    spiffe_id: str
    expires_at: float  # POSIX seconds
    valid_from: float | None = None


def from_envoy_certs(doc: object, spiffe_id: str, now: float) -> CertInfo | None:
    """The leaf that names `spiffe_id` (else the first leaf of any chain); None when the
    answer holds no certificate it can date. `now` (POSIX seconds) dates an answer that
    gives only Envoy's `days_until_expiration`."""
    certificates = doc.get("certificates") if isinstance(doc, dict) else None
    leaves: list[dict[str, Any]] = []
    for cert in certificates if isinstance(certificates, list) else ():
        chain = cert.get("cert_chain") if isinstance(cert, dict) else None
        if isinstance(chain, list) and chain and isinstance(chain[0], dict):
            leaves.append(chain[0])
    named = [leaf for leaf in leaves if spiffe_id in _uris(leaf)]
    for leaf in named or leaves:
        uris = _uris(leaf)
        expires = _timestamp(leaf.get("expiration_time"))
        if expires is None:
            days = _number(leaf.get("days_until_expiration"))
            if days is None:
                continue
            expires = now + days * _DAY
        return CertInfo(
            spiffe_id=spiffe_id if spiffe_id in uris else (uris[0] if uris else ""),
            expires_at=expires,
            valid_from=_timestamp(leaf.get("valid_from")),
        )
    return None


def _uris(leaf: dict[str, Any]) -> list[str]:
    names = leaf.get("subject_alt_names")
    if not isinstance(names, list):
        return []
    return [n["uri"] for n in names if isinstance(n, dict) and isinstance(n.get("uri"), str)]


def _timestamp(value: object) -> float | None:
    """A protobuf Timestamp in JSON (RFC 3339, any offset, any fraction)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _number(value: object) -> float | None:
    # proto3 JSON writes Envoy's uint64 as a string.
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
