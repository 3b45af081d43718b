"""Routes, Linkerd-style: RPS, success rate, latency percentiles, retries and a trend line;
the flags column also shows a route's open upgraded (WebSocket) connections."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from meshdev.telemetry.aggregation.view import FLAGS, RouteStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.tables.keyed import Column, KeyedTable, Row

SPARK_WIDTH = 12


def flags_cell(flags: dict[str, int], upgrades_open: int = 0) -> Text:
    """The interval's response flags, most telling first (UO before RL, as FLAGS orders),
    after the route's open upgraded (WebSocket) connections, `WS <n>`, when it has any: the
    column holds what is unusual about a route, and long-lived connections are."""
    out = Text()
    if upgrades_open:
        out.append("WS", style="bold cyan")
        out.append(f" {upgrades_open}")
    for flag in FLAGS:
        count = flags.get(flag, 0)
        if count:
            if out:
                out.append(" ")
            out.append(flag, style="bold red" if flag in ("UO", "UH", "UF", "UT") else "yellow")
            out.append(f" {count}")
    return out


def trend_cell(history: tuple[float, ...], step: int) -> Text:
    return Text(fmt.sparkline(fmt.per_step(history, step, SPARK_WIDTH), SPARK_WIDTH), "cyan")


def route_row(r: RouteStats, trend: Text | None = None) -> Row:
    """`trend`: the sparkline cell to show (the previous one, between its refreshes)."""
    cells = (
        r.key,
        fmt.right(fmt.rate(r.rps)),
        fmt.right(fmt.success(r.success_pct)),
        fmt.right(fmt.ms(r.p50)),
        fmt.right(fmt.ms(r.p95)),
        fmt.right(fmt.ms(r.p99)),
        fmt.right(fmt.rate(r.retries_per_s)),
        trend if trend is not None else trend_cell(r.history, 1),
        flags_cell(r.flags, r.upgrades_open),
    )
    return Row(
        cells,
        {
            "route": r.key,
            "rps": r.rps,
            "retries": r.retries_per_s,
            "success": r.success_pct,
            "p50": r.p50,
            "p95": r.p95,
            "p99": r.p99,
        },
    )


class RoutesTable(KeyedTable):
    """Enter on a row opens its detail (the app listens for RowSelected)."""

    TITLE = "Routes  (enter: detail, s: sort)"
    COLUMNS = (
        Column("route", "ROUTE"),
        Column("rps", "RPS", 7),
        Column("success", "SUCCESS", 8),
        Column("p50", "P50", 7),
        Column("p95", "P95", 7),
        Column("p99", "P99", 7),
        Column("retries", "RETRY/s", 7),
        Column("trend", "RPS TREND", SPARK_WIDTH),
        Column("flags", "FLAGS"),
    )
    SORTABLE = ("rps", "success", "p99", "retries", "route")
    DESCENDING = frozenset({"rps", "p50", "p95", "p99", "retries"})

    def show(self, routes: Iterable[RouteStats], step: int = 1, trends: bool = True) -> None:
        """`step`: views per bar of the trend; `trends`: redraw the trends in this frame.

        Trends move once a second rather than at every view: a sparkline that shifts 4
        times a second is hard to read and costs a redraw of every row.
        """
        rows = {}
        for r in routes:
            kept = None if trends else self.kept_cell(r.key, "trend")
            rows[r.key] = route_row(r, kept if kept is not None else trend_cell(r.history, step))
        self.sync(rows)
