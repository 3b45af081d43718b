"""Clusters: endpoints, and the circuit breaker's state *now* with its recent trips.

Envoy's breakers are limits, not latched states: a request over a limit gets 503 UO at once
and the next one may pass. So "open" means a limit is reached right now, and the trips per
second with a short timeline show what happened just before.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from meshdev.telemetry.aggregation.view import BreakerLimit, ClusterStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.tables.keyed import Column, KeyedTable, Row

TIMELINE_WIDTH = 12
LIMIT_NAMES = {
    "max_connections": "cx",
    "max_pending_requests": "pend",
    "max_requests": "rq",
    "max_retries": "retry",
}


# Envoy's breakers are momentary: a trip stays on screen this many intervals (~3 s at 4 Hz)
# so that a person (or a frame skipped by the pacer) does not miss it.
TRIP_MEMORY = 12


def breaker_cell(c: ClusterStats) -> Text:
    if c.open_now:
        return Text(" OPEN ", style="bold white on red")
    if c.trips_per_s > 0 or any(t > 0 for t in c.trip_history[-TRIP_MEMORY:]):
        return Text("tripped", style="bold yellow")
    return Text("closed", style="green")


def limits_cell(limits: Iterable[BreakerLimit]) -> Text:
    out = Text()
    for limit in limits:
        if out:
            out.append("  ")
        name = LIMIT_NAMES.get(limit.name, limit.name)
        style = "bold red" if limit.open else "yellow" if limit.active else "dim"
        out.append(f"{name} {limit.active}/{limit.limit}", style=style)
    return out


def timeline_cell(history: tuple[float, ...], step: int) -> Text:
    bars = fmt.per_step(history, step, TIMELINE_WIDTH)
    return Text(fmt.sparkline(bars, TIMELINE_WIDTH, zero=fmt.GLYPHS[0]), style="red")


def cluster_row(c: ClusterStats, timeline: Text | None = None) -> Row:
    endpoints = Text(f"{c.healthy}/{c.endpoints}", style="green" if c.healthy else "bold red")
    cells = (
        c.name,
        breaker_cell(c),
        fmt.right(Text(fmt.rate(c.trips_per_s), style="bold red" if c.trips_per_s else "dim")),
        timeline if timeline is not None else timeline_cell(c.trip_history, 1),
        fmt.right(endpoints),
        fmt.right(Text(str(c.ejected), style="bold red" if c.ejected else "dim")),
        limits_cell(c.limits),
        fmt.right(fmt.rate(c.rps)),
        fmt.right(fmt.success(c.success_pct)),
    )
    return Row(cells, {"cluster": c.name, "trips": c.trips_per_s, "rps": c.rps})


class ClustersTable(KeyedTable):
    TITLE = "Clusters  (breaker state now)"
    COLUMNS = (
        Column("cluster", "CLUSTER"),
        Column("breaker", "BREAKER", 7),
        Column("trips", "TRIPS/s", 7),
        Column("timeline", "TIMELINE", TIMELINE_WIDTH),
        Column("endpoints", "HEALTHY", 7),
        Column("ejected", "EJECTED", 7),
        Column("limits", "ACTIVE/LIMIT"),
        Column("rps", "RPS", 7),
        Column("success", "SUCCESS", 8),
    )
    SORTABLE = ("trips", "rps", "cluster")
    DESCENDING = frozenset({"trips", "rps"})

    def show(self, clusters: Iterable[ClusterStats], step: int = 1, trends: bool = True) -> None:
        """As RoutesTable.show: the trip timeline moves once a second, a bar per second."""
        rows = {}
        for c in clusters:
            kept = None if trends else self.kept_cell(c.name, "timeline")
            rows[c.name] = cluster_row(
                c, kept if kept is not None else timeline_cell(c.trip_history, step)
            )
        self.sync(rows)
