"""Everything about one cluster that outlives config swaps.

Per cluster a `ClusterState` keeps the connection budget, circuit breaker, outlier detector and
stats, and per endpoint (address, port) a `Host` with its connection pool and outlier state.
Pools of unchanged endpoints therefore keep their connections; a removed endpoint's pool stops
taking requests and closes its connections once they are idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from meshdev.common.sidecar_config import Cluster, UpstreamTls
from meshdev.sidecar.http2.client import H2Pool
from meshdev.sidecar.stats.sets import ClusterStatSet, TcpClusterStatSet
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.tls.identity import WorkloadIdentity
from meshdev.sidecar.tls.material import Alpn
from meshdev.sidecar.tls.stats import ClusterTlsStats
from meshdev.sidecar.tls.upstream import TlsOrigin
from meshdev.sidecar.upstream import ConnectionBudget, UpstreamPool
from meshdev.sidecar.upstream.balancer import HealthEpoch
from meshdev.sidecar.upstream.breaker import Breaker
from meshdev.sidecar.upstream.host import Host
from meshdev.sidecar.upstream.outlier import OutlierDetector


class ClusterOwner(Protocol):
    """What a cluster state needs of the data plane that owns it. Declared here, not imported,
    because the data plane sits above its clusters and compiles them into its configs."""

    @property
    def stats_store(self) -> Store: ...

    @property
    def tls(self) -> WorkloadIdentity:
        """The workload certificate a cluster with `tls` connects with."""
        ...

    @property
    def running(self) -> bool:
        """Whether the event loop serves: the outlier ticker starts only then."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a retired pool's close in the background (a swap must not wait for it)."""
        ...


class ClusterState:
    """Everything about one cluster that outlives config swaps."""

    def __init__(self, owner: ClusterOwner, config: Cluster) -> None:
        self.name = config.name
        self.config = config
        self._owner = owner
        store = owner.stats_store
        self.stats = ClusterStatSet(store, self.name)
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
        self._seen_traffic = self.budget.traffic.snapshot()
        self._tcp_stats: TcpClusterStatSet | None = None
        # With `tls`: one origin per kind of connection (its ALPN), kept while the cluster's
        # tls stays the same, so each keeps its resumable sessions.
        self._tls_origins: dict[Alpn, TlsOrigin] = {}
        self._tls_stats: ClusterTlsStats | None = None

    def tcp_stats(self) -> TcpClusterStatSet:
        """The stats only relayed connections move, made when a tcp_proxy first uses the
        cluster (so an HTTP-only cluster's stats stay as they were)."""
        if self._tcp_stats is None:
            self._tcp_stats = TcpClusterStatSet(self._owner.stats_store, self.name)
        return self._tcp_stats

    def tls_origin(self, alpn: Alpn) -> TlsOrigin | None:
        """How this cluster's connections of one kind are made TLS; None: plaintext."""
        tls = self.config.tls
        if tls is None:
            return None
        origin = self._tls_origins.get(alpn)
        if origin is None:
            if self._tls_stats is None:
                # Made on first use, so a plaintext cluster shows no ssl stats.
                self._tls_stats = ClusterTlsStats(self._owner.stats_store, self.name)
            origin = TlsOrigin(self._owner.tls, tls, self._tls_stats, alpn)
            self._tls_origins[alpn] = origin
        return origin

    def update(self, config: Cluster) -> list[Host]:
        """Adopt a new config of this cluster; answers its hosts in config order."""
        if config.tls != self.config.tls:
            self._tls_origins = {}
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
            replaced: Host | None = None
            if host is not None and (
                isinstance(host.pool, H2Pool) != config.http2
                or _tls_config(host.pool.tls) != config.tls
            ):
                # The service changed protocol, or its TLS (plaintext, or other accepted SPIFFE
                # IDs): its old connections drain, new ones are new.
                self._retire(host)
                if isinstance(host.pool, H2Pool) == config.http2:
                    replaced = host
                host = None
            if host is None:
                pool_class = H2Pool if config.http2 else UpstreamPool
                tls = self.tls_origin("h2" if config.http2 else "http/1.1")
                host = Host(
                    self.name,
                    ep.address,
                    ep.port,
                    ep.pod,
                    pool_class(ep.address, ep.port, self.budget, tls=tls),
                )
                if replaced is not None:
                    # Only its TLS changed: a request that read the old config and has yet to
                    # pick (a retry, after a fault's delay) goes the new way, not in plaintext
                    # past the push's answer (DataPlane.settle counts only requests sent).
                    replaced.successor = host
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
            self.detector = OutlierDetector(od, self._owner.stats_store, self.name, self._changed)
        else:
            self.detector.update(od)
        if self.detector is not None:
            self.detector.set_hosts(wanted)
        self.epoch.bump()
        self._membership()
        self.restart_ticker()
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
        self._owner.spawn(host.pool.close())

    def crossing_in_flight(self) -> int:
        """Requests still in flight on pools this cluster retired when it turned TLS on or off
        (plaintext pools while it now sends TLS, TLS pools while it now sends plaintext):
        sent, or still connecting, the old way, they may not have reached their endpoint yet
        (`DataPlane.settle`)."""
        tls = self.config.tls is not None
        return sum(h.pool.rq_active for h in self.retired if (h.pool.tls is not None) != tls)

    def _changed(self) -> None:
        self.epoch.bump()
        self._membership()

    def _membership(self) -> None:
        hosts = self.hosts.values()
        self.stats.membership_total.value = len(hosts)
        self.stats.membership_healthy.value = sum(1 for h in hosts if not h.ejected)

    def restart_ticker(self) -> None:
        """Keep one ticker while the cluster has a detector; a swap does not reset its phase
        (configs may be swapped more often than the interval)."""
        if self.detector is None or not self._owner.running:
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
        traffic = budget.traffic.snapshot()
        if traffic != self._seen_traffic:
            self._add_traffic(traffic)
        for host in self._all_hosts():
            pool = host.pool
            if pool.cx_total != host._seen_cx_total:
                if isinstance(pool, H2Pool):
                    # Made on first use, so an HTTP/1.1 cluster's stats stay as they were.
                    self._owner.stats_store.counter(
                        f"cluster.{self.name}.upstream_cx_http2_total"
                    ).value += pool.cx_total - host._seen_cx_total
                else:
                    s.upstream_cx_http1_total.value += pool.cx_total - host._seen_cx_total
                s.upstream_cx_total.value += pool.cx_total - host._seen_cx_total
                host._seen_cx_total = pool.cx_total
            s.upstream_cx_connect_fail.value += pool.cx_connect_fail - host._seen_connect_fail
            host._seen_connect_fail = pool.cx_connect_fail
        # Retired hosts are dropped once their pool has nothing left open.
        self.retired = [h for h in self.retired if h.pool.cx_active or h.rq_active]

    def _add_traffic(self, now: tuple[int, ...]) -> None:
        """Copy what the connections moved since the last sync (Traffic's snapshot order)."""
        rx, tx, local, remote, local_rq, remote_rq, timeout = (
            a - b for a, b in zip(now, self._seen_traffic, strict=True)
        )
        self._seen_traffic = now
        s = self.stats
        s.upstream_cx_rx_bytes_total.value += rx
        s.upstream_cx_tx_bytes_total.value += tx
        s.upstream_cx_destroy.value += local + remote
        s.upstream_cx_destroy_local.value += local
        s.upstream_cx_destroy_remote.value += remote
        s.upstream_cx_destroy_with_active_rq.value += local_rq + remote_rq
        s.upstream_cx_destroy_local_with_active_rq.value += local_rq
        s.upstream_cx_destroy_remote_with_active_rq.value += remote_rq
        s.upstream_cx_connect_timeout.value += timeout

    def sync_buffered(self) -> None:
        """What the cluster's HTTP connections hold unread and unsent now (walks them: for
        stats reads, not the periodic sync)."""
        rx = tx = 0
        for host in self._all_hosts():
            got, owed = host.pool.buffered()
            rx += got
            tx += owed
        self.stats.upstream_cx_rx_bytes_buffered.value = rx
        self.stats.upstream_cx_tx_bytes_buffered.value = tx

    def _all_hosts(self) -> Iterable[Host]:
        yield from self.hosts.values()
        yield from self.retired

    async def aclose(self) -> None:
        self._stop_ticker()
        for host in list(self._all_hosts()):
            await host.pool.close()


def _tls_config(origin: TlsOrigin | None) -> UpstreamTls | None:
    return None if origin is None else origin.config
