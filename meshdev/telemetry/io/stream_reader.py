"""meshdev's /stats/stream: each `data:` document -> a `SidecarInterval`.

Documents come at 4 Hz from every sidecar, so the shapes every sidecar sends are checked in
one comparison per host or breaker; anything else goes the slow way, field by field, and a
wrong one raises `SnapshotError` naming it.

Both versions of the stream (sidecar/stats/stream.py) are read: v1's whole documents as they
are, v2's changes applied to what this reader keeps of the sidecar (its counters, gauges,
histogram names, hosts and breakers), so each v2 document costs what changed in it. A v2
document that cannot follow the previous one (a gap in `seq`, a change before any whole
document) raises `StreamGap`: the client reconnects, and the new connection's first document
is whole. If it comes from the same stats store (`instance`), the differences against the
totals kept here are taken, so the counts of the time away are not lost.
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


class StreamGap(SnapshotError):
    """A v2 document that does not follow the one before: reconnect for a whole one."""


# The interval of a histogram that recorded nothing, shared: most of a v2 sidecar's are that.
_IDLE = IntervalHistogram(0, 0.0)


class StreamReader:
    """Parses one stream's documents; owns what the next one is read against."""

    def __init__(self) -> None:
        self._host_totals: HostTotals | None = None
        # v2: the sidecar as the documents so far say it is.
        self._state: _DeltaState | None = None
        self._seq: int | None = None  # the last v2 document's; None: the next must be whole

    def reset(self) -> None:
        """A new connection: v1's first host totals are a baseline, not a delta; v2's first
        document must be whole (the state kept for it stays, to resume from)."""
        self._host_totals = None
        self._seq = None

    def missed(self) -> None:
        """A document of this stream could not be read: no change document can follow it."""
        self._seq = None

    def parse(self, doc: object, received: float) -> SidecarInterval:
        d = check_dict(doc, "snapshot")
        if d.get("v") == 2:
            try:
                return self._parse_v2(d, received)
            except SnapshotError:
                self._seq = None
                raise
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

    # -- v2: changes --------------------------------------------------------------------------

    def _parse_v2(self, d: dict[str, Any], received: float) -> SidecarInterval:
        seq = check_int(d.get("seq"), "seq")
        full = d.get("full") is True
        instance = opt_str(d.get("instance")) or ""
        timestamp = check_num(d.get("timestamp", 0.0), "timestamp")
        interval = max(0.0, check_num(d.get("interval_s", 0.0), "interval_s"))
        state = self._state
        if full:
            # Without an instance there is no telling a restart from a reconnection.
            if state is not None and instance and state.instance == instance:
                # Back on the same sidecar: its totals are comparable with ours, so this
                # document's differences cover the whole time since our last one.
                interval = max(interval, timestamp - state.timestamp)
            else:
                state = None
        elif self._seq is None or seq != self._seq + 1 or state is None:
            want = "a whole document" if self._seq is None else f"seq {self._seq + 1}"
            self._seq = None
            raise StreamGap(f"changes with seq {seq}, expected {want}")
        node = check_dict(d.get("node", {}), "node")
        config = check_dict(d.get("config", {}), "config")
        counters = check_int_map(d.get("counters", {}), "counters")
        gauges = check_int_map(d.get("gauges", {}), "gauges")
        raw_histograms = check_dict(d.get("histograms", {}), "histograms")
        histograms = {
            check_str(name, "histograms"): _interval_histogram(h, f"histograms.{name}")
            for name, h in raw_histograms.items()
        }
        hosts = [_stream_host(h) for h in check_list(d.get("hosts", []), "hosts")]
        breakers = [_breaker(b) for b in check_list(d.get("breakers", []), "breakers")]
        gone_hosts = [_host_key(k) for k in check_list(d.get("hosts_gone", []), "hosts_gone")]
        gone_breakers = [
            check_str(c, "breakers_gone[]")
            for c in check_list(d.get("breakers_gone", []), "breakers_gone")
        ]
        # Checked whole before anything is applied: a bad document leaves the state as it was.
        fresh: dict[tuple[str, str, int], HostSample] = {}
        if state is None:
            deltas: dict[str, int] = {}
            state = _DeltaState(instance, counters, gauges, histograms, hosts, breakers)
        elif full:
            deltas, fresh = state.replace(counters, gauges, histograms, hosts, breakers)
        else:
            deltas, fresh = state.apply(counters, gauges, histograms, hosts, breakers)
            state.forget(gone_hosts, gone_breakers)
        state.timestamp = timestamp
        self._state = state
        self._seq = seq
        all_histograms = dict.fromkeys(state.histogram_names, _IDLE)
        all_histograms.update((k, h) for k, h in histograms.items() if h.count)
        return SidecarInterval(
            node=opt_str(node.get("id")) or "",
            received=received,
            interval_s=interval,
            config_version=opt_int(config.get("version")),
            config_hash=opt_str(config.get("hash")),
            counters=dict(state.counters),
            deltas=deltas,
            gauges=dict(state.gauges),
            histograms=all_histograms,
            hosts=state.host_samples(fresh),
            breakers=list(state.breakers.values()),
        )


def _host_key(obj: object) -> tuple[str, str, int]:
    k = check_list(obj, "hosts_gone[]")
    if len(k) != 3:
        raise SnapshotError("hosts_gone[]: expected [cluster, address, port]")
    return (
        check_str(k[0], "hosts_gone[].cluster"),
        check_str(k[1], "hosts_gone[].address"),
        check_int(k[2], "hosts_gone[].port"),
    )


class _DeltaState:
    """One sidecar as a v2 stream has described it so far. Hosts keep their totals and an idle
    sample (no requests) to hand on while they do not change, so a quiet host costs nothing."""

    def __init__(
        self,
        instance: str,
        counters: dict[str, int],
        gauges: dict[str, int],
        histograms: dict[str, IntervalHistogram],
        hosts: list[HostSample],
        breakers: list[BreakerView],
    ) -> None:
        self.instance = instance
        self.timestamp = 0.0
        self.counters = dict(counters)
        self.gauges = dict(gauges)
        self.histogram_names: dict[str, None] = dict.fromkeys(histograms)
        self.hosts: dict[tuple[str, str, int], tuple[tuple[int, int, int], HostSample]] = {}
        # A baseline: what the hosts did before we looked is no delta.
        self._record_hosts(hosts, host_deltas(hosts, None))
        self.breakers = {b.cluster: b for b in breakers}

    def host_samples(self, fresh: dict[tuple[str, str, int], HostSample]) -> list[HostSample]:
        """Every host: those that changed with their deltas, the others idle."""
        return [fresh.get(key) or idle for key, (_, idle) in self.hosts.items()]

    def apply(
        self,
        counters: dict[str, int],
        gauges: dict[str, int],
        histograms: dict[str, IntervalHistogram],
        hosts: list[HostSample],
        breakers: list[BreakerView],
    ) -> tuple[dict[str, int], dict[tuple[str, str, int], HostSample]]:
        """A change document on top of the state: (counter deltas, changed hosts)."""
        deltas = _counter_deltas(self.counters, counters)
        self.counters.update(counters)
        self.gauges.update(gauges)
        for name in histograms:
            self.histogram_names.setdefault(name)
        for b in breakers:
            self.breakers[b.cluster] = b
        return deltas, self._changed_hosts(hosts)

    def replace(
        self,
        counters: dict[str, int],
        gauges: dict[str, int],
        histograms: dict[str, IntervalHistogram],
        hosts: list[HostSample],
        breakers: list[BreakerView],
    ) -> tuple[dict[str, int], dict[tuple[str, str, int], HostSample]]:
        """A whole document of the same instance: it is the state now, and its differences
        against the kept totals are the deltas (what happened while we were away)."""
        deltas = _counter_deltas(self.counters, counters)
        self.counters = dict(counters)
        self.gauges = dict(gauges)
        self.histogram_names = dict.fromkeys(histograms)
        self.breakers = {b.cluster: b for b in breakers}
        keep = {h.key for h in hosts}
        self.hosts = {k: v for k, v in self.hosts.items() if k in keep}
        return deltas, self._changed_hosts(hosts)

    def forget(self, hosts: list[tuple[str, str, int]], breakers: list[str]) -> None:
        for key in hosts:
            self.hosts.pop(key, None)
        for cluster in breakers:
            self.breakers.pop(cluster, None)

    def _changed_hosts(self, hosts: list[HostSample]) -> dict[tuple[str, str, int], HostSample]:
        kept = self.hosts
        # A host new to us counts from zero: it appeared (a config change) while we watched.
        previous: HostTotals = {h.key: kept[h.key][0] for h in hosts if h.key in kept}
        self._record_hosts(hosts, host_deltas(hosts, previous))
        return {h.key: h for h in hosts}

    def _record_hosts(self, hosts: list[HostSample], totals: HostTotals) -> None:
        for h in hosts:
            self.hosts[h.key] = (totals[h.key], h.idle())


def _counter_deltas(before: dict[str, int], now: dict[str, int]) -> dict[str, int]:
    deltas: dict[str, int] = {}
    for name, v in now.items():
        d = v - before.get(name, 0)
        if d:
            # Down means a counter that started over: all of it is new (as a poll reads it).
            deltas[name] = d if d > 0 else v
    return deltas


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
