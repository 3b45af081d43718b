"""Events: reloads, rejected configs, code rolls, breaker trips, ejections, container exits,
actions."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widgets import RichLog

from meshdev.telemetry.aggregation.view import Event

MAX_EVENTS = 2000
KIND_STYLES = {
    "reload": "green",
    "roll": "green",
    "rejected": "bold red",
    "breaker": "bold red",
    "ejection": "bold magenta",
    "return": "cyan",
    "exit": "bold red",
    "sidecar": "yellow",
    "load": "blue",
    "action": "blue",
    "error": "bold red",
    "info": "dim",
}


def event_line(event: Event) -> Text:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
    line = Text(f"{stamp} ", style="dim")
    line.append(f"{event.kind:<8} ", style=KIND_STYLES.get(event.kind, ""))
    line.append(event.text)
    return line


class EventsLog(RichLog):
    # Enter on the events: a failed trace through the newest breaker or ejection's cluster.
    BINDINGS = [Binding("enter", "app.trace", "Trace", show=False)]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=MAX_EVENTS, wrap=True, markup=False, auto_scroll=True)
        self.count = 0
        self.texts: list[str] = []  # plain lines, newest last (what tests and copy read)

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            line = event_line(event)
            self.write(line)
            self.texts.append(line.plain)
            self.count += 1
        del self.texts[:-MAX_EVENTS]
