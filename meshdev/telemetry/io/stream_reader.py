"""meshdev's /stats/stream: each `data:` document -> a `SidecarInterval`.

Documents come at 4 Hz from every sidecar, so the shapes every sidecar sends are checked in
one comparison per host or breaker; anything else goes the slow way, field by field, and a
wrong one raises `SnapshotError` naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from meshdev.common.breaker_view import BreakerView
from meshdev.telemetry.aggregation.sidecar_interval import (
    HostSample,
    HostTotals,
    IntervalHistogram,
    SidecarInterval,
    SnapshotError,
    host_deltas,
)
from meshdev.telemetry.io.wire_checks import (
    check_dict,
    check_int,
    check_int_map,
    check_list,
    check_num,
    check_str,
    opt_int,
    opt_str,
)


class StreamReader:
    """Parses one stream's documents; owns the host totals of the previous one."""

    def __init__(self) -> None:
        self._host_totals: HostTotals | None = None

    def reset(self) -> None:
        """A new connection: its first document's host totals are a baseline, not a delta."""
        self._host_totals = None

    def parse(self, doc: object, received: float) -> SidecarInterval:
        d = check_dict(doc, "snapshot")
        node = check_dict(d.get("node", {}), "node")
        config = check_dict(d.get("config", {}), "config")
        histograms = {
            check_str(name, "histograms"): _interval_histogram(
                check_dict(h, f"histograms.{name}").get("interval", {}),
                f"histograms.{name}.interval",
            )
            for name, h in check_dict(d.get("histograms", {}), "histograms").items()
        }
        hosts = [_stream_host(h) for h in check_list(d.get("hosts", []), "hosts")]
        breakers = [_breaker(b) for b in check_list(d.get("breakers", []), "breakers")]
        interval = check_num(d.get("interval_s", 0.0), "interval_s")
        snap = SidecarInterval(
            node=opt_str(node.get("id")) or "",
            received=received,
            interval_s=max(0.0, interval),
            config_version=opt_int(config.get("version")),
            config_hash=opt_str(config.get("hash")),
            counters=check_int_map(d.get("counters", {}), "counters"),
            deltas=check_int_map(d.get("counter_deltas", {}), "counter_deltas"),
            gauges=check_int_map(d.get("gauges", {}), "gauges"),
            histograms=histograms,
            hosts=hosts,
            breakers=breakers,
        )
        self._host_totals = host_deltas(snap.hosts, self._host_totals)
        return snap


def _quantiles(obj: object) -> dict[str, float | None] | None:
    if not isinstance(obj, dict):
        return None
    return {k: (float(v) if type(v) in (int, float) else None) for k, v in obj.items()}


def _interval_histogram(obj: object, what: str) -> IntervalHistogram:
    d = check_dict(obj, what)
    raw = d.get("buckets", [])
    if not isinstance(raw, list):
        raise SnapshotError(f"{what}.buckets: expected a list")
    return IntervalHistogram(
        check_int(d.get("count", 0), what + ".count"),
        check_num(d.get("sum", 0.0), what + ".sum"),
        None,
        _quantiles(d.get("quantiles")),
        raw=raw,
    )


_BREAKER_FIELDS = tuple(f.name for f in dataclasses.fields(BreakerView))
_BREAKER_TYPES = (str, *(int,) * 8, *(bool,) * 4)


def _breaker(obj: object) -> BreakerView:
    d = check_dict(obj, "breakers[]")
    values: list[Any] = list(map(d.get, _BREAKER_FIELDS))
    if tuple(map(type, values)) == _BREAKER_TYPES:
        return BreakerView(*values)
    cluster = check_str(d.get("cluster"), "breakers[].cluster")

    def n(key: str) -> int:
        return check_int(d.get(key, 0), f"breakers[{cluster}].{key}")

    def flag(key: str) -> bool:
        return d.get(key) is True

    return BreakerView(
        cluster=cluster,
        max_connections=n("max_connections"),
        max_pending_requests=n("max_pending_requests"),
        max_requests=n("max_requests"),
        max_retries=n("max_retries"),
        cx_active=n("cx_active"),
        rq_pending_active=n("rq_pending_active"),
        rq_active=n("rq_active"),
        rq_retry_active=n("rq_retry_active"),
        cx_open=flag("cx_open"),
        rq_pending_open=flag("rq_pending_open"),
        rq_open=flag("rq_open"),
        rq_retry_open=flag("rq_retry_open"),
    )


_HOST_FIELDS = (
    "cluster",
    "address",
    "port",
    "pod",
    "ejected",
    "ejected_for",
    "ejection_count",
    "rq_active",
    "rq_total",
    "rq_success",
    "rq_error",
)
_HOST_TYPES = (str, str, int, str, bool, float, int, int, int, int, int)


def _stream_host(obj: object) -> HostSample:
    d = check_dict(obj, "hosts[]")
    values: list[Any] = list(map(d.get, _HOST_FIELDS))
    # The shape every sidecar sends, checked in one comparison; anything else the slow way.
    if tuple(map(type, values)) == _HOST_TYPES and values[5] >= 0:
        return HostSample(*values)
    return HostSample(
        cluster=check_str(d.get("cluster"), "hosts[].cluster"),
        address=check_str(d.get("address"), "hosts[].address"),
        port=check_int(d.get("port"), "hosts[].port"),
        pod=opt_str(d.get("pod")) or "",
        ejected=d.get("ejected") is True,
        ejected_for=max(0.0, check_num(d.get("ejected_for", 0.0), "hosts[].ejected_for")),
        ejection_count=check_int(d.get("ejection_count", 0), "hosts[].ejection_count"),
        rq_active=check_int(d.get("rq_active", 0), "hosts[].rq_active"),
        rq_total=check_int(d.get("rq_total", 0), "hosts[].rq_total"),
        rq_success=check_int(d.get("rq_success", 0), "hosts[].rq_success"),
        rq_error=check_int(d.get("rq_error", 0), "hosts[].rq_error"),
    )
