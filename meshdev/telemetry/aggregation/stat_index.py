"""What one sidecar's stat names say: its routes, clusters, and which of them are its own app's.

Worked out once per set of names (the `stamp`), not per view: a sidecar's names change only
when traffic first reaches a new status code or route, or its config changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshdev.telemetry.aggregation.sidecar_interval import SidecarInterval
from meshdev.telemetry.aggregation.statnames import (
    CLUSTER,
    DS_TOTAL,
    FLAG,
    ROUTE,
    UPG_TOTAL,
    Meaning,
)
from meshdev.telemetry.aggregation.topology import RouteKey, Topology

# Istio's (and meshdev's) name for the cluster of a sidecar's own app, for sidecars whose
# config we could not read.
LOCAL_CLUSTER_PREFIX = "inbound|"
# The virtual host of the route every app sidecar's inbound listener uses.
INBOUND_VHOST = "inbound"

# (number of counter names, number of histogram names, id of the topology): cheap to take at
# every view, and it moves when a sidecar starts counting something new or gets a new config.
Stamp = tuple[int, int, int]


def is_local(cluster: str) -> bool:
    return cluster.startswith(LOCAL_CLUSTER_PREFIX)


@dataclass(frozen=True, slots=True)
class StatIndex:
    stamp: Stamp
    routes: tuple[RouteKey, ...]
    down_routes: frozenset[RouteKey]  # routes this sidecar counts the downstream side of
    clusters: tuple[str, ...]
    route_flags: frozenset[str]  # flags this sidecar counts per route itself
    local: frozenset[str]
    inbound: frozenset[RouteKey]  # the sidecar's own inbound route(s)
    # (gauge name, route) of the routes' open upgraded connections, the inbound one left out:
    # the one gauge per route a view reads, found here so no view scans every gauge.
    upgrade_gauges: tuple[tuple[str, RouteKey], ...] = ()


def index_stats(
    meaning: Callable[[str], Meaning | None],
    snap: SidecarInterval,
    topo: Topology | None,
    stamp: Stamp,
) -> StatIndex:
    route_keys: dict[RouteKey, None] = {}
    down: set[RouteKey] = set()
    cluster_names: dict[str, None] = {}
    route_flags: set[str] = set()
    upgrades: list[tuple[str, RouteKey]] = []
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
            elif m[2] == UPG_TOTAL:
                # Its gauge is made with it (at the route's first upgrade), named alike.
                upgrades.append((name.removesuffix("_total") + "_active", m[1]))
        elif m[0] == CLUSTER:
            cluster_names[m[1]] = None
    local = frozenset(
        {
            *(topo.local_clusters if topo is not None else ()),
            *(c for c in cluster_names if is_local(c)),
            *(b.cluster for b in snap.breakers if is_local(b.cluster)),
            *(h.cluster for h in snap.hosts if is_local(h.cluster)),
        }
    )
    # The inbound listener's route, unless the config really has a service so named.
    configured = {r.vhost for r in topo.routes} if topo is not None else set()
    inbound = frozenset(
        k for k in route_keys if k[0] == INBOUND_VHOST and INBOUND_VHOST not in configured
    )
    return StatIndex(
        stamp,
        tuple(k for k in route_keys if k not in inbound),
        frozenset(down),
        tuple(c for c in cluster_names if c not in local),
        frozenset(route_flags),
        local,
        inbound,
        tuple((g, k) for g, k in upgrades if k not in inbound),
    )
