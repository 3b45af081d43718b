"""The sidecar's stats store: Envoy-named counters, gauges and histograms.

The request path grabs its Counter/Gauge/Histogram objects once per config (by name) and then
bumps `.value` directly, so a request costs attribute increments, not dict look-ups. Stats
outlive config swaps: the store is never reset, names are just looked up again. Readers that
want "what happened since I last looked" keep their own `IntervalReader`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from meshdev.common.histogram import Histogram, HistogramSnapshot, IntervalTracker


class _Value:
    """A named int that the request path bumps directly (`.value += 1`)."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Counter(_Value):
    __slots__ = ()


class Gauge(_Value):
    __slots__ = ()

    def dec(self, n: int = 1) -> None:
        self.value -= n

    def set(self, v: int) -> None:
        self.value = v


class Store:
    """Get-or-create by full Envoy stat name (`cluster.backend.upstream_rq_total`)."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}
        # Names this store's values belong to, unlike another's (a restarted sidecar's): a
        # stream reader that reconnects resumes its totals only on the same instance.
        self.instance = os.urandom(6).hex()

    def sizes(self) -> tuple[int, int, int]:
        """How many counters, gauges and histograms: names are never removed, so this moves
        exactly when a new one is made (what readers cache their name lists by)."""
        return len(self._counters), len(self._gauges), len(self._histograms)

    def counter(self, name: str) -> Counter:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = Counter(name)
        return c

    def gauge(self, name: str) -> Gauge:
        g = self._gauges.get(name)
        if g is None:
            g = self._gauges[name] = Gauge(name)
        return g

    def histogram(self, name: str) -> Histogram:
        h = self._histograms.get(name)
        if h is None:
            h = self._histograms[name] = Histogram(name)
        return h

    def counters(self) -> Iterator[Counter]:
        return iter(sorted(self._counters.values(), key=lambda c: c.name))

    def gauges(self) -> Iterator[Gauge]:
        return iter(sorted(self._gauges.values(), key=lambda g: g.name))

    def histograms(self) -> Iterator[Histogram]:
        return iter(sorted(self._histograms.values(), key=lambda h: h.name))


@dataclass(frozen=True, slots=True)
class HistogramReading:
    name: str
    interval: HistogramSnapshot
    cumulative: HistogramSnapshot


@dataclass(frozen=True, slots=True)
class StoreReading:
    """Everything in a Store at one moment, plus what changed since the reader's previous read."""

    counters: dict[str, int]
    # Only the counters that moved; a missing name means 0.
    counter_deltas: dict[str, int]
    gauges: dict[str, int]
    histograms: list[HistogramReading]


@dataclass(frozen=True, slots=True)
class StoreChanges:
    """What changed since the reader's previous read: values of stats that moved or are new
    (a new one at 0 too, so a reader learns every name), and the interval of every histogram
    that recorded something or is new."""

    counters: dict[str, int]
    gauges: dict[str, int]
    histograms: list[tuple[str, HistogramSnapshot]]


class IntervalReader:
    """One consumer's cursor over a Store (a /stats/stream client, the /stats flush).

    Each consumer owns one, so its intervals are its own: two dashboards streaming from the
    same sidecar each see every request once, whatever their pace. The stats its filter keeps
    are found once per set of names (`Store.sizes`), not matched and sorted at every read.
    """

    def __init__(
        self, store: Store, name_filter: re.Pattern[str] | None = None, *, from_now: bool = False
    ) -> None:
        """`from_now`: the first interval starts now, not at the store's creation."""
        self._store = store
        self._filter = name_filter
        self._histograms = IntervalTracker()
        self._counters: dict[str, int] = {}
        self._gauges: dict[str, int] = {}
        self._sizes = (-1, -1, -1)
        self._kept: tuple[list[Counter], list[Gauge], list[Histogram]] = ([], [], [])
        if from_now:
            self.read()

    def _stats(self) -> tuple[list[Counter], list[Gauge], list[Histogram]]:
        sizes = self._store.sizes()
        if sizes != self._sizes:
            keep = self._filter.search if self._filter is not None else None
            store = self._store
            self._kept = (
                [c for c in store.counters() if keep is None or keep(c.name) is not None],
                [g for g in store.gauges() if keep is None or keep(g.name) is not None],
                [h for h in store.histograms() if keep is None or keep(h.name) is not None],
            )
            self._sizes = sizes
        return self._kept

    def read(self) -> StoreReading:
        counter_list, gauge_list, histogram_list = self._stats()
        counters: dict[str, int] = {}
        deltas: dict[str, int] = {}
        previous = self._counters
        for c in counter_list:
            counters[c.name] = c.value
            delta = c.value - previous.get(c.name, 0)
            if delta:
                deltas[c.name] = delta
        self._counters = counters
        gauges = {g.name: g.value for g in gauge_list}
        self._gauges = gauges
        histograms = []
        for h in histogram_list:
            interval, cumulative = self._histograms.advance(h)
            histograms.append(HistogramReading(h.name, interval, cumulative))
        return StoreReading(counters, deltas, gauges, histograms)

    def changes(self) -> StoreChanges:
        """Only what moved or is new since the previous read (`read` or `changes`)."""
        counter_list, gauge_list, histogram_list = self._stats()
        counters: dict[str, int] = {}
        previous = self._counters
        for c in counter_list:
            v = c.value
            if previous.get(c.name) != v:
                previous[c.name] = counters[c.name] = v
        gauges: dict[str, int] = {}
        before = self._gauges
        for g in gauge_list:
            v = g.value
            if before.get(g.name) != v:
                before[g.name] = gauges[g.name] = v
        histograms = []
        tracker = self._histograms
        for h in histogram_list:
            if tracker.moved(h):
                histograms.append((h.name, tracker.advance(h)[0]))
        return StoreChanges(counters, gauges, histograms)
