"""Envoy's `/clusters?format=json` (ClusterStatuses) plus its cluster gauges -> the hosts
and circuit breakers of a `SidecarInterval`."""

from __future__ import annotations

from collections.abc import Mapping

from meshdev.common.breaker_view import BreakerView
from meshdev.common.envoy_defaults import CIRCUIT_BREAKER_THRESHOLDS
from meshdev.telemetry.aggregation.sidecar_interval import HostSample
from meshdev.telemetry.io.wire_checks import opt_str


def _stat_value(stats: object, name: str) -> int:
    if isinstance(stats, list):
        for s in stats:
            if isinstance(s, dict) and s.get("name") == name:
                try:
                    return int(s.get("value", 0))
                except (TypeError, ValueError):
                    return 0
    return 0


_THRESHOLDS = tuple(CIRCUIT_BREAKER_THRESHOLDS)


def envoy_clusters(
    doc: object, values: Mapping[str, int]
) -> tuple[list[HostSample], list[BreakerView]]:
    """Hosts and breakers from Envoy's ClusterStatuses JSON plus the cluster gauges."""
    hosts: list[HostSample] = []
    breakers: list[BreakerView] = []
    if not isinstance(doc, dict):
        return hosts, breakers
    for status in doc.get("cluster_statuses", []) or []:
        if not isinstance(status, dict) or not isinstance(status.get("name"), str):
            continue
        cluster = status["name"]
        for h in status.get("host_statuses", []) or []:
            sample = _envoy_host(cluster, h)
            if sample is not None:
                hosts.append(sample)
        breakers.append(_envoy_breaker(cluster, status.get("circuit_breakers"), values))
    return hosts, breakers


def _envoy_host(cluster: str, h: object) -> HostSample | None:
    if not isinstance(h, dict):
        return None
    sock = (
        h.get("address", {}).get("socket_address", {}) if isinstance(h.get("address"), dict) else {}
    )
    address, port = sock.get("address"), sock.get("port_value")
    if not isinstance(address, str) or type(port) is not int:
        return None
    health = h.get("health_status")
    stats = h.get("stats")
    return HostSample(
        cluster=cluster,
        address=address,
        port=port,
        pod=opt_str(h.get("hostname")) or "",
        ejected=isinstance(health, dict) and health.get("failed_outlier_check") is True,
        # Envoy's admin API does not say when an ejected host returns, nor how often it was out.
        ejected_for=0.0,
        ejection_count=0,
        rq_active=_stat_value(stats, "rq_active"),
        rq_total=_stat_value(stats, "rq_total"),
        rq_success=_stat_value(stats, "rq_success"),
        rq_error=_stat_value(stats, "rq_error"),
    )


def _envoy_breaker(cluster: str, cb: object, values: Mapping[str, int]) -> BreakerView:
    # Envoy's defaults stand for a threshold its /clusters leaves out.
    limits = dict(CIRCUIT_BREAKER_THRESHOLDS)
    thresholds = cb.get("thresholds") if isinstance(cb, dict) else None
    if isinstance(thresholds, list):
        for t in thresholds:
            # The DEFAULT priority's thresholds (Envoy omits `priority` for it).
            if isinstance(t, dict) and t.get("priority", "DEFAULT") == "DEFAULT":
                for k in _THRESHOLDS:
                    v = t.get(k)
                    if isinstance(v, int | str) and str(v).isdigit():
                        limits[k] = int(v)
                break
    p = f"cluster.{cluster}."
    cbp = p + "circuit_breakers.default."
    retry_remaining = values.get(cbp + "remaining_retries")
    return BreakerView(
        cluster=cluster,
        **limits,
        cx_active=values.get(p + "upstream_cx_active", 0),
        rq_pending_active=values.get(p + "upstream_rq_pending_active", 0),
        rq_active=values.get(p + "upstream_rq_active", 0),
        rq_retry_active=(
            limits["max_retries"] - retry_remaining
            if retry_remaining is not None
            else values.get(p + "upstream_rq_retry_active", 0)
        ),
        cx_open=values.get(cbp + "cx_open", 0) > 0,
        rq_pending_open=values.get(cbp + "rq_pending_open", 0) > 0,
        rq_open=values.get(cbp + "rq_open", 0) > 0,
        rq_retry_open=values.get(cbp + "rq_retry_open", 0) > 0,
    )
