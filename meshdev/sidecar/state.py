"""The live data plane: the compiled config that requests run on, and what outlives it.

`DataPlane.apply` compiles a config into a `Compiled` (route tables, balancers, per-route
policies, pre-fetched stat objects) and swaps it in by replacing one reference. A request
reads `plane.current` once and finishes on what it read, so it sees the old config or the new,
never a mix.

What must survive a swap is kept outside `Compiled`, by name: per cluster a `ClusterState`
(connection budget, circuit breaker, outlier detector, stats), and within it per endpoint
(address, port) a `Host` with its connection pool and outlier state. Pools of unchanged
endpoints therefore keep their connections; a removed endpoint's pool stops taking requests
and closes its connections once they are idle. The Store is never reset, so every counter
continues across swaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshdev.sidecar.accesslog import AccessLog
from meshdev.sidecar.balancer import Balancer, HealthEpoch, make_balancer
from meshdev.sidecar.breaker import Breaker
from meshdev.sidecar.deadline import Deadlines
from meshdev.sidecar.fault import FaultSpec, check_runtime_entry, effective_fault
from meshdev.sidecar.outlier import HostHealth, OutlierDetector
from meshdev.sidecar.ratelimit import TokenBucket
from meshdev.sidecar.retry import RetryRules
from meshdev.sidecar.router import HostIndex, Matcher, RouteTable, WeightedPick
from meshdev.sidecar.schema import (
    Cluster,
    Listener,
    RateLimit,
    Route,
    SidecarConfig,
    VirtualHost,
    WeightedCluster,
)
from meshdev.sidecar.stats import Store
from meshdev.sidecar.statsets import ClusterStats, ListenerStats, RouteStats
from meshdev.sidecar.upstream import ConnectionBudget, UpstreamPool
from meshdev.sidecar.views import BreakerView, HostView

log = logging.getLogger(__name__)

# How often connection counts kept by the pools are copied into the Store.
STATS_SYNC_INTERVAL = 0.1


class Host(HostHealth):
    """One endpoint of a cluster: its pool, its outlier state, its request counts."""

    __slots__ = (
        "_seen_connect_fail",
        "_seen_cx_total",
        "address",
        "cluster",
        "key",
        "pod",
        "pool",
        "port",
        "removed",
        "rq_active",
        "rq_error",
        "rq_success",
        "rq_total",
    )

    def __init__(self, cluster: str, address: str, port: int, pod: str, pool: UpstreamPool) -> None:
        super().__init__()
        self.cluster = cluster
        self.address = address
        self.port = port
        self.pod = pod
        self.key = f"{address}:{port}"
        self.pool = pool
        self.rq_active = 0
        self.rq_total = 0
        self.rq_success = 0
        self.rq_error = 0
        self.removed = False
        self._seen_cx_total = 0
        self._seen_connect_fail = 0


class ClusterState:
    """Everything about one cluster that outlives config swaps."""

    def __init__(self, plane: DataPlane, config: Cluster) -> None:
        self.name = config.name
        self.config = config
        self._plane = plane
        store = plane.stats_store
        self.stats = ClusterStats(store, self.name)
        cb = config.circuit_breaker
        self.breaker = Breaker(store, self.name, cb)
        self.budget = ConnectionBudget(cb.max_connections, cb.max_pending_requests)
        self.epoch = HealthEpoch()
        self.detector: OutlierDetector | None = None
        self.hosts: dict[tuple[str, int], Host] = {}
        self.retired: list[Host] = []
        self.active = True
        self._ticker: asyncio.Task[None] | None = None
        self._seen_cx_overflow = 0
        self._seen_pending_total = 0

    def update(self, config: Cluster) -> list[Host]:
        """Adopt a new config of this cluster; answers its hosts in config order."""
        self.config = config
        self.active = True
        cb = config.circuit_breaker
        self.breaker.update(cb)
        self.budget.update(cb.max_connections, cb.max_pending_requests)
        wanted: list[Host] = []
        keep: dict[tuple[str, int], Host] = {}
        for ep in config.endpoints:
            key = (ep.address, ep.port)
            if key in keep:
                continue
            host = self.hosts.get(key)
            if host is None:
                host = Host(
                    self.name,
                    ep.address,
                    ep.port,
                    ep.pod,
                    UpstreamPool(ep.address, ep.port, self.budget),
                )
            host.pod = ep.pod
            keep[key] = host
            wanted.append(host)
        for key, host in self.hosts.items():
            if key not in keep:
                self._retire(host)
        self.hosts = keep
        od = config.outlier_detection
        if od is None:
            if self.detector is not None:
                for h in wanted:
                    h.ejected = False
                self.detector.set_hosts([])
                self.detector = None
        elif self.detector is None:
            self.detector = OutlierDetector(od, self._plane.stats_store, self.name, self._changed)
        else:
            self.detector.update(od)
        if self.detector is not None:
            self.detector.set_hosts(wanted)
        self.epoch.bump()
        self._membership()
        self._restart_ticker()
        return wanted

    def deactivate(self) -> None:
        """The cluster left the config: its hosts retire, its stats stay."""
        self.active = False
        for host in self.hosts.values():
            self._retire(host)
        self.hosts = {}
        if self.detector is not None:
            self.detector.set_hosts([])
        self.stats.membership_total.value = 0
        self.stats.membership_healthy.value = 0
        self._stop_ticker()

    def _retire(self, host: Host) -> None:
        host.removed = True
        if host.ejected:
            host.ejected = False
        self.retired.append(host)
        self._plane.spawn(host.pool.close())

    def _changed(self) -> None:
        self.epoch.bump()
        self._membership()

    def _membership(self) -> None:
        hosts = self.hosts.values()
        self.stats.membership_total.value = len(hosts)
        self.stats.membership_healthy.value = sum(1 for h in hosts if not h.ejected)

    def _restart_ticker(self) -> None:
        """Keep one ticker while the cluster has a detector; a swap does not reset its phase
        (configs may be swapped more often than the interval)."""
        if self.detector is None or not self._plane.running:
            self._stop_ticker()
        elif self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                self._tick_loop(), name=f"meshdev-outlier-{self.name}"
            )

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick_loop(self) -> None:
        while self.detector is not None:
            await asyncio.sleep(self.detector.config.interval)
            if self.detector is not None:
                self.detector.tick()

    def sync_stats(self) -> None:
        """Copy the pools' and budget's plain counts into the Store (counters by delta, so
        they never go back when a pool goes away)."""
        s = self.stats
        budget = self.budget
        s.upstream_cx_active.value = budget.cx_active
        s.upstream_rq_pending_active.value = budget.rq_pending_active
        s.cx_open.value = 1 if budget.cx_open else 0
        s.rq_pending_open.value = 1 if budget.rq_pending_open else 0
        s.upstream_cx_overflow.value += budget.cx_overflow - self._seen_cx_overflow
        self._seen_cx_overflow = budget.cx_overflow
        s.upstream_rq_pending_total.value += budget.rq_pending_total - self._seen_pending_total
        self._seen_pending_total = budget.rq_pending_total
        for host in self._all_hosts():
            pool = host.pool
            s.upstream_cx_total.value += pool.cx_total - host._seen_cx_total
            host._seen_cx_total = pool.cx_total
            s.upstream_cx_connect_fail.value += pool.cx_connect_fail - host._seen_connect_fail
            host._seen_connect_fail = pool.cx_connect_fail
        # Retired hosts are dropped once their pool has nothing left open.
        self.retired = [h for h in self.retired if h.pool.cx_active or h.rq_active]

    def _all_hosts(self) -> Iterable[Host]:
        yield from self.hosts.values()
        yield from self.retired

    async def aclose(self) -> None:
        self._stop_ticker()
        for host in list(self._all_hosts()):
            await host.pool.close()


class ClusterSnapshot:
    """One config's view of a cluster: its hosts and balancer, over the shared state."""

    __slots__ = (
        "balancer",
        "breaker",
        "connect_timeout",
        "detector",
        "hash_header",
        "hosts",
        "name",
        "state",
        "stats",
    )

    def __init__(self, state: ClusterState, hosts: list[Host]) -> None:
        cfg = state.config
        self.name = state.name
        self.state = state
        self.stats = state.stats
        self.breaker = state.breaker
        self.detector = state.detector
        self.hosts = tuple(hosts)
        self.balancer: Balancer[Host] = make_balancer(cfg.lb, hosts, state.epoch)
        self.hash_header = cfg.hash_header.lower() if cfg.hash_header else None
        self.connect_timeout = cfg.connect_timeout


class RouteEntry:
    """A compiled route: where it goes and the policies on the way."""

    __slots__ = (
        "bucket",
        "clusters",
        "fault",
        "fault_config",
        "name",
        "retry",
        "stats",
        "timeout",
        "vhost",
    )

    def __init__(
        self,
        vhost: str,
        route: Route,
        clusters: WeightedPick[ClusterSnapshot],
        stats: RouteStats,
        bucket: TokenBucket | None,
        fault: FaultSpec | None,
    ) -> None:
        self.vhost = vhost
        self.name = route.name
        self.clusters = clusters
        self.timeout = route.timeout
        self.retry = RetryRules(route.retries) if route.retries is not None else None
        self.bucket = bucket
        self.fault_config = route.fault
        # Replaced in place when runtime overrides change (no reload needed).
        self.fault = fault
        self.stats = stats


class VHostEntry:
    __slots__ = ("name", "routes")

    def __init__(self, name: str, routes: RouteTable[RouteEntry]) -> None:
        self.name = name
        self.routes = routes


class ListenerEntry:
    __slots__ = ("inbound", "ingress", "kind", "name", "stats")

    def __init__(
        self,
        listener: Listener,
        stats: ListenerStats,
        inbound: RouteEntry | None,
        ingress: RouteTable[VHostEntry] | None,
    ) -> None:
        self.name = listener.name
        self.kind = listener.kind
        self.stats = stats
        self.inbound = inbound
        self.ingress = ingress


@dataclass(frozen=True, slots=True)
class Compiled:
    config: SidecarConfig
    listeners: dict[str, ListenerEntry]
    vhosts: HostIndex[VHostEntry]
    routes: tuple[RouteEntry, ...]
    clusters: dict[str, ClusterSnapshot]


class DataPlane:
    """The proxy's live state; implements `views.ControlSurface` for the admin API."""

    def __init__(self, config: SidecarConfig, store: Store | None = None) -> None:
        self.stats_store = store or Store()
        self.running = False
        self._clusters: dict[str, ClusterState] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._runtime: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self.access_log = AccessLog(config.access_log, self.stats_store)
        self.deadlines = Deadlines()
        self._config_version = self.stats_store.gauge("config.version")
        self.before_swap: Callable[[SidecarConfig, SidecarConfig], None] | None = None
        self.after_swap: Callable[[SidecarConfig, SidecarConfig], None] | None = None
        self.current: Compiled = self._compile(config)
        self._config_version.value = config.version

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.running = True
        for state in self._clusters.values():
            if state.active:
                state._restart_ticker()
        self._sync_task = asyncio.get_running_loop().create_task(
            self._sync_loop(), name="meshdev-stats-sync"
        )

    async def aclose(self) -> None:
        self.running = False
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        for state in self._clusters.values():
            await state.aclose()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.access_log.aclose()

    def spawn(self, coro: object) -> None:
        """Run a small housekeeping coroutine (pool closes) without awaiting it here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()  # type: ignore[attr-defined]
            return
        task: asyncio.Task[None] = loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_SYNC_INTERVAL)
            self.sync_stats()

    def sync_stats(self) -> None:
        for state in self._clusters.values():
            state.sync_stats()

    # -- ControlSurface ---------------------------------------------------------------------

    @property
    def config(self) -> SidecarConfig:
        return self.current.config

    @property
    def stats(self) -> Store:
        self.sync_stats()
        return self.stats_store

    def apply(self, config: SidecarConfig) -> None:
        old = self.current.config
        if self.before_swap is not None:
            # May refuse (a listener port it cannot bind): nothing has changed yet.
            self.before_swap(old, config)
        self.current = self._compile(config)
        self._config_version.value = config.version
        self.access_log.set_target(config.access_log)
        if self.after_swap is not None:
            self.after_swap(old, config)

    def hosts(self) -> list[HostView]:
        self.sync_stats()
        views: list[HostView] = []
        for snap in self.current.clusters.values():
            detector = snap.detector
            for h in snap.hosts:
                views.append(
                    HostView(
                        cluster=snap.name,
                        address=h.address,
                        port=h.port,
                        pod=h.pod,
                        ejected=h.ejected,
                        ejected_for=detector.remaining(h) if detector is not None else 0.0,
                        ejection_count=h.ejection_count,
                        consecutive_5xx=h.consecutive_5xx,
                        rq_active=h.rq_active,
                        cx_active=h.pool.cx_active,
                        rq_total=h.rq_total,
                        rq_error=h.rq_error,
                        rq_success=h.rq_success,
                    )
                )
        return views

    def breakers(self) -> list[BreakerView]:
        views: list[BreakerView] = []
        for snap in self.current.clusters.values():
            budget = snap.state.budget
            br = snap.breaker
            views.append(
                BreakerView(
                    cluster=snap.name,
                    max_connections=budget.max_connections,
                    max_pending_requests=budget.max_pending_requests,
                    max_requests=br.max_requests,
                    max_retries=br.max_retries,
                    cx_active=budget.cx_active,
                    rq_pending_active=budget.rq_pending_active,
                    rq_active=br.rq_active.value,
                    rq_retry_active=br.retry_active.value,
                    cx_open=budget.cx_open,
                    rq_pending_open=budget.rq_pending_open,
                    rq_open=br.rq_active.value >= br.max_requests,
                    rq_retry_open=br.retry_active.value >= br.max_retries,
                )
            )
        return views

    def runtime(self) -> dict[str, str]:
        return dict(self._runtime)

    def set_runtime(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            check_runtime_entry(key, value)
        for key, value in values.items():
            if value == "":
                self._runtime.pop(key, None)
            else:
                self._runtime[key] = value
        for entry in self.current.routes:
            entry.fault = effective_fault(
                entry.fault_config, entry.vhost, entry.name, self._runtime
            )

    # -- compiling --------------------------------------------------------------------------

    def _compile(self, config: SidecarConfig) -> Compiled:
        store = self.stats_store
        snapshots: dict[str, ClusterSnapshot] = {}
        for c in config.clusters:
            state = self._clusters.get(c.name)
            if state is None:
                state = self._clusters[c.name] = ClusterState(self, c)
            snapshots[c.name] = ClusterSnapshot(state, state.update(c))
        for name, state in self._clusters.items():
            if name not in snapshots and state.active:
                state.deactivate()

        routes: list[RouteEntry] = []
        buckets: dict[tuple[str, str], TokenBucket] = {}
        vhost_entries: dict[str, VHostEntry] = {}
        for v in config.virtual_hosts:
            table: list[tuple[Matcher, RouteEntry]] = []
            for r in v.routes:
                entry = self._route(v, r, snapshots, buckets)
                routes.append(entry)
                table.append((Matcher(r.match), entry))
            vhost_entries[v.name] = VHostEntry(v.name, RouteTable(table))
        self._buckets = buckets

        listeners: dict[str, ListenerEntry] = {}
        for lst in config.listeners:
            inbound: RouteEntry | None = None
            ingress: RouteTable[VHostEntry] | None = None
            if lst.kind == "inbound":
                assert lst.cluster is not None
                inbound = self._inbound_route(lst, snapshots[lst.cluster])
            elif lst.kind == "ingress":
                ingress = RouteTable(
                    [(Matcher(ir.match), vhost_entries[ir.virtual_host]) for ir in lst.routes]
                )
            listeners[lst.name] = ListenerEntry(
                lst, ListenerStats(store, lst.name), inbound, ingress
            )

        index = HostIndex([(v.domains, vhost_entries[v.name]) for v in config.virtual_hosts])
        return Compiled(config, listeners, index, tuple(routes), snapshots)

    def _route(
        self,
        v: VirtualHost,
        r: Route,
        snapshots: dict[str, ClusterSnapshot],
        buckets: dict[tuple[str, str], TokenBucket],
    ) -> RouteEntry:
        pick = WeightedPick([(snapshots[wc.cluster], wc.weight) for wc in r.clusters])
        bucket = None
        if r.rate_limit is not None:
            bucket = self._bucket(v.name, r.name, r.rate_limit)
            buckets[(v.name, r.name)] = bucket
        fault = effective_fault(r.fault, v.name, r.name, self._runtime)
        return RouteEntry(
            v.name, r, pick, RouteStats(self.stats_store, v.name, r.name), bucket, fault
        )

    def _bucket(self, vhost: str, route: str, limits: RateLimit) -> TokenBucket:
        # An unchanged limit keeps its bucket (and its tokens) across swaps.
        old = self._buckets.get((vhost, route))
        if old is not None and old.limits == limits:
            return old
        return TokenBucket(limits)

    def _inbound_route(self, lst: Listener, snap: ClusterSnapshot) -> RouteEntry:
        # Istio's inbound route: everything to the local app, no timeout, no retries.
        route = Route(
            name=lst.name,
            clusters=(WeightedCluster(cluster=snap.name, weight=1),),
            timeout=0,
        )
        return RouteEntry(
            "inbound",
            route,
            WeightedPick([(snap, 1)]),
            RouteStats(self.stats_store, "inbound", lst.name),
            None,
            None,
        )
