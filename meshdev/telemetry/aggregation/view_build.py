"""One view's tallies -> its `RouteStats`, `ClusterStats` and `HostStats`.

Clusters and hosts are merged over sidecars: each sidecar has its own breakers and its own
outlier detection, so a limit shows the sidecar nearest to it and a host counts as ejected
when any sidecar ejects it.
"""

from __future__ import annotations

from collections.abc import Collection

from meshdev.common.breaker_view import BreakerView
from meshdev.telemetry.aggregation.history import History
from meshdev.telemetry.aggregation.latency import latency
from meshdev.telemetry.aggregation.tally import ClusterTally, HostTally, RouteTally
from meshdev.telemetry.aggregation.topology import RouteKey
from meshdev.telemetry.aggregation.view import BreakerLimit, ClusterStats, HostStats, RouteStats

_LIMIT_NAMES = ("max_connections", "max_pending_requests", "max_requests", "max_retries")


def route_stats(routes: dict[RouteKey, RouteTally], history: History) -> tuple[RouteStats, ...]:
    """`history`: the routes' rps series, one value pushed per view."""
    out = []
    history.begin()
    for key in sorted(routes):
        r = routes[key]
        side = r.side
        rps = side.rps
        (p50, p95, p99), buckets = latency(r.hists)
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
                flags_per_s=r.flag_rates,
                latency_buckets=buckets,
                history=history.push(key, rps),
                upgrades=r.upgrades,
                upgrades_open=r.upgrades_open,
                grpc_codes=r.grpc,
            )
        )
    history.end()
    return tuple(out)


# cluster -> the breakers its limits were last worked out from, those limits, and its callers'
# open connections (a sum over every sidecar's breaker: 41 x 20 clusters at every view)
LimitsCache = dict[str, tuple[list[tuple[str, BreakerView]], tuple[BreakerLimit, ...], int]]


def cluster_stats(
    clusters: dict[str, ClusterTally],
    hosts: dict[tuple[str, str], HostTally],
    history: History,
    limits_cache: LimitsCache | None = None,
) -> tuple[ClusterStats, ...]:
    """`history`: the clusters' breaker trips per second, one value pushed per view;
    `limits_cache`: kept between views, so limits are worked out again only when a breaker
    changed (readers of the v2 stream hand on the same `BreakerView` while it does not)."""
    endpoints: dict[str, int] = {}
    ejected: dict[str, int] = {}
    for (cluster, _), h in hosts.items():
        endpoints[cluster] = endpoints.get(cluster, 0) + 1
        if h.ejected_by:
            ejected[cluster] = ejected.get(cluster, 0) + 1
    out = []
    history.begin()
    for name in sorted(clusters):
        c = clusters[name]
        limits, cx_active = _cached_limits(name, c.breakers, limits_cache)
        if c.tcp:
            # A relayed connection takes no request, pending or retry slot.
            limits = tuple(lim for lim in limits if lim.name == "max_connections")
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
                protocol="tcp" if c.tcp else "http",
                cx_active=cx_active,
                cx_per_s=c.cx,
                bytes_per_s=c.bytes,
                connect_fail_per_s=c.fail,
            )
        )
    history.end()
    return tuple(out)


def host_stats(
    hosts: dict[tuple[str, str], HostTally], tcp: Collection[str] = ()
) -> tuple[HostStats, ...]:
    """`tcp`: the clusters a tcp_proxy relays to (their hosts count connections)."""
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
                protocol="tcp" if cluster in tcp else "http",
            )
        )
    out.sort(key=lambda h: (h.cluster, h.pod, h.address))
    return tuple(out)


def _cached_limits(
    name: str, breakers: list[tuple[str, BreakerView]], cache: LimitsCache | None
) -> tuple[tuple[BreakerLimit, ...], int]:
    """The cluster's limits and its callers' open connections."""
    if cache is not None:
        cached = cache.get(name)
        if cached is not None:
            before, limits, cx_active = cached
            if len(before) == len(breakers) and all(
                a[1] is b[1] and a[0] == b[0] for a, b in zip(before, breakers, strict=True)
            ):
                return limits, cx_active
    limits = _limits(breakers)
    cx_active = sum(b.cx_active for _, b in breakers)
    if cache is not None:
        cache[name] = (breakers, limits, cx_active)
    return limits, cx_active


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
