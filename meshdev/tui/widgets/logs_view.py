"""Logs of every app and sidecar: pick a source on the left, filter it with a regex (each
source keeps its own), matches highlighted.

Only the selected source is followed (an exclusive worker), so a mesh of many pods costs one
file or stream at a time. Lines are written in batches a few times a second, because writing
a long backlog line by line would stall the screen.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import Input, OptionList, RichLog, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState

from meshdev.runtime.base import Container
from meshdev.tui.messages import WorkerFailed

LogReader = Callable[[str, Container], AsyncIterator[str]]
Source = tuple[str, Container]

KEEP_LINES = 5000  # of the followed source, for re-filtering
SHOW_LINES = 1000
FLUSH_S = 0.2
MATCH_STYLE = "bold black on yellow"


def source_id(source: Source) -> str:
    return f"{source[0]}:{source[1]}"


def compile_filter(text: str) -> re.Pattern[str] | None:
    """None for an empty filter; raises re.error for a bad one."""
    return re.compile(text, re.IGNORECASE) if text else None


def render_line(line: str, pattern: re.Pattern[str] | None) -> Text | None:
    """The line with its matches highlighted, or None when the filter hides it."""
    text = Text(line)
    if pattern is None:
        return text
    if not pattern.search(line):
        return None
    text.highlight_regex(pattern, style=MATCH_STYLE)
    return text


class LogsView(Vertical):
    def __init__(self, reader: LogReader | None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.reader = reader
        self.sources: list[Source] = []
        self.current: Source | None = None
        self.filters: dict[Source, str] = {}
        self.lines: deque[str] = deque(maxlen=KEEP_LINES)
        self.shown = 0
        self._pending: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self._bad_filter: str | None = None
        self._flusher: Timer | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield OptionList(id="log-sources")
            with Vertical(id="log-main"):
                yield Input(placeholder="regex filter for this source (/)", id="log-filter")
                yield RichLog(id="log-lines", max_lines=SHOW_LINES, wrap=False, markup=False)
                yield Static("", id="log-status")

    def on_mount(self) -> None:
        self._flusher = self.set_interval(FLUSH_S, self._flush, pause=True)

    def set_sources(self, sources: Sequence[Source]) -> None:
        if list(sources) == self.sources:
            return
        self.sources = list(sources)
        options = self.query_one("#log-sources", OptionList)
        options.clear_options()
        options.add_options([Option(source_id(s), id=source_id(s)) for s in self.sources])
        if self.current in self.sources:
            options.highlighted = self.sources.index(self.current)
        elif self.sources:
            options.highlighted = 0

    @on(OptionList.OptionHighlighted, "#log-sources")
    def _picked(self, event: OptionList.OptionHighlighted) -> None:
        index = event.option_index
        if 0 <= index < len(self.sources):
            self.follow(self.sources[index])

    def follow(self, source: Source) -> None:
        if source == self.current:
            return
        self.current = source
        self.lines.clear()
        self._pending.clear()
        self.query_one("#log-lines", RichLog).clear()
        filter_input = self.query_one("#log-filter", Input)
        with filter_input.prevent(Input.Changed):
            filter_input.value = self.filters.get(source, "")
        self._set_pattern(filter_input.value)
        if self.reader is None:
            self._status("no logs: this dashboard is not running the mesh")
            return
        self.run_worker(
            self._follow(self.reader, source),
            group="logs",
            exclusive=True,
            exit_on_error=False,
            description=f"following {source_id(source)}",
        )
        if self._flusher is not None:
            self._flusher.resume()

    async def _follow(self, reader: LogReader, source: Source) -> None:
        async for line in reader(*source):
            self._pending.append(line)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # Worker state messages do not bubble: say it here, or a failed follow goes unseen.
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self._status(Text(f"cannot follow this log: {error}", style="bold red"))
            self.post_message(
                WorkerFailed(event.worker.description, f"{type(error).__name__}: {error}")
            )

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self.current is None:
            return
        if self._set_pattern(event.value):
            self.filters[self.current] = event.value
            self._rewrite()

    def _set_pattern(self, text: str) -> bool:
        try:
            self._pattern = compile_filter(text)
        except re.error as exc:
            # Kept until the filter compiles: lines flushed meanwhile must not hide it.
            self._bad_filter = f"bad regex: {exc}"
            self._update_status()
            return False
        self._bad_filter = None
        self._update_status()
        return True

    def _rewrite(self) -> None:
        log = self.query_one("#log-lines", RichLog)
        log.clear()
        self.shown = 0
        self._write(list(self.lines)[-SHOW_LINES * 4 :])
        self._update_status()

    def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        self.lines.extend(batch)
        self._write(batch[-SHOW_LINES * 4 :])
        self._update_status()

    def _write(self, lines: Sequence[str]) -> None:
        log = self.query_one("#log-lines", RichLog)
        shown = [t for t in (render_line(line, self._pattern) for line in lines) if t is not None]
        for text in shown[-SHOW_LINES:]:
            log.write(text)
        self.shown += len(shown)

    def _update_status(self) -> None:
        if self.current is None:
            self._status("no source")
            return
        if self._bad_filter is not None:
            kept = self.filters.get(self.current, "")
            self._status(Text(f"{self._bad_filter} (still showing /{kept}/)", style="bold red"))
            return
        what = f"{source_id(self.current)}: {len(self.lines)} lines"
        if self._pattern is not None:
            what += f", {self.shown} match /{self._pattern.pattern}/"
        self._status(what)

    def _status(self, text: str | Text) -> None:
        self.query_one("#log-status", Static).update(text)

    def focus_filter(self) -> None:
        self.query_one("#log-filter", Input).focus()

    def on_key(self, event: events.Key) -> None:
        # The filter takes every printable key, the dashboard's too (1-6, q, l...): without a
        # way out, a user who typed a filter could only Tab around to reach the keys again.
        # The filter stays as typed; `/` comes back to it.
        if event.key == "escape" and self.query_one("#log-filter", Input).has_focus:
            event.stop()
            self.query_one("#log-lines", RichLog).focus()
