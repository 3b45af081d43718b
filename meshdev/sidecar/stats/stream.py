"""The JSON snapshots of /stats/stream: what the dashboard draws, one per interval.

Each stream client owns a `StreamCursor`, so its intervals (histogram buckets and counter
deltas since its previous snapshot) are its own. The first snapshot comes at once and covers
nothing (its interval starts when the client connected); each later one covers the time since
the one before.
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
from meshdev.sidecar.stats.store import IntervalReader

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
