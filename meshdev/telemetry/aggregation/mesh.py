"""Many sidecars' latest intervals -> one `MeshView`: per route, per cluster, per host.

No I/O and no clocks: everything comes in through `SidecarInput`. The `Aggregator` keeps only
what a view needs of the past: sparkline histories, the previous view (events are its
differences), and per-name caches. Its parts: tally.py (the running sums of one view),
stat_index.py (what a sidecar's stat names say), attribution.py (flags shared among routes),
latency.py (merged quantiles), view_build.py (sums -> the view's stats), security.py (who
calls whom: edges between services, each pod's authorization, TLS and certificate), worked out
only when a view's reader asks (deferred_view.py).

How the numbers are made (each sidecar contributes its latest interval; stale ones nothing):
- Rates are a sidecar's counter deltas over its own interval, summed over sidecars. A route's
  traffic is counted on the caller's sidecar only, so the sum counts every request once.
- A route's requests and statuses are what its callers got: meshdev's per-route
  `downstream_rq_total` / `downstream_rq_<code>` (local answers such as 429, 503 UO or an
  injected abort included). A proxy without them (Envoy) gives `upstream_rq_*` instead.
  Success % is non-5xx over all answers (from codes, or `_<class>xx`).
- Quantiles come from the interval histograms merged bucket by bucket (every sidecar uses the
  same log-linear buckets, so the merge is exact and the result within 1 %); a route served
  by one sidecar takes that sidecar's own quantiles.
- Response flags of a route come from its own counters (`vhost.<v>.route.<r>.<stat>`) where
  the sidecar has them for that flag; otherwise from its clusters' counters (`UO`, `UT`,
  `UF`, `UH`, `URX`) and its listeners' (`FI`, `DI`, `RL`), shared among the routes that
  could have caused them in proportion to their traffic. What no route can own (`NR`, or a
  listener's fault with no fault configured anywhere) goes to `MeshView.unattributed_flags`.
- Upgraded (WebSocket) connections of a route: its upgrade requests in the interval (meshdev's
  `vhost.<v>.route.<r>.downstream_cx_upgrades_total`) and those open now (`_active`, a
  gauge), summed over the callers' sidecars like its requests.
- A tcp cluster (one a tcp_proxy listener relays to, as the sidecar's config says) counts
  connections (`upstream_cx_total`), bytes both ways (`upstream_cx_rx_bytes_total` +
  `_tx_`), connect failures (`upstream_cx_connect_fail`, its `UF`) and its callers' open
  connections (the breakers' `cx_active`); its flags belong to no route.
- Clusters and hosts are merged over sidecars: each sidecar has its own breakers and its own
  outlier detection, so a limit shows the sidecar nearest to it and a host counts as ejected
  when any sidecar ejects it. A sidecar's inbound side (its own app: the `inbound|<port>`
  cluster and the `inbound` route) is not a mesh route or cluster; it becomes that sidecar's
  own rps and success % in `SidecarStatus`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from meshdev.telemetry.aggregation.attribution import attribute
from meshdev.telemetry.aggregation.certs import CertInfo
from meshdev.telemetry.aggregation.deferred_view import DeferredSecurityView, SecurityParts
from meshdev.telemetry.aggregation.events import diff_views
from meshdev.telemetry.aggregation.history import DEFAULT_LENGTH, History
from meshdev.telemetry.aggregation.security import SecurityNames, SecurityTally
from meshdev.telemetry.aggregation.sidecar_interval import SidecarInterval
from meshdev.telemetry.aggregation.stat_index import StatIndex, index_stats, is_local
from meshdev.telemetry.aggregation.statnames import (
    CLASS,
    CLUSTER,
    CODE,
    CX_BYTES,
    CX_TOTAL,
    DS_CLASS,
    DS_CODE,
    DS_TOTAL,
    FLAG,
    GRPC_CODE,
    LISTENER,
    RETRY,
    ROUTE,
    TIME,
    TOTAL,
    UPG_TOTAL,
    StatNames,
)
from meshdev.telemetry.aggregation.tally import (
    ClusterTally,
    HostTally,
    RouteTally,
    bump,
    bump_flag,
)
from meshdev.telemetry.aggregation.topology import RouteKey, Topology
from meshdev.telemetry.aggregation.view import MeshView, SidecarStatus
from meshdev.telemetry.aggregation.view_build import (
    LimitsCache,
    cluster_stats,
    host_stats,
    route_stats,
)


@dataclass(frozen=True, slots=True)
class SidecarInput:
    """One sidecar as the source sees it now."""

    node: str
    admin_url: str
    # The newest interval taken from it; None before the first arrived.
    latest: SidecarInterval | None
    topology: Topology | None = None
    connected: bool = True
    stale: bool = False
    mode: str = "stream"
    error: str = ""
    age_s: float | None = None
    # Its workload certificate (GET /certs, asked now and then); None: none known.
    cert: CertInfo | None = None


@dataclass(frozen=True, slots=True)
class _Layout:
    routes: tuple[RouteKey, ...]
    down: tuple[RouteKey, ...]  # routes some sidecar counts the downstream side of
    clusters: tuple[str, ...]
    tcp: frozenset[str]  # clusters a tcp_proxy relays to (in some sidecar's config)


class Aggregator:
    def __init__(self, *, history: int = DEFAULT_LENGTH) -> None:
        self._layout_cache: tuple[list[object], _Layout] | None = None
        self._limits: LimitsCache = {}
        self._names = StatNames()
        self._rps_history = History(history)
        self._trip_history = History(history)
        self._indexes: dict[str, StatIndex] = {}
        self._topologies: dict[int, Topology] = {}
        self._previous: MeshView | None = None
        self._security_names = SecurityNames()

    def build(self, sidecars: Sequence[SidecarInput], at: float) -> MeshView:
        """The view of `sidecars` now (`at`: wall-clock time, for the view and its events)."""
        hosts: dict[tuple[str, str], HostTally] = {}
        unattributed: dict[str, int] = {}
        self._learn(sidecars)
        indexes = [
            self._index(sc, sc.latest) if sc.latest is not None and not sc.stale else None
            for sc in sidecars
        ]
        layout = self._layout(sidecars, indexes)
        routes = {key: RouteTally() for key in layout.routes}
        for key in layout.down:
            routes[key].prefer_down = True
        clusters = {name: ClusterTally() for name in layout.clusters}
        statuses = []
        for sc, index in zip(sidecars, indexes, strict=True):
            snap = sc.latest
            own = RouteTally()
            if snap is not None and index is not None:
                self._add(sc, snap, index, own, routes, clusters, hosts, unattributed)
            side = own.side
            statuses.append(
                SidecarStatus(
                    node=sc.node,
                    admin_url=sc.admin_url,
                    connected=sc.connected,
                    stale=sc.stale,
                    mode=sc.mode,
                    config_version=snap.config_version if snap else None,
                    config_hash=snap.config_hash if snap else None,
                    error=sc.error,
                    age_s=sc.age_s,
                    rps=side.rps,
                    success_pct=side.success_pct,
                )
            )
        for name in layout.tcp:
            c = clusters.get(name)
            if c is not None:
                c.tcp = True
        # What the next view's events are the differences from: no security parts in it.
        base = MeshView(
            at=at,
            sidecars=tuple(statuses),
            routes=route_stats(routes, self._rps_history),
            clusters=cluster_stats(clusters, hosts, self._trip_history, self._limits),
            hosts=host_stats(hosts, {n for n, c in clusters.items() if c.tcp}),
            unattributed_flags=unattributed,
        )
        events = diff_views(self._previous, base)
        self._previous = base
        return DeferredSecurityView(
            at=at,
            sidecars=base.sidecars,
            routes=base.routes,
            clusters=base.clusters,
            hosts=base.hosts,
            events=events,
            unattributed_flags=unattributed,
            security=partial(self._security, tuple(sidecars), tuple(indexes), at),
        )

    def _security(
        self,
        sidecars: tuple[SidecarInput, ...],
        indexes: tuple[StatIndex | None, ...],
        at: float,
    ) -> SecurityParts:
        """A view's edges and pods, from the inputs it was built of (`DeferredSecurityView`
        asks, when first read)."""
        security = SecurityTally(self._security_names)
        for sc, index in zip(sidecars, indexes, strict=True):
            snap = sc.latest
            if snap is not None and index is not None:
                security.add(sc.node, sc.topology, snap, index.clusters, sc.cert, at)
            else:
                security.add(sc.node, sc.topology, None, (), sc.cert, at)
        return security.edges(), security.pods()

    # -- one sidecar ---------------------------------------------------------------------

    def _learn(self, sidecars: Sequence[SidecarInput]) -> None:
        for sc in sidecars:
            t = sc.topology
            if t is not None and id(t) not in self._topologies:
                # Keep the object so its id is not reused by another while we remember it.
                self._topologies[id(t)] = t
                self._names.learn(
                    clusters=t.clusters,
                    vhosts={r.vhost for r in t.routes},
                    routes={r.route for r in t.routes},
                    http_prefixes=t.http_prefixes,
                )
        if len(self._topologies) > 4 * len(sidecars) + 16:
            current = {id(sc.topology): sc.topology for sc in sidecars if sc.topology}
            self._topologies = current

    def _index(self, sc: SidecarInput, snap: SidecarInterval) -> StatIndex:
        topo = sc.topology
        stamp = (len(snap.counters), len(snap.histograms), id(topo))
        index = self._indexes.get(sc.node)
        if index is not None and index.stamp == stamp:
            return index
        index = self._indexes[sc.node] = index_stats(self._names.meaning, snap, topo, stamp)
        return index

    def _layout(
        self, sidecars: Sequence[SidecarInput], indexes: Sequence[StatIndex | None]
    ) -> _Layout:
        """The routes and clusters every view of these sidecars has (their configs' and those
        their stats name), worked out again only when a config or a set of names changes:
        with 41 sidecars that each name every route and cluster, walking them all at every
        view cost more than the rest of the view."""
        key: list[object] = [
            x for sc, index in zip(sidecars, indexes, strict=True) for x in (sc.topology, index)
        ]
        cached = self._layout_cache
        if cached is not None:
            before, layout = cached
            if len(before) == len(key) and all(a is b for a, b in zip(before, key, strict=True)):
                return layout
        routes: dict[RouteKey, None] = {}
        down: dict[RouteKey, None] = {}
        clusters: dict[str, None] = {}
        tcp: set[str] = set()
        for sc, index in zip(sidecars, indexes, strict=True):
            topo = sc.topology
            if topo is not None:
                routes.update((r.key, None) for r in topo.routes)
                clusters.update(
                    (c, None)
                    for c in topo.clusters
                    if c not in topo.local_clusters and not is_local(c)
                )
                tcp.update(topo.tcp_clusters)
            if index is not None:
                routes.update((r, None) for r in index.routes)
                down.update((r, None) for r in index.routes if r in index.down_routes)
                clusters.update((c, None) for c in index.clusters)
        layout = _Layout(tuple(routes), tuple(down), tuple(clusters), frozenset(tcp))
        self._layout_cache = (key, layout)
        return layout

    def _add(
        self,
        sc: SidecarInput,
        snap: SidecarInterval,
        index: StatIndex,
        own: RouteTally,
        routes: dict[RouteKey, RouteTally],
        clusters: dict[str, ClusterTally],
        hosts: dict[tuple[str, str], HostTally],
        unattributed: dict[str, int],
    ) -> None:
        local = index.local
        own.prefer_down = bool(index.inbound & index.down_routes)

        dt = snap.interval_s
        if dt > 0:
            self._add_interval(sc, snap, index, own, routes, clusters, unattributed, 1.0 / dt)
        gauges = snap.gauges
        for gauge, key in index.upgrade_gauges:
            n = gauges.get(gauge, 0)
            if n > 0:
                r = routes.get(key)
                if r is None:
                    r = routes[key] = RouteTally()
                r.upgrades_open += n

        for b in snap.breakers:
            if b.cluster not in local:
                acc = clusters.get(b.cluster)
                if acc is None:
                    acc = clusters[b.cluster] = ClusterTally()
                acc.breakers.append((sc.node, b))

        age = sc.age_s or 0.0
        inv = 1.0 / dt if dt > 0 else 0.0
        # Most of a big mesh's host samples are idle (a sidecar calls few of the clusters it
        # knows): only what is not zero is added.
        for h in snap.hosts:
            cluster = h.cluster
            if cluster in local:
                continue
            key = (cluster, h.endpoint)
            host = hosts.get(key)
            if host is None:
                host = hosts[key] = HostTally(h.pod)
                if cluster not in clusters:
                    clusters[cluster] = ClusterTally()
            if h.rq_total or h.rq_success or h.rq_error:
                host.rate += h.rq_total * inv
                host.success += h.rq_success
                host.error += h.rq_error
            if h.rq_active:
                host.active += h.rq_active
            if h.ejected:
                host.ejected_by.append(sc.node)
                host.returns = max(host.returns, h.ejected_for - age)
            if h.ejection_count:
                host.count = max(host.count, h.ejection_count)

    def _add_interval(
        self,
        sc: SidecarInput,
        snap: SidecarInterval,
        index: StatIndex,
        own: RouteTally,
        routes: dict[RouteKey, RouteTally],
        clusters: dict[str, ClusterTally],
        unattributed: dict[str, int],
        inv: float,
    ) -> None:
        meaning = self._names.meaning
        local = index.local
        inbound = index.inbound
        # A tcp cluster's flags (a failed connect, an overflow) are no route's to share.
        tcp = sc.topology.tcp_clusters if sc.topology is not None else frozenset()
        cluster_flags: list[tuple[str, str, int]] = []
        listener_flags: list[tuple[str, int]] = []
        for name, n in snap.deltas.items():
            m = meaning(name)
            if m is None:
                continue
            kind, key, what, arg, trip = m
            if kind == ROUTE:
                r = own if key in inbound else routes.get(key)
                if r is None:
                    r = routes[key] = RouteTally()
                if what == DS_TOTAL:
                    r.down.total(inv, n)
                elif what == DS_CODE:
                    r.down.code(inv, arg, n)
                elif what == TOTAL:
                    r.up.total(inv, n)
                elif what == CODE:
                    r.up.code(inv, arg, n)
                elif what == RETRY:
                    r.retry += n * inv
                elif what == FLAG:
                    bump_flag(r, arg, n, inv)
                elif what == DS_CLASS:
                    bump(r.down.classes, arg, n)
                elif what == CLASS:
                    bump(r.up.classes, arg, n)
                elif what == UPG_TOTAL:
                    r.upgrades += n
                elif what == GRPC_CODE:
                    bump(r.grpc, arg, n)
            elif kind == CLUSTER:
                if key in local:
                    continue
                c = clusters.get(key)
                if c is None:
                    c = clusters[key] = ClusterTally()
                if what == TOTAL:
                    c.up.total(inv, n)
                elif what == CODE:
                    c.up.code(inv, arg, n)
                elif what == CLASS:
                    bump(c.up.classes, arg, n)
                elif what == FLAG:
                    bump(c.flags, arg, n)
                    if trip:
                        c.trips += n * inv
                    if arg == "UF":
                        c.fail += n * inv
                    if key not in tcp:
                        cluster_flags.append((key, arg, n))
                elif what == CX_TOTAL:
                    c.cx += n * inv
                elif what == CX_BYTES:
                    c.bytes += n * inv
            elif kind == LISTENER:
                listener_flags.append((arg, n))

        for name, h in snap.histograms.items():
            if h.count or h.quantiles is not None:
                m = meaning(name)
                if m is not None and m[0] == ROUTE and m[2] == TIME:
                    key = m[1]
                    if key in inbound:
                        continue
                    hist_route = routes.get(key)
                    if hist_route is None:
                        hist_route = routes[key] = RouteTally()
                    hist_route.hists.append(h)

        if cluster_flags or listener_flags:
            attribute(
                meaning,
                snap,
                sc.topology,
                index,
                cluster_flags,
                listener_flags,
                routes,
                unattributed,
                inv,
            )
