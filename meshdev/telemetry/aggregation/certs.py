"""A pod's workload certificate as the dashboard keeps it, from its admin API's GET /certs
(read by common/workload_certs.py, as `meshdev status` reads it)."""

from __future__ import annotations

from dataclasses import dataclass

from meshdev.common.workload_certs import leaf_uris, timestamp, workload_leaves

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
    gives only Envoy's `days_until_expiration`: the dashboard counts down in days and hours,
    where a day's precision still says when to worry."""
    for leaf in workload_leaves(doc, spiffe_id):
        uris = leaf_uris(leaf)
        expires = _seconds(leaf.get("expiration_time"))
        if expires is None:
            days = _number(leaf.get("days_until_expiration"))
            if days is None:
                continue
            expires = now + days * _DAY
        return CertInfo(
            spiffe_id=spiffe_id if spiffe_id in uris else (uris[0] if uris else ""),
            expires_at=expires,
            valid_from=_seconds(leaf.get("valid_from")),
        )
    return None


def _seconds(value: object) -> float | None:
    moment = timestamp(value)
    return moment.timestamp() if moment is not None else None


def _number(value: object) -> float | None:
    # proto3 JSON writes Envoy's uint64 as a string.
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
