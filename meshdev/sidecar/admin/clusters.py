"""Envoy's /clusters: `cluster::host::stat::value` lines, and its `?format=json` shape.

Clusters come from the config (so a cluster without endpoints still shows), thresholds from
the live breakers when the data plane reports them, hosts from the outlier detector's view.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshdev.common.breaker_view import BreakerView
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.admin.views import HostView

_THRESHOLDS = ("max_connections", "max_pending_requests", "max_requests", "max_retries")


def health_flags(host: HostView) -> str:
    """Envoy prints `healthy`, or every failed check as `/flag`."""
    return "/failed_outlier_check" if host.ejected else "healthy"


def success_rate(host: HostView) -> float:
    """Percent of finished requests that succeeded; -1 (Envoy's "not computed") before any."""
    finished = host.rq_success + host.rq_error
    return round(100.0 * host.rq_success / finished, 2) if finished else -1.0


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _thresholds(config: SidecarConfig, breakers: Sequence[BreakerView]) -> dict[str, list[int]]:
    live = {b.cluster: b for b in breakers}
    out: dict[str, list[int]] = {}
    for c in config.clusters:
        source: object = live.get(c.name, c.circuit_breaker)
        out[c.name] = [int(getattr(source, k)) for k in _THRESHOLDS]
    return out


def _hosts_by_cluster(
    config: SidecarConfig, hosts: Sequence[HostView]
) -> dict[str, list[HostView]]:
    grouped: dict[str, list[HostView]] = {c.name: [] for c in config.clusters}
    for h in hosts:
        grouped.setdefault(h.cluster, []).append(h)
    return grouped


def render_clusters_text(
    config: SidecarConfig, hosts: Sequence[HostView], breakers: Sequence[BreakerView]
) -> str:
    thresholds = _thresholds(config, breakers)
    lines: list[str] = []
    for cluster, members in _hosts_by_cluster(config, hosts).items():
        lines.append(f"{cluster}::observability_name::{cluster}")
        for key, value in zip(_THRESHOLDS, thresholds.get(cluster, []), strict=False):
            lines.append(f"{cluster}::default_priority::{key}::{value}")
        lines.append(f"{cluster}::added_via_api::true")
        for h in members:
            p = f"{cluster}::{h.address}:{h.port}"
            # Counters and gauges in Envoy's (alphabetical) order, then the host's properties.
            lines += [
                f"{p}::cx_active::{h.cx_active}",
                f"{p}::rq_active::{h.rq_active}",
                f"{p}::rq_error::{h.rq_error}",
                f"{p}::rq_success::{h.rq_success}",
                f"{p}::rq_total::{h.rq_total}",
                f"{p}::hostname::{h.pod}",
                f"{p}::health_flags::{health_flags(h)}",
                f"{p}::weight::1",
                f"{p}::success_rate::{_number(success_rate(h))}",
                f"{p}::local_origin_success_rate::-1",
            ]
    return "\n".join(lines) + "\n" if lines else ""


def render_clusters_json(
    config: SidecarConfig, hosts: Sequence[HostView], breakers: Sequence[BreakerView]
) -> dict[str, object]:
    """Envoy's ClusterStatuses as JSON (stat values are strings there: proto3 uint64)."""
    thresholds = _thresholds(config, breakers)
    statuses: list[dict[str, object]] = []
    for cluster, members in _hosts_by_cluster(config, hosts).items():
        limits = dict(zip(_THRESHOLDS, thresholds.get(cluster, []), strict=False))
        statuses.append(
            {
                "name": cluster,
                "observability_name": cluster,
                "added_via_api": True,
                "circuit_breakers": {"thresholds": [limits] if limits else []},
                "host_statuses": [_host_status(h) for h in members],
            }
        )
    return {"cluster_statuses": statuses}


def _host_status(h: HostView) -> dict[str, object]:
    health: dict[str, object] = {"eds_health_status": "HEALTHY"}
    if h.ejected:
        health["failed_outlier_check"] = True
    status: dict[str, object] = {
        "address": {"socket_address": {"address": h.address, "port_value": h.port}},
        "stats": [
            {"name": "cx_active", "type": "GAUGE", "value": str(h.cx_active)},
            {"name": "rq_active", "type": "GAUGE", "value": str(h.rq_active)},
            {"name": "rq_error", "value": str(h.rq_error)},
            {"name": "rq_success", "value": str(h.rq_success)},
            {"name": "rq_total", "value": str(h.rq_total)},
        ],
        "health_status": health,
        "weight": 1,
        "hostname": h.pod,
    }
    rate = success_rate(h)
    if rate >= 0:
        status["success_rate"] = {"value": rate}
    return status
