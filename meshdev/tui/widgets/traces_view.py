"""The Traces tab: a line saying the order and how many traces are kept, and the list.
Painted only while the tab shows (as the pods and security tabs): the app hands it the store
when it is switched to, and again whenever new spans arrive while it stays."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from meshdev.telemetry.aggregation.trace_store import Order, TraceStore
from meshdev.telemetry.aggregation.traces import Trace
from meshdev.tui.logic.traces import ORDER_TITLES, next_order
from meshdev.tui.tables.traces import TracesTable

NO_FEED = "no trace source here"
NO_SPANS_ENDPOINT = (
    "none of the watched proxies keeps spans (GET /spans answered 404): older meshdev "
    "sidecars, or Envoys, which send theirs to a collector"
)
NO_ANSWER = "no sidecar has answered GET /spans yet"
NONE_YET = (
    "no traces yet: send requests through the ingress (l starts the load generator); the "
    "sidecars trace as `tracing: {sampling: N}` in mesh.yaml says (100% unless set)"
)


class TracesView(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.order: Order = "newest"
        self.store: TraceStore | None = None
        self.outcomes: Mapping[str, int] = {}
        self.shown: list[Trace] = []
        self._line = Text()

    def compose(self) -> ComposeResult:
        yield Static("", id="traces-line")
        yield TracesTable(id="traces-table")

    @property
    def table(self) -> TracesTable:
        return self.query_one("#traces-table", TracesTable)

    @property
    def line_text(self) -> str:
        return self._line.plain

    def show(self, store: TraceStore | None, outcomes: Mapping[str, int] | None = None) -> None:
        """`outcomes`: how the sidecars answered /spans, to say why there is nothing yet."""
        self.store = store
        if outcomes is not None:
            self.outcomes = outcomes
        self.shown = store.select(self.order) if store is not None else []
        self.table.show(self.shown)
        self._set_line(self._line_for(store))

    def cycle_order(self) -> str:
        self.order = next_order(self.order)
        self.show(self.store, self.outcomes)
        return ORDER_TITLES[self.order]

    def selected(self) -> Trace | None:
        key = self.table.cursor_key
        return next((t for t in self.shown if t.trace_id == key), None)

    def _line_for(self, store: TraceStore | None) -> Text:
        if store is None:
            return Text(NO_FEED, style="dim")
        if not len(store):
            answered = self.outcomes.get("ok", 0)
            if not answered and self.outcomes.get("missing", 0):
                return Text(NO_SPANS_ENDPOINT, style="dim")
            if not answered and self.outcomes.get("error", 0):
                return Text(NO_ANSWER, style="dim")
            return Text(NONE_YET, style="dim")
        out = Text()
        out.append(ORDER_TITLES[self.order], style="bold")
        failed = sum(t.failed for t in store.traces())
        out.append(f"  {len(self.shown)} shown of {len(store)} kept, ")
        out.append(f"{failed} failed", style="bold red" if failed else "")
        out.append("   s: order   enter: waterfall", style="dim")
        return out

    def _set_line(self, line: Text) -> None:
        if line.plain != self._line.plain or line.spans != self._line.spans:
            self._line = line
            self.query_one("#traces-line", Static).update(line)
