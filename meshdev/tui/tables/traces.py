"""The Traces view's list: one row per trace, in the order the view asks for (newest,
slowest, or failed only), updated by key as new spans arrive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text

from meshdev.telemetry.aggregation.traces import Trace
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic import traces as words
from meshdev.tui.tables.keyed import Column, KeyedTable, Row

# Rows shown at most: the store keeps more, and a list longer than a screen or two is
# scrolled by nobody (--limit on the command line shows any number).
MAX_ROWS = 200


def trace_row(t: Trace) -> Row:
    cells = (
        words.clock(t.start_us),
        t.trace_id[:12],
        Text(t.route or "?", style="bold red" if t.failed else ""),
        words.services_path(t),
        fmt.right(words.ms(t.duration_us)),
        fmt.right(str(t.span_count)),
        words.status_cell(t),
    )
    return Row(cells, {})


class TracesTable(KeyedTable):
    TITLE = "Traces"
    COLUMNS = (
        Column("time", "TIME"),
        Column("trace", "TRACE"),
        Column("route", "ROUTE"),
        Column("services", "SERVICES"),
        Column("total", "TOTAL"),
        Column("spans", "SPANS"),
        Column("status", "STATUS"),
    )
    # Trace ids are unique in their first 12 digits but for a one-in-2^48 chance; the start
    # time settles that too.
    KEY_COLUMNS: ClassVar[tuple[str, ...]] = ("trace", "time")
    # Newest first, and the newest in view: the list followed the selected row down, so at
    # 100 requests a second it showed traces 2 s old (10 s at 20), its 200th row's age.
    FOLLOW_TOP: ClassVar[bool] = True

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._order: list[str] = []

    def show(self, traces: Sequence[Trace]) -> None:
        shown = list(traces[:MAX_ROWS])
        self._order = [t.trace_id for t in shown]
        self.sync({t.trace_id: trace_row(t) for t in shown})

    def _wanted_order(self) -> list[str]:
        # The view orders its traces itself (newest first puts new rows on top).
        return [k for k in self._order if k in self._rows]
