"""One sidecar's numbers for one interval, parsed from /stats/stream or from polling /stats.

A `Snapshot` is what aggregation reads: cumulative counters (to learn which stats exist),
counter deltas over `interval_s`, gauges, interval histograms with their buckets (so the same
histogram merges across sidecars), hosts with their request deltas, and breakers. Input from
the network is checked here, once, so aggregation can trust its types.

Two readers produce them:
- `StreamReader` turns each `data:` document of meshdev's /stats/stream into a Snapshot;
- `PollReader` turns Envoy's `/stats?format=json` (+ `/clusters?format=json`, `/server_info`)
  into one, computing the deltas itself from the previous poll. Envoy's JSON does not say
  which stats are counters, so every value is offered as both; aggregation only ever takes
  deltas of counter names and levels of gauge names.

`combine` folds two consecutive snapshots into one, for when a sidecar sent two before the
dashboard took one: nothing is lost, and rates stay per second of real time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshdev.sidecar.histogram import HistogramSnapshot
from meshdev.sidecar.views import BreakerView


class SnapshotError(ValueError):
    """A document that is not a stats snapshot (wrong shape or types)."""


Bucket = tuple[float, float, int]


class IntervalHistogram:
    """What one histogram recorded in the interval; buckets are [lower_ms, width_ms, count].

    Buckets are checked and converted when first read: a stream document carries dozens of
    histograms, and the dashboard reads the buckets of few of them (routes that several
    sidecars serve, and those the route detail shows).
    """

    __slots__ = ("_buckets", "_raw", "count", "quantiles", "sum")

    def __init__(
        self,
        count: int,
        total: float,
        buckets: list[Bucket] | None = None,
        quantiles: dict[str, float | None] | None = None,
        *,
        raw: list[Any] | None = None,
    ) -> None:
        self.count = count
        self.sum = total
        # The sidecar's own quantiles of this interval (`p50`, `p95`, ...); None once two
        # intervals were combined (only the buckets can say what the union's quantiles are).
        self.quantiles = quantiles
        self._buckets = buckets
        self._raw = raw if raw is not None else []

    @property
    def buckets(self) -> list[Bucket]:
        """Raises SnapshotError if the sidecar sent something that is not buckets."""
        if self._buckets is None:
            self._buckets = _buckets(self._raw)
        return self._buckets

    @property
    def raw_buckets(self) -> list[Any]:
        return self._raw if self._buckets is None else self._buckets

    def histogram(self) -> HistogramSnapshot:
        return HistogramSnapshot.from_buckets(self.buckets, self.sum)


@dataclass(slots=True)
class HostSample:
    cluster: str
    address: str
    port: int
    pod: str
    ejected: bool
    ejected_for: float
    ejection_count: int
    rq_active: int
    # Deltas over the snapshot's interval (the views carry running totals).
    rq_total: int = 0
    rq_success: int = 0
    rq_error: int = 0
    endpoint: str = ""  # `address:port`

    def __post_init__(self) -> None:
        if not self.endpoint:
            self.endpoint = f"{self.address}:{self.port}"

    @property
    def key(self) -> tuple[str, str, int]:
        return self.cluster, self.address, self.port


@dataclass(slots=True)
class Snapshot:
    node: str
    received: float  # monotonic seconds, the reader's clock
    interval_s: float  # the time the deltas and interval histograms cover
    config_version: int | None
    config_hash: str | None
    counters: dict[str, int]
    deltas: dict[str, int]
    gauges: dict[str, int]
    histograms: dict[str, IntervalHistogram]
    hosts: list[HostSample] = field(default_factory=list)
    breakers: list[BreakerView] = field(default_factory=list)
    # How many snapshots from the wire this one folds together.
    parts: int = 1


# -- checking what came over the wire --------------------------------------------------------


def _dict(obj: object, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SnapshotError(f"{what}: expected an object, got {type(obj).__name__}")
    return obj


def _int_map(obj: object, what: str) -> dict[str, int]:
    d = _dict(obj, what)
    # bool is an int subclass that no stat value is; a float is no counter either.
    if not all(type(v) is int for v in d.values()):
        bad = next(k for k, v in d.items() if type(v) is not int)
        raise SnapshotError(f"{what}.{bad}: expected an integer")
    return d


def _num(obj: object, what: str) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise SnapshotError(f"{what}: expected a number")
    value = float(obj)
    if not math.isfinite(value):
        raise SnapshotError(f"{what}: not finite")
    return value


def _int(obj: object, what: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise SnapshotError(f"{what}: expected an integer")
    return obj


def _str(obj: object, what: str) -> str:
    if not isinstance(obj, str):
        raise SnapshotError(f"{what}: expected a string")
    return obj


def _opt_int(obj: object) -> int | None:
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else None


def _opt_str(obj: object) -> str | None:
    return obj if isinstance(obj, str) else None


def _buckets(raw: list[Any]) -> list[Bucket]:
    try:
        # `+ 0.0` / `+ 0` accept numbers only (a string or a list raises TypeError), and the
        # unpacking rejects anything but triples, in one pass without a call per value.
        return [(lo + 0.0, w + 0.0, n + 0) for lo, w, n in raw]
    except (TypeError, ValueError):
        raise SnapshotError("histogram buckets: each must be [lower, width, count]") from None


def _quantiles(obj: object) -> dict[str, float | None] | None:
    if not isinstance(obj, dict):
        return None
    return {k: (float(v) if type(v) in (int, float) else None) for k, v in obj.items()}


def _interval_histogram(obj: object, what: str) -> IntervalHistogram:
    d = _dict(obj, what)
    raw = d.get("buckets", [])
    if not isinstance(raw, list):
        raise SnapshotError(f"{what}.buckets: expected a list")
    return IntervalHistogram(
        _int(d.get("count", 0), what + ".count"),
        _num(d.get("sum", 0.0), what + ".sum"),
        None,
        _quantiles(d.get("quantiles")),
        raw=raw,
    )


_BREAKER_FIELDS = tuple(f.name for f in dataclasses.fields(BreakerView))
_BREAKER_TYPES = (str, *(int,) * 8, *(bool,) * 4)


def _breaker(obj: object) -> BreakerView:
    d = _dict(obj, "breakers[]")
    values: list[Any] = list(map(d.get, _BREAKER_FIELDS))
    if tuple(map(type, values)) == _BREAKER_TYPES:
        return BreakerView(*values)
    cluster = _str(d.get("cluster"), "breakers[].cluster")

    def n(key: str) -> int:
        return _int(d.get(key, 0), f"breakers[{cluster}].{key}")

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


# -- host request deltas ---------------------------------------------------------------------

_HostTotals = dict[tuple[str, str, int], tuple[int, int, int]]


def _host_deltas(hosts: list[HostSample], previous: _HostTotals | None) -> _HostTotals:
    """Turn each host's running totals into deltas in place; return the totals for next time.

    With no previous reading (a new connection) the deltas are 0: the totals span the
    sidecar's whole life, not this interval. A total that went down is a restarted sidecar.
    """
    totals: _HostTotals = {}
    for h in hosts:
        now = (h.rq_total, h.rq_success, h.rq_error)
        totals[h.key] = now
        before = previous.get(h.key) if previous is not None else now
        if before is None:
            before = (0, 0, 0)
        if now[0] < before[0]:
            before = (0, 0, 0)
        h.rq_total = now[0] - before[0]
        h.rq_success = max(0, now[1] - before[1])
        h.rq_error = max(0, now[2] - before[2])
    return totals


# -- /stats/stream ---------------------------------------------------------------------------


class StreamReader:
    """Parses one stream's documents; owns the host totals of the previous one."""

    def __init__(self) -> None:
        self._host_totals: _HostTotals | None = None

    def reset(self) -> None:
        """A new connection: its first document's host totals are a baseline, not a delta."""
        self._host_totals = None

    def parse(self, doc: object, received: float) -> Snapshot:
        d = _dict(doc, "snapshot")
        node = _dict(d.get("node", {}), "node")
        config = _dict(d.get("config", {}), "config")
        histograms = {
            _str(name, "histograms"): _interval_histogram(
                _dict(h, f"histograms.{name}").get("interval", {}), f"histograms.{name}.interval"
            )
            for name, h in _dict(d.get("histograms", {}), "histograms").items()
        }
        hosts = [_stream_host(h) for h in _list(d.get("hosts", []), "hosts")]
        breakers = [_breaker(b) for b in _list(d.get("breakers", []), "breakers")]
        interval = _num(d.get("interval_s", 0.0), "interval_s")
        snap = Snapshot(
            node=_opt_str(node.get("id")) or "",
            received=received,
            interval_s=max(0.0, interval),
            config_version=_opt_int(config.get("version")),
            config_hash=_opt_str(config.get("hash")),
            counters=_int_map(d.get("counters", {}), "counters"),
            deltas=_int_map(d.get("counter_deltas", {}), "counter_deltas"),
            gauges=_int_map(d.get("gauges", {}), "gauges"),
            histograms=histograms,
            hosts=hosts,
            breakers=breakers,
        )
        self._host_totals = _host_deltas(snap.hosts, self._host_totals)
        return snap


def _list(obj: object, what: str) -> list[Any]:
    if not isinstance(obj, list):
        raise SnapshotError(f"{what}: expected a list")
    return obj


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
    d = _dict(obj, "hosts[]")
    values: list[Any] = list(map(d.get, _HOST_FIELDS))
    # The shape every sidecar sends, checked in one comparison; anything else the slow way.
    if tuple(map(type, values)) == _HOST_TYPES and values[5] >= 0:
        return HostSample(*values)
    return HostSample(
        cluster=_str(d.get("cluster"), "hosts[].cluster"),
        address=_str(d.get("address"), "hosts[].address"),
        port=_int(d.get("port"), "hosts[].port"),
        pod=_opt_str(d.get("pod")) or "",
        ejected=d.get("ejected") is True,
        ejected_for=max(0.0, _num(d.get("ejected_for", 0.0), "hosts[].ejected_for")),
        ejection_count=_int(d.get("ejection_count", 0), "hosts[].ejection_count"),
        rq_active=_int(d.get("rq_active", 0), "hosts[].rq_active"),
        rq_total=_int(d.get("rq_total", 0), "hosts[].rq_total"),
        rq_success=_int(d.get("rq_success", 0), "hosts[].rq_success"),
        rq_error=_int(d.get("rq_error", 0), "hosts[].rq_error"),
    )


# -- polling Envoy's /stats?format=json -------------------------------------------------------


class PollReader:
    """Builds snapshots from successive polls; the first poll is a baseline with no deltas."""

    def __init__(self) -> None:
        self._values: dict[str, int] | None = None
        self._cumulative: dict[str, HistogramSnapshot] = {}
        self._host_totals: _HostTotals | None = None
        self._last: float | None = None

    def reset(self) -> None:
        """A new connection (maybe to a restarted Envoy): start from a fresh baseline."""
        self._values = None
        self._cumulative = {}
        self._host_totals = None
        self._last = None

    def parse(
        self,
        stats: object,
        received: float,
        *,
        clusters: object = None,
        server_info: object = None,
    ) -> Snapshot:
        values, histograms = self._stats(stats)
        previous = self._values
        deltas: dict[str, int] = {}
        if previous is not None:
            for name, v in values.items():
                before = previous.get(name, 0)
                if v != before:
                    # Down means a restart (or a gauge: deltas of gauges are never read).
                    deltas[name] = v - before if v > before else v
        self._values = values
        interval = 0.0 if self._last is None else max(0.0, received - self._last)
        self._last = received
        hosts, breakers = _envoy_clusters(clusters, values) if clusters is not None else ([], [])
        self._host_totals = _host_deltas(hosts, self._host_totals)
        node, version, hash_ = _server_info(server_info)
        return Snapshot(
            node=node,
            received=received,
            interval_s=interval,
            config_version=version,
            config_hash=hash_,
            counters=values,
            deltas=deltas,
            gauges=values,
            histograms=histograms,
            hosts=hosts,
            breakers=breakers,
        )

    def _stats(self, doc: object) -> tuple[dict[str, int], dict[str, IntervalHistogram]]:
        entries = _list(_dict(doc, "stats document").get("stats", []), "stats")
        values: dict[str, int] = {}
        histograms: dict[str, IntervalHistogram] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            if "histograms" in entry:
                histograms.update(self._histograms(entry["histograms"]))
                continue
            name, value = entry.get("name"), entry.get("value")
            if isinstance(name, str) and isinstance(value, int | float):
                values[name] = int(value)
        return values, histograms

    def _histograms(self, obj: object) -> dict[str, IntervalHistogram]:
        """Detailed buckets give exact intervals (this poll's cumulative minus the last one's);
        summary form only has quantiles of Envoy's own flush interval, kept as they are."""
        out: dict[str, IntervalHistogram] = {}
        if not isinstance(obj, dict):
            return out
        for d in obj.get("details", []) or []:
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                continue
            name = d["name"]
            try:
                totals = [
                    (_num(b["lower_bound"], name), _num(b["width"], name), int(b["count"]))
                    for b in d.get("totals", [])
                ]
            except (KeyError, TypeError, ValueError):
                continue
            total_sum = d.get("sum")
            cumulative = HistogramSnapshot.from_buckets(
                totals, float(total_sum) if isinstance(total_sum, int | float) else None
            )
            before = self._cumulative.get(name)
            self._cumulative[name] = cumulative
            if before is None:
                interval = HistogramSnapshot.empty()
            else:
                try:
                    interval = cumulative - before
                except ValueError:  # a restarted Envoy: its totals started over
                    interval = cumulative
            out[name] = IntervalHistogram(interval.count, interval.sum, interval.bucket_data())
        supported = obj.get("supported_quantiles")
        for c in obj.get("computed_quantiles", []) or []:
            if not isinstance(c, dict) or not isinstance(c.get("name"), str) or c["name"] in out:
                continue
            out[c["name"]] = _summary_histogram(supported, c.get("values"))
        return out


def _summary_histogram(supported: object, values: object) -> IntervalHistogram:
    quantiles: dict[str, float | None] = {}
    if isinstance(supported, list) and isinstance(values, list):
        for q, v in zip(supported, values, strict=False):
            interval = v.get("interval") if isinstance(v, dict) else None
            if isinstance(q, int | float):
                key = f"p{int(q) if float(q).is_integer() else q}"
                quantiles[key] = float(interval) if isinstance(interval, int | float) else None
    return IntervalHistogram(0, 0.0, [], quantiles)


def _server_info(info: object) -> tuple[str, int | None, str | None]:
    if not isinstance(info, dict):
        return "", None, None
    node = info.get("node")
    node_id = _opt_str(node.get("id")) if isinstance(node, dict) else None
    # meshdev's /server_info names its serving config; Envoy's has no such field.
    config = info.get("config")
    if isinstance(config, dict):
        return node_id or "", _opt_int(config.get("version")), _opt_str(config.get("hash"))
    return node_id or "", None, None


def _stat_value(stats: object, name: str) -> int:
    if isinstance(stats, list):
        for s in stats:
            if isinstance(s, dict) and s.get("name") == name:
                try:
                    return int(s.get("value", 0))
                except (TypeError, ValueError):
                    return 0
    return 0


_THRESHOLDS = ("max_connections", "max_pending_requests", "max_requests", "max_retries")
# Envoy's defaults, for a threshold its /clusters leaves out.
_DEFAULT_LIMITS = {
    "max_connections": 1024,
    "max_pending_requests": 1024,
    "max_requests": 1024,
    "max_retries": 3,
}


def _envoy_clusters(
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
        pod=_opt_str(h.get("hostname")) or "",
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
    limits = dict(_DEFAULT_LIMITS)
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


_COMPACT_BUCKETS = 512

# -- folding -----------------------------------------------------------------------------------


def combine(older: Snapshot, newer: Snapshot) -> Snapshot:
    """One snapshot covering both intervals (`newer` must directly follow `older`)."""
    deltas = dict(older.deltas)
    for k, v in newer.deltas.items():
        deltas[k] = deltas.get(k, 0) + v
    histograms = dict(older.histograms)
    for k, h in newer.histograms.items():
        o = histograms.get(k)
        if o is None or o.count == 0:
            histograms[k] = h
        elif h.count:
            raw = o.raw_buckets + h.raw_buckets
            if len(raw) > _COMPACT_BUCKETS:
                # A consumer that stopped taking: keep one entry per bucket, not per interval.
                try:
                    raw = HistogramSnapshot.from_buckets(_buckets(raw)).bucket_data()
                except SnapshotError:
                    raw = []  # nonsense from the sidecar; its counts stay, its shape cannot
            histograms[k] = IntervalHistogram(o.count + h.count, o.sum + h.sum, None, raw=raw)
    earlier = {h.key: h for h in older.hosts}
    hosts = []
    for host in newer.hosts:
        was = earlier.get(host.key)
        hosts.append(
            host
            if was is None
            else dataclasses.replace(
                host,
                rq_total=host.rq_total + was.rq_total,
                rq_success=host.rq_success + was.rq_success,
                rq_error=host.rq_error + was.rq_error,
            )
        )
    return Snapshot(
        node=newer.node,
        received=newer.received,
        interval_s=older.interval_s + newer.interval_s,
        config_version=newer.config_version,
        config_hash=newer.config_hash,
        counters=newer.counters,
        deltas=deltas,
        gauges=newer.gauges,
        histograms=histograms,
        hosts=hosts,
        breakers=newer.breakers,
        parts=older.parts + newer.parts,
    )
