"""Routes, Linkerd-style: RPS, success rate, latency percentiles, retries and a trend line;
the flags column also shows a route's open upgraded (WebSocket) connections."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from meshdev.telemetry.aggregation.view import FLAGS, RouteStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.tables.keyed import Column, KeyedTable, Row

SPARK_WIDTH = 12


def flags_cell(flags_per_s: dict[str, float], upgrades_open: int = 0) -> Text:
    """The response flags per second (as RPS beside them: UO 50 of RPS 100 is half the
    requests), most telling first (UO before RL, as FLAGS orders), after the route's open
    upgraded (WebSocket) connections, `WS <n>` (a count, not a rate), when it has any: the
    column holds what is unusual about a route, and long-lived connections are."""
    out = Text()
    if upgrades_open:
        out.append("WS", style="bold cyan")
        out.append(f" {upgrades_open}")
    for flag in FLAGS:
        rate = flags_per_s.get(flag, 0.0)
        if rate > 0:
            if out:
                out.append(" ")
            out.append(flag, style="bold red" if flag in ("UO", "UH", "UF", "UT") else "yellow")
            out.append(f" {fmt.rate(rate)}")
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
        flags_cell(r.flags_per_s, r.upgrades_open),
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
    # Narrow terminals keep Linkerd's golden signals (rate, success, the tail latency) and
    # the flags that say why requests failed; the trend (RPS says it now) gives way first,
    # then the lower percentiles (P99 bounds them), and the retries last: they are what
    # keeps success up while a replica fails. 80 columns: all but the trend and P50 (fewer
    # where many flags widen FLAGS/s); 120: all.
    COLUMNS = (
        Column("route", "ROUTE"),
        Column("rps", "RPS", 7),
        Column("success", "SUCCESS", 8),
        Column("p50", "P50", 7, drop=3),
        Column("p95", "P95", 7, drop=2),
        Column("p99", "P99", 7),
        Column("retries", "RETRY/s", 7, drop=1),
        Column("trend", "RPS TREND", SPARK_WIDTH, drop=4),
        Column("flags", "FLAGS/s"),
    )
    SORTABLE = ("rps", "success", "p99", "retries", "route")
    DESCENDING = frozenset({"rps", "p50", "p95", "p99", "retries"})

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        # The route the load key's requests take (load_control.load_route): f and w act on
        # the cursor's route, and the cursor sits there until the user moves it, rather than
        # on the top row, which the load may never reach.
        self.home: str | None = None
        self._placed: str | None = None  # where the cursor was last put for `home`
        self.user_moved = False

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
        self._keep_home()

    def _keep_home(self) -> None:
        """Put the cursor on `home`, unless the user moved it: a cursor elsewhere than where
        it was put (or, before that, off the top row) was moved by a key or a click, and
        stays the user's from then on. Sorting keeps the cursor on its route, so it is no
        move."""
        if self.user_moved or self.home is None:
            return
        cursor = self.cursor_key
        moved = (cursor != self._placed) if self._placed is not None else self.cursor_row > 0
        if moved:
            self.user_moved = True
            return
        keys = self.keys
        if self.home not in keys:
            return
        if cursor != self.home:
            self.move_cursor(row=keys.index(self.home), animate=False)
        self._placed = self.home
