"""The JSON snapshots of /stats/stream: what the dashboard draws, one per interval.

Each stream client owns a cursor, so its intervals (histogram buckets and counter deltas
since its previous snapshot) are its own. The first snapshot comes at once and covers nothing
(its interval starts when the client connected); each later one covers the time since the one
before.

Two versions, chosen by the client (`?v=`):

- 1 (`StreamCursor`, the default): every document is whole: every stat the filter keeps,
  with counter deltas, every histogram's interval and cumulative quantiles, every host and
  breaker. A document's size grows with the routes and clusters of the config, whatever moved.
- 2 (`DeltaCursor`): `"v": 2`; the first document is whole (`"full": true`), each later one
  holds only what changed since the one before: counters and gauges that moved or are new
  (their current values: the reader keeps the totals and takes the differences), histograms
  that recorded something or are new (their interval only), hosts and breakers whose state
  changed, and the keys of those gone (`hosts_gone`, `breakers_gone`). `seq` counts from 0 on
  each connection, so a reader can tell it missed one; the cure is a new connection, whose
  first document is whole again. `instance` names the stats store (one per sidecar process):
  a reader that reconnects to the same instance may take the differences of the new whole
  document against the totals it kept, and so lose nothing of the time it was away.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable

from meshdev.common.breaker_view import BreakerView
from meshdev.common.histogram import SUMMARY_QUANTILES, HistogramSnapshot
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.admin.views import ControlSurface, HostView
from meshdev.sidecar.stats.formats import json_number, percent
from meshdev.sidecar.stats.store import IntervalReader, StoreChanges

_HOST_FIELDS = tuple(f.name for f in dataclasses.fields(HostView))
_BREAKER_FIELDS = tuple(f.name for f in dataclasses.fields(BreakerView))
QUANTILE_KEYS = tuple(f"p{percent(q)}" for q in SUMMARY_QUANTILES)


class ConfigIdentity:
    """`{"version", "hash"}` of the serving config; the hash is computed once per config.

    Two are remembered, since a push's answer names the new config and the one it replaced:
    with one, each push hashed the whole config four times."""

    def __init__(self) -> None:
        self._hashes: list[tuple[SidecarConfig, str]] = []

    def hash(self, config: SidecarConfig) -> str:
        for known, digest in self._hashes:
            if known is config:
                return digest
        digest = config.content_hash()
        self._hashes = [(config, digest), *self._hashes[:1]]
        return digest

    def describe(self, config: SidecarConfig) -> dict[str, object]:
        return {"version": config.version, "hash": self.hash(config)}


def node_info(config: SidecarConfig) -> dict[str, object]:
    return {
        "id": config.node,
        "mesh": config.mesh,
        "service": config.service,
        "subset": config.subset,
    }


def _quantiles(snapshot: HistogramSnapshot) -> dict[str, float | None]:
    return {
        key: json_number(snapshot.quantile(q))
        for key, q in zip(QUANTILE_KEYS, SUMMARY_QUANTILES, strict=True)
    }


def histogram_json(
    interval: HistogramSnapshot, cumulative: HistogramSnapshot
) -> dict[str, dict[str, object]]:
    """Interval with its buckets (to merge across sidecars), cumulative with quantiles only."""
    return {
        "interval": {
            "count": interval.count,
            "sum": interval.sum,
            "quantiles": _quantiles(interval),
            "buckets": [list(b) for b in interval.bucket_data()],
        },
        "cumulative": {
            "count": cumulative.count,
            "sum": cumulative.sum,
            "quantiles": _quantiles(cumulative),
        },
    }


def host_json(host: HostView) -> dict[str, object]:
    return {name: getattr(host, name) for name in _HOST_FIELDS}


def breaker_json(breaker: BreakerView) -> dict[str, object]:
    return {name: getattr(breaker, name) for name in _BREAKER_FIELDS}


class StreamCursor:
    """One stream client's position: produces its next snapshot."""

    def __init__(
        self,
        surface: ControlSurface,
        identity: ConfigIdentity,
        name_filter: re.Pattern[str] | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._surface = surface
        self._identity = identity
        self._reader = IntervalReader(surface.stats, name_filter, from_now=True)
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._seq = 0
        self._last = monotonic()

    def next_snapshot(self) -> dict[str, object]:
        now = self._monotonic()
        reading = self._reader.read()
        config = self._surface.config
        snapshot: dict[str, object] = {
            "seq": self._seq,
            "timestamp": self._wall_clock(),
            "interval_s": round(now - self._last, 6),
            "node": node_info(config),
            "config": self._identity.describe(config),
            "counters": reading.counters,
            "counter_deltas": reading.counter_deltas,
            "gauges": reading.gauges,
            "histograms": {
                h.name: histogram_json(h.interval, h.cumulative) for h in reading.histograms
            },
            "hosts": [host_json(h) for h in self._surface.hosts()],
            "breakers": [breaker_json(b) for b in self._surface.breakers()],
        }
        self._seq += 1
        self._last = now
        return snapshot


def interval_json(interval: HistogramSnapshot) -> dict[str, object]:
    """A histogram's interval as a v2 document carries it (v1's `interval`)."""
    if not interval.count:
        return {"count": 0, "sum": 0.0}
    return {
        "count": interval.count,
        "sum": interval.sum,
        "quantiles": _quantiles(interval),
        "buckets": [list(b) for b in interval.bucket_data()],
    }


HostKey = tuple[str, str, int]


class DeltaCursor(StreamCursor):
    """One v2 stream client's position: a whole first document, then only the changes."""

    def __init__(
        self,
        surface: ControlSurface,
        identity: ConfigIdentity,
        name_filter: re.Pattern[str] | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(surface, identity, name_filter, wall_clock=wall_clock, monotonic=monotonic)
        # What this client was last sent, so the next document carries only what differs.
        self._hosts: dict[HostKey, HostView] = {}
        self._breakers: dict[str, BreakerView] = {}

    def next_snapshot(self) -> dict[str, object]:
        now = self._monotonic()
        full = self._seq == 0
        config = self._surface.config
        doc: dict[str, object] = {
            "v": 2,
            "seq": self._seq,
            "full": full,
            "instance": self._surface.stats.instance,
            "timestamp": self._wall_clock(),
            "interval_s": round(now - self._last, 6),
            "node": node_info(config),
            "config": self._identity.describe(config),
        }
        if full:
            reading = self._reader.read()
            doc["counters"] = reading.counters
            doc["gauges"] = reading.gauges
            doc["histograms"] = {h.name: interval_json(h.interval) for h in reading.histograms}
        else:
            changes: StoreChanges = self._reader.changes()
            doc["counters"] = changes.counters
            doc["gauges"] = changes.gauges
            doc["histograms"] = {name: interval_json(h) for name, h in changes.histograms}
        self._diff_hosts(doc, full)
        self._diff_breakers(doc, full)
        self._seq += 1
        self._last = now
        return doc

    def _diff_hosts(self, doc: dict[str, object], full: bool) -> None:
        before = self._hosts
        now: dict[HostKey, HostView] = {}
        changed = []
        for h in self._surface.hosts():
            key = (h.cluster, h.address, h.port)
            now[key] = h
            if full or before.get(key) != h:
                changed.append(host_json(h))
        doc["hosts"] = changed
        if not full:
            doc["hosts_gone"] = [list(key) for key in before if key not in now]
        self._hosts = now

    def _diff_breakers(self, doc: dict[str, object], full: bool) -> None:
        before = self._breakers
        now: dict[str, BreakerView] = {}
        changed = []
        for b in self._surface.breakers():
            now[b.cluster] = b
            if full or before.get(b.cluster) != b:
                changed.append(breaker_json(b))
        doc["breakers"] = changed
        if not full:
            doc["breakers_gone"] = [c for c in before if c not in now]
        self._breakers = now
