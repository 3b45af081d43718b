"""A compiled config: what a request reads, built once per apply (compiler.py) and never
changed after (except a route's `fault`, which runtime overrides replace in place).

Its entries join the rooms below: listeners and routes (router/), their policies (filters/),
stat sets (stats/), and clusters over the state that outlives swaps (upstream/cluster.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshdev.common.sidecar_config import Listener, Route, SidecarConfig, TcpProxy
from meshdev.sidecar.filters.fault import FaultSpec
from meshdev.sidecar.filters.ratelimit import TokenBucket
from meshdev.sidecar.filters.rbac import RbacEngine
from meshdev.sidecar.router.retry import RetryRules
from meshdev.sidecar.router.scope import EgressScope
from meshdev.sidecar.router.table import HostIndex, RouteTable, WeightedPick
from meshdev.sidecar.stats.sets import (
    ListenerStatSet,
    RbacStatSet,
    RouteStatSet,
    TcpClusterStatSet,
    TcpStatSet,
)
from meshdev.sidecar.upstream.balancer import Balancer, make_balancer
from meshdev.sidecar.upstream.cluster import ClusterState
from meshdev.sidecar.upstream.host import Host


class ClusterEntry:
    """One config's view of a cluster: its hosts and balancer, over the `ClusterState` that
    every config since the cluster appeared shares."""

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
        "stream_idle_timeout",
    )

    def __init__(self, state: ClusterState, hosts: list[Host]) -> None:
        cfg = state.config
        self.name = state.name
        self.state = state
        self.stats = state.stats
        self.breaker = state.breaker
        self.detector = state.detector
        self.hosts = tuple(hosts)
        self.balancer: Balancer[Host] = make_balancer(
            cfg.lb, hosts, state.epoch, state.stats.lb_healthy_panic
        )
        self.hash_header = cfg.hash_header.lower() if cfg.hash_header else None
        self.connect_timeout = cfg.connect_timeout
        self.stream_idle_timeout = cfg.stream_idle_timeout


class RouteEntry:
    """A compiled route: where it goes and the policies on the way."""

    __slots__ = (
        "attempt_count",
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
        clusters: WeightedPick[ClusterEntry],
        stats: RouteStatSet,
        bucket: TokenBucket | None,
        fault: FaultSpec | None,
        attempt_count: bool = False,
    ) -> None:
        self.vhost = vhost
        # The virtual host's include_attempt_count_in_response.
        self.attempt_count = attempt_count
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


class RbacEntry:
    """A listener's authorization (HTTP or tcp_proxy): its compiled policies and stats."""

    __slots__ = ("engine", "stats")

    def __init__(self, engine: RbacEngine, stats: RbacStatSet) -> None:
        self.engine = engine
        self.stats = stats


class ListenerEntry:
    __slots__ = ("inbound", "ingress", "kind", "name", "rbac", "stats")

    def __init__(
        self,
        listener: Listener,
        stats: ListenerStatSet,
        inbound: RouteEntry | None,
        ingress: RouteTable[VHostEntry] | None,
        rbac: RbacEntry | None = None,
    ) -> None:
        self.name = listener.name
        self.kind = listener.kind
        self.stats = stats
        self.inbound = inbound
        self.ingress = ingress
        # None unless the listener has policies, so the others pay one attribute check.
        self.rbac = rbac


class TcpTarget:
    """One cluster a tcp_proxy may pick, with the stats only relayed connections move."""

    __slots__ = ("cluster", "stats")

    def __init__(self, cluster: ClusterEntry, stats: TcpClusterStatSet) -> None:
        self.cluster = cluster
        self.stats = stats


class TcpProxyEntry:
    """A compiled tcp_proxy listener: which cluster a new connection goes to, and its stats.
    `rbac`: an inbound one's authorization, to check once per connection by its peer's
    principal (`rbac.engine.check_connection`; Envoy's network RBAC filter); None without
    policies."""

    __slots__ = ("clusters", "idle_timeout", "name", "rbac", "stat_prefix", "stats")

    def __init__(
        self,
        name: str,
        proxy: TcpProxy,
        clusters: WeightedPick[TcpTarget],
        stats: TcpStatSet,
        rbac: RbacEntry | None = None,
    ) -> None:
        self.name = name
        self.stat_prefix = proxy.stat_prefix
        self.clusters = clusters
        self.idle_timeout = proxy.idle_timeout
        self.stats = stats
        self.rbac = rbac


@dataclass(frozen=True, slots=True)
class Compiled:
    config: SidecarConfig
    listeners: dict[str, ListenerEntry]
    vhosts: HostIndex[VHostEntry]
    routes: tuple[RouteEntry, ...]
    clusters: dict[str, ClusterEntry]
    # The tcp_proxy listeners, by name (the HTTP ones are `listeners`).
    tcp_listeners: dict[str, TcpProxyEntry] = field(default_factory=dict)
    # Set: the config is scoped to the services its app calls (why a host has no route).
    egress: EgressScope | None = None
