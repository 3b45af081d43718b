"""Trace detail (Enter on a trace, or t on a failing route or event): the waterfall across
hops with each span's timing, status and flags, the span with the most time of its own, and
each failure explained by the mesh.yaml field behind it (tui/logic/traces.py)."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.traces import Trace
from meshdev.tui.logic.traces import BAR_WIDTH, bar_width, detail_text


class TraceDetailScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Back")]

    def __init__(self, trace: Trace, mesh: Mesh | None) -> None:
        super().__init__()
        self.trace = trace
        self.mesh = mesh
        self.bar_width = BAR_WIDTH

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="trace-box"):
            yield Static(self._text(), id="trace-body")

    def _text(self) -> Text:
        return detail_text(self.trace, self.mesh, self.bar_width)

    @property
    def text(self) -> str:
        return self._text().plain

    def on_resize(self, event: events.Resize) -> None:
        # The box's width less its border, padding and scrollbar: bars as wide as fits, so
        # a line never wraps.
        box = self.query_one("#trace-box", VerticalScroll)
        width = bar_width(box.size.width - 1)
        if width != self.bar_width:
            self.bar_width = width
            self.query_one("#trace-body", Static).update(self._text())

    def show(self, trace: Trace) -> None:
        """The same trace with more spans (a slow sidecar's arrived since it opened)."""
        if trace.trace_id == self.trace.trace_id and trace is not self.trace:
            self.trace = trace
            self.query_one("#trace-body", Static).update(self._text())
