"""Which routes a cluster's or listener's response flags belong to.

A sidecar counts some flags per route itself; the others only per cluster (`UO`, `UT`, `UF`,
`UH`, `URX`) or per listener (`FI`, `DI`, `RL`). Those are shared among the routes that could
have caused them, in proportion to how often each route's callers got the flag's status, else
to each route's traffic, else to the route table's weights. What no route can own (`NR`, or a
listener's fault with no fault configured anywhere) is left unattributed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from meshdev.telemetry.aggregation.sidecar_interval import SidecarInterval
from meshdev.telemetry.aggregation.stat_index import StatIndex
from meshdev.telemetry.aggregation.statnames import CODE, DS_CODE, DS_TOTAL, ROUTE, TOTAL, Meaning
from meshdev.telemetry.aggregation.tally import RouteTally, bump, bump_flag
from meshdev.telemetry.aggregation.topology import RouteKey, Topology

# The status a flag's answer has (one digit: a class), to tell which route a shared
# cluster's or listener's flag belongs to.
FLAG_STATUS = {"UO": "503", "UH": "503", "UF": "503", "UT": "504", "URX": "5", "RL": "429"}


def split(n: int, weights: Sequence[float]) -> list[int]:
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


def _route_answers(
    meaning: Callable[[str], Meaning | None], snap: SidecarInterval, index: StatIndex
) -> tuple[dict[RouteKey, int], dict[RouteKey, dict[str, int]]]:
    """This sidecar's requests and status codes per route in the interval (only needed,
    so only computed, when a flag must be shared among routes)."""
    totals: dict[RouteKey, int] = {}
    codes: dict[RouteKey, dict[str, int]] = {}
    for name, n in snap.deltas.items():
        m = meaning(name)
        if m is None or m[0] != ROUTE or m[1] in index.inbound:
            continue
        key, what = m[1], m[2]
        down = key in index.down_routes
        if what == (DS_TOTAL if down else TOTAL):
            totals[key] = totals.get(key, 0) + n
        elif what == (DS_CODE if down else CODE):
            bump(codes.setdefault(key, {}), m[3], n)
    return totals, codes


def attribute(
    meaning: Callable[[str], Meaning | None],
    snap: SidecarInterval,
    topo: Topology | None,
    index: StatIndex,
    cluster_flags: list[tuple[str, str, int]],
    listener_flags: list[tuple[str, int]],
    routes: dict[RouteKey, RouteTally],
    unattributed: dict[str, int],
    inv: float,
) -> None:
    """Add one sidecar's cluster and listener flags of the interval to `routes`' flags
    (`inv`: 1 / the length of its interval, for their rates)."""
    totals, codes = _route_answers(meaning, snap, index)

    def answered(key: RouteKey, status: str) -> int:
        mine = codes.get(key)
        if not mine:
            return 0
        if len(status) == 1:  # a class: "5" for any 5xx
            return sum(n for c, n in mine.items() if c[0] == status)
        return mine.get(status, 0)

    def share(flag: str, n: int, candidates: Sequence[tuple[RouteKey, float]]) -> None:
        if not candidates:
            bump(unattributed, flag, n)
            return
        # The routes whose callers got the flag's status, in proportion to how often;
        # else in proportion to their traffic; else to the route table's weights.
        status = FLAG_STATUS.get(flag)
        weights = [answered(k, status) * s for k, s in candidates] if status else []
        if not any(weights):
            weights = [totals.get(k, 0) * s for k, s in candidates]
        if not any(weights):
            weights = [s for _, s in candidates]
        for (k, _), part in zip(candidates, split(n, weights), strict=True):
            if part:
                r = routes.get(k)
                if r is None:
                    r = routes[k] = RouteTally()
                bump_flag(r, flag, part, inv)

    for cluster, flag, n in cluster_flags:
        if flag not in index.route_flags:
            share(flag, n, topo.by_cluster.get(cluster, ()) if topo else ())
    for flag, n in listener_flags:
        if flag == "NR":
            bump(unattributed, flag, n)
        elif flag not in index.route_flags:
            keys = topo.by_feature.get(flag, ()) if topo else ()
            share(flag, n, [(k, 1.0) for k in keys])
