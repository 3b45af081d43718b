"""Clusters: endpoints, and the circuit breaker's state *now* with its recent trips.

Envoy's breakers are limits, not latched states: a request over a limit gets 503 UO at once
and the next one may pass. A tcp cluster (Envoy's tcp_proxy relays to it) has connections, not
requests: its request columns show a dash, and its connections get columns of their own, which
appear only once a tcp cluster does. So "open" means a limit is reached right now, and the trips per
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


def dash() -> Text:
    """What a column shows for a row it means nothing to (a tcp cluster's RPS)."""
    return fmt.right(Text(fmt.DASH, style="dim"))


def tcp_cells(c: ClusterStats) -> tuple[Text, ...]:
    """A tcp cluster's connections: open now, opened and bytes relayed per second, failed
    connects per second; an http cluster's are dashes."""
    if c.protocol != "tcp":
        return tuple(dash() for _ in TCP_COLUMNS)
    fails = c.connect_fail_per_s
    return (
        fmt.right(Text(str(c.cx_active), style="" if c.cx_active else "dim")),
        fmt.right(fmt.rate(c.cx_per_s)),
        fmt.right(fmt.size(c.bytes_per_s)),
        fmt.right(Text(fmt.rate(fails), style="bold red" if fails else "dim")),
    )


def cluster_row(c: ClusterStats, timeline: Text | None = None, *, tcp: bool = False) -> Row:
    """`tcp`: the table shows the tcp columns (some cluster is tcp)."""
    endpoints = Text(f"{c.healthy}/{c.endpoints}", style="green" if c.healthy else "bold red")
    http = c.protocol != "tcp"
    cells: tuple[Text | str, ...] = (
        c.name,
        breaker_cell(c),
        fmt.right(Text(fmt.rate(c.trips_per_s), style="bold red" if c.trips_per_s else "dim")),
        timeline if timeline is not None else timeline_cell(c.trip_history, 1),
        fmt.right(endpoints),
        fmt.right(Text(str(c.ejected), style="bold red" if c.ejected else "dim")),
        limits_cell(c.limits),
        fmt.right(fmt.rate(c.rps)) if http else dash(),
        fmt.right(fmt.success(c.success_pct)) if http else dash(),
    )
    if tcp:
        cells += tcp_cells(c)
    return Row(cells, {"cluster": c.name, "trips": c.trips_per_s, "rps": c.rps if http else None})


# A tcp cluster's own numbers (Envoy's cluster.<c>.upstream_cx_active / _total /
# _rx_bytes_total + _tx_bytes_total / _connect_fail).
TCP_COLUMNS = (
    Column("cx_active", "CX", 5, drop=3),
    Column("cx_rate", "CX/s", 6, drop=5),
    Column("bytes", "BYTES/s", 8, drop=5),
    Column("cx_fail", "CX FAIL/s", 9, drop=4),
)


class ClustersTable(KeyedTable):
    TITLE = "Clusters  (breaker state now)"
    # Narrow terminals keep the breaker's state and limits; the trips' history, then the
    # cluster's traffic (the routes table has it per route) give way first (80 columns: name,
    # state, healthy endpoints and limits; 120: all but RPS).
    COLUMNS = (
        Column("cluster", "CLUSTER"),
        Column("breaker", "BREAKER", 7),
        Column("trips", "TRIPS/s", 7, drop=3),
        Column("timeline", "TIMELINE", TIMELINE_WIDTH, drop=3),
        Column("endpoints", "HEALTHY", 7, drop=2),
        Column("ejected", "EJECTED", 7, drop=2),
        Column("limits", "ACTIVE/LIMIT", drop=1),
        Column("rps", "RPS", 7, drop=5),
        Column("success", "SUCCESS", 8, drop=4),
    )
    SORTABLE = ("trips", "rps", "cluster")
    DESCENDING = frozenset({"trips", "rps"})

    def show(self, clusters: Iterable[ClusterStats], step: int = 1, trends: bool = True) -> None:
        """As RoutesTable.show: the trip timeline moves once a second, a bar per second.
        The tcp columns appear with the first tcp cluster, and stay."""
        clusters = tuple(clusters)
        tcp = len(self.shown_columns) > len(self.COLUMNS)
        if not tcp and any(c.protocol == "tcp" for c in clusters):
            self.append_columns(TCP_COLUMNS, dash())
            tcp = True
        rows = {}
        for c in clusters:
            kept = None if trends else self.kept_cell(c.name, "timeline")
            rows[c.name] = cluster_row(
                c, kept if kept is not None else timeline_cell(c.trip_history, step), tcp=tcp
            )
        self.sync(rows)
