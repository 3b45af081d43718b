"""A sidecar's stats without a proxy: record requests, get real /stats/stream documents.

Requests are counted under the stat names the data plane uses (Envoy's) in a real sidecar
`Store`, and snapshots come from the sidecar's own `StreamCursor`, so what tests, the
benchmark and `FakeSource` demos feed the aggregation has exactly the stream's shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from meshdev.common.breaker_view import BreakerView
from meshdev.common.sidecar_config import SidecarConfig, parse_config
from meshdev.sidecar.admin.views import HostView
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.stats.stream import ConfigIdentity, StreamCursor

# Flags answered by the sidecar itself, before any upstream try.
_NO_TRY = frozenset({"UO", "UH", "FI", "RL"})
# Counters the data plane creates with each route and cluster (sidecar/stats/sets.py), at zero.
_ROUTE_STATS = ("upstream_rq_total", "upstream_rq_timeout", "upstream_rq_retry")
_CLUSTER_STATS = (
    "upstream_rq_total",
    "upstream_rq_timeout",
    "upstream_rq_retry",
    "upstream_rq_retry_limit_exceeded",
    "upstream_cx_none_healthy",
    "upstream_cx_overflow",
    "upstream_cx_connect_fail",
    "upstream_rq_pending_overflow",
    "upstream_rq_retry_overflow",
)


def sidecar_config(
    node: str,
    routes: Mapping[str, Mapping[str, Mapping[str, int]]],
    endpoints: Mapping[str, Sequence[tuple[str, int, str]]] | None = None,
    *,
    version: int = 1,
    faults: Iterable[tuple[str, str]] = (),
    rate_limited: Iterable[tuple[str, str]] = (),
) -> SidecarConfig:
    """An outbound sidecar: `routes[vhost][route] = {cluster: weight}`, `endpoints[cluster] =
    [(address, port, pod)]`; `faults` / `rate_limited` name (vhost, route) pairs."""
    faulty, limited = set(faults), set(rate_limited)
    endpoints = endpoints or {}
    names = {c for rs in routes.values() for targets in rs.values() for c in targets}
    names |= set(endpoints)
    doc: dict[str, Any] = {
        "version": version,
        "mesh": "synthetic",
        "node": node,
        "listeners": [
            {"name": "outbound", "kind": "outbound", "address": "127.0.0.1", "port": 15001}
        ],
        "virtual_hosts": [
            {
                "name": vhost,
                "domains": [vhost],
                "routes": [
                    {
                        "name": route,
                        "match": {"prefix": f"/{route}"},
                        "clusters": [{"cluster": c, "weight": w} for c, w in targets.items()],
                        **(
                            {"fault": {"abort": {"status": 503, "percent": 5}}}
                            if (vhost, route) in faulty
                            else {}
                        ),
                        **(
                            {"rate_limit": {"requests_per_second": 10, "burst": 10}}
                            if (vhost, route) in limited
                            else {}
                        ),
                    }
                    for route, targets in rs.items()
                ],
            }
            for vhost, rs in routes.items()
        ],
        "clusters": [
            {
                "name": c,
                "endpoints": [
                    {"address": a, "port": p, "pod": pod} for a, p, pod in endpoints.get(c, ())
                ],
            }
            for c in sorted(names)
        ],
    }
    return parse_config(doc)


class SyntheticSidecar:
    """A `ControlSurface` over a real Store, with one stream cursor of its own."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        listener: str = "outbound",
        name_filter: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = Store()
        self.listener = listener
        self.host_views: list[HostView] = []
        self.breaker_views: list[BreakerView] = []
        self._runtime: dict[str, str] = {}
        # `name_filter`: the stream's `?filter=`, e.g. what the dashboard's client asks for.
        self._cursor = StreamCursor(
            self,
            ConfigIdentity(),
            re.compile(name_filter) if name_filter is not None else None,
            wall_clock=wall_clock,
            monotonic=clock,
        )

    # -- ControlSurface -------------------------------------------------------------------

    @property
    def config(self) -> SidecarConfig:
        return self._config

    @property
    def stats(self) -> Store:
        return self._store

    def apply(self, config: SidecarConfig) -> None:
        self._config = config

    def hosts(self) -> list[HostView]:
        return list(self.host_views)

    def breakers(self) -> list[BreakerView]:
        return list(self.breaker_views)

    def runtime(self) -> dict[str, str]:
        return dict(self._runtime)

    def set_runtime(self, values: dict[str, str]) -> None:
        self._runtime.update(values)

    # -- traffic ---------------------------------------------------------------------------

    def request(
        self,
        vhost: str,
        route: str,
        cluster: str,
        status: int,
        latency_ms: float,
        *,
        flags: Iterable[str] = (),
        retries: int = 0,
        count: int = 1,
    ) -> None:
        """Count `count` requests of a route, answered `status` after `latency_ms`, the way
        the data plane counts them (sidecar/proxy/): every request on the route's downstream side,
        upstream tries on the route's and cluster's upstream side, local answers where the
        data plane counts them, and each flag on its counter."""
        s = self._store
        flags = frozenset(flags)
        rp, cp = f"vhost.{vhost}.route.{route}.", f"cluster.{cluster}."
        for stat in _ROUTE_STATS:
            s.counter(rp + stat)
        for stat in _CLUSTER_STATS:
            s.counter(cp + stat)
        self._status(rp + "downstream_rq", status, count)
        s.counter(rp + "downstream_rq_total").inc(count)
        if "RL" in flags:
            s.counter("http_local_rate_limit.rate_limited").inc(count)
        if "DI" in flags:
            s.counter(f"http.{self.listener}.fault.delays_injected").inc(count)
        if "FI" in flags:
            s.counter(f"http.{self.listener}.fault.aborts_injected").inc(count)
        if "UH" in flags:
            s.counter(cp + "upstream_cx_none_healthy").inc(count)
        if "UO" in flags:
            s.counter(cp + "upstream_rq_pending_overflow").inc(count)
            self._status(cp + "upstream_rq", 503, count)
        if flags & _NO_TRY:
            return
        tries = (1 + retries) * count
        for p in (rp, cp):
            s.counter(p + "upstream_rq_total").inc(tries)
            if retries:
                s.counter(p + "upstream_rq_retry").inc(retries * count)
        if "URX" in flags:
            s.counter(cp + "upstream_rq_retry_limit_exceeded").inc(count)
        if "UT" in flags:
            s.counter(rp + "upstream_rq_timeout").inc(count)
            s.counter(cp + "upstream_rq_timeout").inc(count)
            self._status(cp + "upstream_rq", 504, count)
            return
        if "UF" in flags:
            s.counter(cp + "upstream_cx_connect_fail").inc(count)
            self._status(cp + "upstream_rq", 503, count)
            return
        for p in (rp, cp):
            self._status(p + "upstream_rq", status, count)
            h = s.histogram(p + "upstream_rq_time")
            for _ in range(count):
                h.record(latency_ms)

    def _status(self, prefix: str, status: int, count: int) -> None:
        for klass in range(1, 6):
            self._store.counter(f"{prefix}_{klass}xx")
        self._store.counter(f"{prefix}_{status // 100}xx").inc(count)
        self._store.counter(f"{prefix}_{status}").inc(count)

    def inbound(self, status: int, count: int = 1) -> None:
        """Requests the sidecar's own app got (its inbound listener's route)."""
        self._status("vhost.inbound.route.inbound.downstream_rq", status, count)
        self._store.counter("vhost.inbound.route.inbound.downstream_rq_total").inc(count)

    def upgrades(self, vhost: str, route: str, *, opened: int, closed: int = 0) -> None:
        """Upgrade requests of a route (`opened`) and upgraded streams that ended (`closed`),
        counted as the data plane counts them: per route and on the listener."""
        for p in (f"vhost.{vhost}.route.{route}.", f"http.{self.listener}."):
            self._store.counter(p + "downstream_cx_upgrades_total").inc(opened)
            self._store.gauge(p + "downstream_cx_upgrades_active").inc(opened - closed)

    def no_route(self, count: int = 1) -> None:
        self._store.counter(f"http.{self.listener}.no_route").inc(count)

    def snapshot(self) -> dict[str, object]:
        """The next /stats/stream document (covering the time since the previous one)."""
        return self._cursor.next_snapshot()
