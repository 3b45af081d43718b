"""One sidecar's numbers for one interval, as aggregation reads them: a `SidecarInterval`.

It holds cumulative counters (to learn which stats exist), counter deltas over `interval_s`,
gauges, interval histograms with their buckets (so the same histogram merges across sidecars),
hosts with their request deltas, and breakers. What a sidecar sends (a stats "snapshot", in
the admin API's words) is checked before it becomes one (telemetry/io/wire_checks.py), once,
so aggregation can trust its types; `SnapshotError` is what a malformed one raises.

Two readers in telemetry/io produce them:
- `StreamReader` (stream_reader.py) turns each `data:` document of meshdev's /stats/stream
  into one;
- `PollReader` (poll_reader.py) turns Envoy's `/stats?format=json` (+ `/clusters?format=json`,
  `/server_info`) into one, computing the deltas itself from the previous poll. Envoy's JSON
  does not say which stats are counters, so every value is offered as both; aggregation only
  ever takes deltas of counter names and levels of gauge names.

`combine` folds two consecutive intervals into one, for when a sidecar sent two before the
dashboard took one: nothing is lost, and rates stay per second of real time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshdev.common.breaker_view import BreakerView
from meshdev.common.histogram import HistogramSnapshot


class SnapshotError(ValueError):
    """A document that is not a stats snapshot (wrong shape or types)."""


Bucket = tuple[float, float, int]


def check_buckets(raw: list[Any]) -> list[Bucket]:
    try:
        # `+ 0.0` / `+ 0` accept numbers only (a string or a list raises TypeError), and the
        # unpacking rejects anything but triples, in one pass without a call per value.
        return [(lo + 0.0, w + 0.0, n + 0) for lo, w, n in raw]
    except (TypeError, ValueError):
        raise SnapshotError("histogram buckets: each must be [lower, width, count]") from None


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
            self._buckets = check_buckets(self._raw)
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
    # Deltas over the interval (the views carry running totals).
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

    def plus(self, earlier: HostSample) -> HostSample:
        """This sample with an earlier interval's requests added (spelled out: `dataclasses.
        replace` costs ten times as much, and a lagging dashboard folds many)."""
        return HostSample(
            self.cluster, self.address, self.port, self.pod, self.ejected, self.ejected_for,
            self.ejection_count, self.rq_active, self.rq_total + earlier.rq_total,
            self.rq_success + earlier.rq_success, self.rq_error + earlier.rq_error,
            self.endpoint,
        )  # fmt: skip

    def idle(self) -> HostSample:
        """This sample with no requests: the host's state alone."""
        return HostSample(
            self.cluster, self.address, self.port, self.pod, self.ejected, self.ejected_for,
            self.ejection_count, self.rq_active, 0, 0, 0, self.endpoint,
        )  # fmt: skip


@dataclass(slots=True)
class SidecarInterval:
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


# -- host request deltas ---------------------------------------------------------------------

HostTotals = dict[tuple[str, str, int], tuple[int, int, int]]


def host_deltas(hosts: list[HostSample], previous: HostTotals | None) -> HostTotals:
    """Turn each host's running totals into deltas in place; return the totals for next time.

    With no previous reading (a new connection) the deltas are 0: the totals span the
    sidecar's whole life, not this interval. A total that went down is a restarted sidecar.
    """
    totals: HostTotals = {}
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


# -- folding -----------------------------------------------------------------------------------

_COMPACT_BUCKETS = 512


def combine(older: SidecarInterval, newer: SidecarInterval) -> SidecarInterval:
    """One interval covering both (`newer` must directly follow `older`)."""
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
                    raw = HistogramSnapshot.from_buckets(check_buckets(raw)).bucket_data()
                except SnapshotError:
                    raw = []  # nonsense from the sidecar; its counts stay, its shape cannot
            histograms[k] = IntervalHistogram(o.count + h.count, o.sum + h.sum, None, raw=raw)
    # Only hosts that did something in the older interval change the newer's samples: in a
    # big mesh most are idle, and a client folds many intervals when views lag.
    earlier = {h.key: h for h in older.hosts if h.rq_total or h.rq_success or h.rq_error}
    hosts = newer.hosts
    if earlier:
        hosts = []
        for host in newer.hosts:
            was = earlier.get(host.key)
            hosts.append(host if was is None else host.plus(was))
    return SidecarInterval(
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
