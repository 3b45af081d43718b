"""Many sidecars' latest snapshots -> one `MeshView`: per route, per cluster, per host.

No I/O and no clocks: everything comes in through `SidecarInput`. The `Aggregator` keeps only
what a view needs of the past: sparkline histories, the previous view (events are its
differences), and per-name caches.

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
- Clusters and hosts are merged over sidecars: each sidecar has its own breakers and its own
  outlier detection, so a limit shows the sidecar nearest to it and a host counts as ejected
  when any sidecar ejects it. A sidecar's inbound side (its own app: the `inbound|<port>`
  cluster and the `inbound` route) is not a mesh route or cluster; it becomes that sidecar's
  own rps and success % in `SidecarStatus`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from meshdev.sidecar.histogram import HIGHEST, rank_of
from meshdev.sidecar.statsformat import round_significant
from meshdev.sidecar.views import BreakerView
from meshdev.telemetry.events import diff_views
from meshdev.telemetry.history import DEFAULT_LENGTH, History
from meshdev.telemetry.snapshot import IntervalHistogram, Snapshot, SnapshotError
from meshdev.telemetry.statnames import (
    CLASS,
    CLUSTER,
    CODE,
    DS_CLASS,
    DS_CODE,
    DS_TOTAL,
    FLAG,
    LISTENER,
    RETRY,
    ROUTE,
    TIME,
    TOTAL,
    StatNames,
)
from meshdev.telemetry.topology import RouteKey, Topology
from meshdev.telemetry.view import (
    BreakerLimit,
    ClusterStats,
    HostStats,
    MeshView,
    RouteStats,
    SidecarStatus,
)

log = logging.getLogger(__name__)

# Istio's (and meshdev's) name for the cluster of a sidecar's own app, for sidecars whose
# config we could not read.
LOCAL_CLUSTER_PREFIX = "inbound|"
# The virtual host of the route every app sidecar's inbound listener uses.
INBOUND_VHOST = "inbound"
_LIMIT_NAMES = ("max_connections", "max_pending_requests", "max_requests", "max_retries")
_QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
# The status a flag's answer has (one digit: a class), to tell which route a shared
# cluster's or listener's flag belongs to.
FLAG_STATUS = {"UO": "503", "UH": "503", "UF": "503", "UT": "504", "URX": "5", "RL": "429"}


@dataclass(frozen=True, slots=True)
class SidecarInput:
    """One sidecar as the source sees it now."""

    node: str
    admin_url: str
    snapshot: Snapshot | None
    topology: Topology | None = None
    connected: bool = True
    stale: bool = False
    mode: str = "stream"
    error: str = ""
    age_s: float | None = None


class _Side:
    """Requests and their statuses on one side of a route or cluster, summed over sidecars."""

    __slots__ = ("classes", "codes", "n", "n_codes", "rate", "rate_codes", "seen")

    def __init__(self) -> None:
        self.n = 0
        self.rate = 0.0
        self.seen = False  # a total counter moved (else the codes are all there is)
        self.n_codes = 0
        self.rate_codes = 0.0
        self.codes: dict[str, int] = {}
        self.classes: dict[str, int] = {}

    def total(self, inv: float, n: int) -> None:
        self.n += n
        self.rate += n * inv
        self.seen = True

    def code(self, inv: float, code: str, n: int) -> None:
        self.codes[code] = self.codes.get(code, 0) + n
        self.n_codes += n
        self.rate_codes += n * inv

    @property
    def requests(self) -> int:
        return self.n if self.seen else self.n_codes

    @property
    def rps(self) -> float:
        return self.rate if self.seen else self.rate_codes

    @property
    def success_pct(self) -> float | None:
        return _success(self.codes, self.classes)


class _Route:
    __slots__ = ("down", "flags", "hists", "prefer_down", "retry", "up")

    def __init__(self) -> None:
        self.up = _Side()
        self.down = _Side()
        self.prefer_down = False  # a sidecar counts this route's downstream side
        self.retry = 0.0
        self.flags: dict[str, int] = {}
        self.hists: list[IntervalHistogram] = []

    @property
    def side(self) -> _Side:
        return self.down if self.prefer_down else self.up


class _Cluster:
    __slots__ = ("breakers", "flags", "trips", "up")

    def __init__(self) -> None:
        self.up = _Side()
        self.trips = 0.0
        self.flags: dict[str, int] = {}
        self.breakers: list[tuple[str, BreakerView]] = []


class _Host:
    __slots__ = ("active", "count", "ejected_by", "error", "pod", "rate", "returns", "success")

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.rate = 0.0
        self.success = 0
        self.error = 0
        self.active = 0
        self.count = 0
        self.returns = 0.0
        self.ejected_by: list[str] = []


@dataclass(frozen=True, slots=True)
class _Index:
    """What a sidecar's stat names say, recomputed only when its set of names changes."""

    stamp: tuple[int, int, int]
    routes: tuple[RouteKey, ...]
    down_routes: frozenset[RouteKey]  # routes this sidecar counts the downstream side of
    clusters: tuple[str, ...]
    route_flags: frozenset[str]  # flags this sidecar counts per route itself
    local: frozenset[str]
    inbound: frozenset[RouteKey]  # the sidecar's own inbound route(s)


def _is_local(cluster: str) -> bool:
    return cluster.startswith(LOCAL_CLUSTER_PREFIX)


def _add(d: dict[str, int], key: str, n: int) -> None:
    d[key] = d.get(key, 0) + n


def _split(n: int, weights: Sequence[float]) -> list[int]:
    """`n` shared in proportion to `weights`, in whole counts that add up to `n`."""
    total = sum(weights)
    if total <= 0:
        weights, total = [1.0] * len(weights), float(len(weights))
    exact = [n * w / total for w in weights]
    parts = [math.floor(x) for x in exact]
    # Largest remainders get the counts that flooring left over.
    for i in sorted(range(len(exact)), key=lambda i: parts[i] - exact[i])[: n - sum(parts)]:
        parts[i] += 1
    return parts


def _success(codes: dict[str, int], classes: dict[str, int]) -> float | None:
    if codes:
        total = sum(codes.values())
        bad = sum(n for c, n in codes.items() if c[0] == "5")
    else:
        total = sum(classes.values())
        bad = classes.get("5", 0)
    return 100.0 * (total - bad) / total if total else None


def _q(value: float) -> float | None:
    return None if math.isnan(value) else round_significant(value)


Buckets = tuple[tuple[float, float, int], ...]


def _merge(hists: list[IntervalHistogram]) -> tuple[tuple[float | None, ...], Buckets]:
    """Bucket-wise sum and its quantiles, as `HistogramSnapshot.merge` and `.quantile` give.

    Every sidecar cuts buckets at the same bounds, so adding counts per lower bound is the
    exact merge; a bucket stands for its midpoint, and the rank is the nearest-rank of
    `rank_of`. Done here on the triples because it runs for every busy route every interval.
    """
    merged: dict[float, list[float]] = {}
    for h in hists:
        for lo, w, n in h.buckets:
            entry = merged.get(lo)
            if entry is None:
                merged[lo] = [w, n]
            else:
                entry[1] += n
    buckets = tuple((lo, merged[lo][0], int(merged[lo][1])) for lo in sorted(merged))
    cumulative = list(accumulate(b[2] for b in buckets))
    count = cumulative[-1] if cumulative else 0
    if count == 0:
        return (None, None, None), buckets
    out: list[float | None] = []
    for _, q in _QUANTILES:
        lo, w, _n = buckets[bisect_right(cumulative, rank_of(q, count))]
        out.append(_q(_midpoint(lo, w)))
    return tuple(out), buckets


def _midpoint(lower: float, width: float) -> float:
    # The open-ended end buckets read as in histogram.bucket_value.
    if lower <= 0.0:
        return 0.0
    if lower >= HIGHEST:
        return HIGHEST
    return lower + width / 2


def _latency(hists: list[IntervalHistogram]) -> tuple[tuple[float | None, ...], Buckets]:
    counted = [h for h in hists if h.count]
    try:
        if len(counted) == 1 and counted[0].quantiles is not None:
            h = counted[0]
            qs = h.quantiles or {}
            return tuple(qs.get(k) for k, _ in _QUANTILES), tuple(h.buckets)
        if counted:
            return _merge(counted)
    except SnapshotError:
        log.warning("a sidecar sent malformed histogram buckets; its latency is left out")
        return (None, None, None), ()
    # Only summaries (a polled Envoy without detailed buckets): they cannot be merged; the
    # worst sidecar's value is the honest bound.
    summaries = [h.quantiles for h in hists if h.quantiles]
    if summaries:
        out: list[float | None] = []
        for key, _ in _QUANTILES:
            values = [v for s in summaries if (v := s.get(key)) is not None]
            out.append(max(values) if values else None)
        return tuple(out), ()
    return (None, None, None), ()


class Aggregator:
    def __init__(self, *, history: int = DEFAULT_LENGTH) -> None:
        self._names = StatNames()
        self._rps_history = History(history)
        self._trip_history = History(history)
        self._indexes: dict[str, _Index] = {}
        self._topologies: dict[int, Topology] = {}
        self._previous: MeshView | None = None

    def build(self, sidecars: Sequence[SidecarInput], at: float) -> MeshView:
        """The view of `sidecars` now (`at`: wall-clock time, for the view and its events)."""
        routes: dict[RouteKey, _Route] = {}
        clusters: dict[str, _Cluster] = {}
        hosts: dict[tuple[str, str], _Host] = {}
        unattributed: dict[str, int] = {}
        self._learn(sidecars)
        statuses = []
        for sc in sidecars:
            snap = sc.snapshot
            topo = sc.topology
            if topo is not None:
                for r in topo.routes:
                    if r.key not in routes:
                        routes[r.key] = _Route()
                for c in topo.clusters:
                    if c not in clusters and c not in topo.local_clusters and not _is_local(c):
                        clusters[c] = _Cluster()
            own = _Route()
            if snap is not None and not sc.stale:
                self._add(sc, snap, own, routes, clusters, hosts, unattributed)
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
        view = MeshView(
            at=at,
            sidecars=tuple(statuses),
            routes=self._routes(routes),
            clusters=self._clusters(clusters, hosts),
            hosts=self._hosts(hosts),
            unattributed_flags=unattributed,
        )
        view = dataclasses.replace(view, events=diff_views(self._previous, view))
        self._previous = view
        return view

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

    def _index(self, sc: SidecarInput, snap: Snapshot) -> _Index:
        topo = sc.topology
        stamp = (len(snap.counters), len(snap.histograms), id(topo))
        index = self._indexes.get(sc.node)
        if index is not None and index.stamp == stamp:
            return index
        meaning = self._names.meaning
        route_keys: dict[RouteKey, None] = {}
        down: set[RouteKey] = set()
        cluster_names: dict[str, None] = {}
        route_flags: set[str] = set()
        for name in (*snap.counters, *snap.histograms):
            m = meaning(name)
            if m is None:
                continue
            if m[0] == ROUTE:
                route_keys[m[1]] = None
                if m[2] == FLAG:
                    route_flags.add(m[3])
                elif m[2] == DS_TOTAL:
                    down.add(m[1])
            elif m[0] == CLUSTER:
                cluster_names[m[1]] = None
        local = frozenset(
            {
                *(topo.local_clusters if topo is not None else ()),
                *(c for c in cluster_names if _is_local(c)),
                *(b.cluster for b in snap.breakers if _is_local(b.cluster)),
                *(h.cluster for h in snap.hosts if _is_local(h.cluster)),
            }
        )
        # The inbound listener's route, unless the config really has a service so named.
        configured = {r.vhost for r in topo.routes} if topo is not None else set()
        inbound = frozenset(
            k for k in route_keys if k[0] == INBOUND_VHOST and INBOUND_VHOST not in configured
        )
        index = _Index(
            stamp,
            tuple(k for k in route_keys if k not in inbound),
            frozenset(down),
            tuple(c for c in cluster_names if c not in local),
            frozenset(route_flags),
            local,
            inbound,
        )
        self._indexes[sc.node] = index
        return index

    def _add(
        self,
        sc: SidecarInput,
        snap: Snapshot,
        own: _Route,
        routes: dict[RouteKey, _Route],
        clusters: dict[str, _Cluster],
        hosts: dict[tuple[str, str], _Host],
        unattributed: dict[str, int],
    ) -> None:
        index = self._index(sc, snap)
        local = index.local
        for key in index.routes:
            r = routes.get(key)
            if r is None:
                r = routes[key] = _Route()
            if key in index.down_routes:
                r.prefer_down = True
        own.prefer_down = bool(index.inbound & index.down_routes)
        for c in index.clusters:
            if c not in clusters:
                clusters[c] = _Cluster()

        dt = snap.interval_s
        if dt > 0:
            self._add_interval(sc, snap, index, own, routes, clusters, unattributed, 1.0 / dt)

        for b in snap.breakers:
            if b.cluster not in local:
                acc = clusters.get(b.cluster)
                if acc is None:
                    acc = clusters[b.cluster] = _Cluster()
                acc.breakers.append((sc.node, b))

        age = sc.age_s or 0.0
        inv = 1.0 / dt if dt > 0 else 0.0
        for h in snap.hosts:
            if h.cluster in local:
                continue
            key = (h.cluster, h.endpoint)
            host = hosts.get(key)
            if host is None:
                host = hosts[key] = _Host(h.pod)
            host.rate += h.rq_total * inv
            host.success += h.rq_success
            host.error += h.rq_error
            host.active += h.rq_active
            if h.ejected:
                host.ejected_by.append(sc.node)
                host.returns = max(host.returns, h.ejected_for - age)
            host.count = max(host.count, h.ejection_count)
            if h.cluster not in clusters:
                clusters[h.cluster] = _Cluster()

    def _add_interval(
        self,
        sc: SidecarInput,
        snap: Snapshot,
        index: _Index,
        own: _Route,
        routes: dict[RouteKey, _Route],
        clusters: dict[str, _Cluster],
        unattributed: dict[str, int],
        inv: float,
    ) -> None:
        meaning = self._names.meaning
        local = index.local
        inbound = index.inbound
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
                    r = routes[key] = _Route()
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
                    _add(r.flags, arg, n)
                elif what == DS_CLASS:
                    _add(r.down.classes, arg, n)
                elif what == CLASS:
                    _add(r.up.classes, arg, n)
            elif kind == CLUSTER:
                if key in local:
                    continue
                c = clusters.get(key)
                if c is None:
                    c = clusters[key] = _Cluster()
                if what == TOTAL:
                    c.up.total(inv, n)
                elif what == CODE:
                    c.up.code(inv, arg, n)
                elif what == CLASS:
                    _add(c.up.classes, arg, n)
                elif what == FLAG:
                    _add(c.flags, arg, n)
                    if trip:
                        c.trips += n * inv
                    cluster_flags.append((key, arg, n))
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
                        hist_route = routes[key] = _Route()
                    hist_route.hists.append(h)

        if cluster_flags or listener_flags:
            self._attribute(
                snap, sc.topology, index, cluster_flags, listener_flags, routes, unattributed
            )

    def _route_answers(
        self, snap: Snapshot, index: _Index
    ) -> tuple[dict[RouteKey, int], dict[RouteKey, dict[str, int]]]:
        """This sidecar's requests and status codes per route in the interval (only needed,
        so only computed, when a flag must be shared among routes)."""
        totals: dict[RouteKey, int] = {}
        codes: dict[RouteKey, dict[str, int]] = {}
        meaning = self._names.meaning
        for name, n in snap.deltas.items():
            m = meaning(name)
            if m is None or m[0] != ROUTE or m[1] in index.inbound:
                continue
            key, what = m[1], m[2]
            down = key in index.down_routes
            if what == (DS_TOTAL if down else TOTAL):
                totals[key] = totals.get(key, 0) + n
            elif what == (DS_CODE if down else CODE):
                _add(codes.setdefault(key, {}), m[3], n)
        return totals, codes

    def _attribute(
        self,
        snap: Snapshot,
        topo: Topology | None,
        index: _Index,
        cluster_flags: list[tuple[str, str, int]],
        listener_flags: list[tuple[str, int]],
        routes: dict[RouteKey, _Route],
        unattributed: dict[str, int],
    ) -> None:
        totals, codes = self._route_answers(snap, index)

        def answered(key: RouteKey, status: str) -> int:
            mine = codes.get(key)
            if not mine:
                return 0
            if len(status) == 1:  # a class: "5" for any 5xx
                return sum(n for c, n in mine.items() if c[0] == status)
            return mine.get(status, 0)

        def share(flag: str, n: int, candidates: Sequence[tuple[RouteKey, float]]) -> None:
            if not candidates:
                _add(unattributed, flag, n)
                return
            # The routes whose callers got the flag's status, in proportion to how often;
            # else in proportion to their traffic; else to the route table's weights.
            status = FLAG_STATUS.get(flag)
            weights = [answered(k, status) * s for k, s in candidates] if status else []
            if not any(weights):
                weights = [totals.get(k, 0) * s for k, s in candidates]
            if not any(weights):
                weights = [s for _, s in candidates]
            for (k, _), part in zip(candidates, _split(n, weights), strict=True):
                if part:
                    r = routes.get(k)
                    if r is None:
                        r = routes[k] = _Route()
                    _add(r.flags, flag, part)

        for cluster, flag, n in cluster_flags:
            if flag not in index.route_flags:
                share(flag, n, topo.by_cluster.get(cluster, ()) if topo else ())
        for flag, n in listener_flags:
            if flag == "NR":
                _add(unattributed, flag, n)
            elif flag not in index.route_flags:
                keys = topo.by_feature.get(flag, ()) if topo else ()
                share(flag, n, [(k, 1.0) for k in keys])

    # -- the view --------------------------------------------------------------------------

    def _routes(self, routes: dict[RouteKey, _Route]) -> tuple[RouteStats, ...]:
        out = []
        history = self._rps_history
        history.begin()
        for key in sorted(routes):
            r = routes[key]
            side = r.side
            rps = side.rps
            (p50, p95, p99), buckets = _latency(r.hists)
            out.append(
                RouteStats(
                    vhost=key[0],
                    route=key[1],
                    rps=rps,
                    success_pct=side.success_pct,
                    p50=p50,
                    p95=p95,
                    p99=p99,
                    retries_per_s=r.retry,
                    total=side.requests,
                    codes=side.codes,
                    flags=r.flags,
                    latency_buckets=buckets,
                    history=history.push(key, rps),
                )
            )
        history.end()
        return tuple(out)

    def _clusters(
        self, clusters: dict[str, _Cluster], hosts: dict[tuple[str, str], _Host]
    ) -> tuple[ClusterStats, ...]:
        endpoints: dict[str, int] = {}
        ejected: dict[str, int] = {}
        for (cluster, _), h in hosts.items():
            endpoints[cluster] = endpoints.get(cluster, 0) + 1
            if h.ejected_by:
                ejected[cluster] = ejected.get(cluster, 0) + 1
        out = []
        history = self._trip_history
        history.begin()
        for name in sorted(clusters):
            c = clusters[name]
            limits = _limits(c.breakers)
            n, out_now = endpoints.get(name, 0), ejected.get(name, 0)
            out.append(
                ClusterStats(
                    name=name,
                    endpoints=n,
                    healthy=n - out_now,
                    ejected=out_now,
                    limits=limits,
                    open_now=any(lim.open for lim in limits),
                    trips_per_s=c.trips,
                    trip_history=history.push(name, c.trips),
                    rps=c.up.rps,
                    success_pct=c.up.success_pct,
                    flags=c.flags,
                )
            )
        history.end()
        return tuple(out)

    @staticmethod
    def _hosts(hosts: dict[tuple[str, str], _Host]) -> tuple[HostStats, ...]:
        out = []
        for (cluster, address), h in hosts.items():
            finished = h.success + h.error
            out.append(
                HostStats(
                    cluster=cluster,
                    pod=h.pod,
                    address=address,
                    rps=h.rate,
                    success_pct=100.0 * h.success / finished if finished else None,
                    ejected=bool(h.ejected_by),
                    ejection_count=h.count,
                    returns_in_s=max(0.0, h.returns) if h.ejected_by else 0.0,
                    rq_active=h.active,
                    ejected_by=tuple(h.ejected_by),
                )
            )
        out.sort(key=lambda h: (h.cluster, h.pod, h.address))
        return tuple(out)


def _limits(breakers: list[tuple[str, BreakerView]]) -> tuple[BreakerLimit, ...]:
    if not breakers:
        return ()
    # Per limit: (open, active, limit) on each sidecar; the one shown is open if any is, else
    # the fullest. Spelled out per limit: this runs for every cluster every interval.
    rows = [
        (
            node,
            (
                # Envoy's cx_open also counts idle pooled connections, which still admit new
                # requests: after a burst it would read "open" until they time out. Open here
                # means at the limit with every connection busy, i.e. no longer admitting.
                (b.cx_open and b.rq_active >= b.max_connections, b.cx_active, b.max_connections),
                (b.rq_pending_open, b.rq_pending_active, b.max_pending_requests),
                (b.rq_open, b.rq_active, b.max_requests),
                (b.rq_retry_open, b.rq_retry_active, b.max_retries),
            ),
        )
        for node, b in breakers
    ]
    out = []
    for i, name in enumerate(_LIMIT_NAMES):
        best_node, best, best_rank = "", (False, 0, 0), (False, -1.0)
        any_open = False
        for node, limits in rows:
            is_open, active, limit = limits[i]
            any_open = any_open or is_open
            rank = (is_open, active / limit if limit > 0 else float(active > 0))
            if rank > best_rank:
                best_node, best, best_rank = node, limits[i], rank
        out.append(BreakerLimit(name, best[1], best[2], any_open, best_node))
    return tuple(out)
