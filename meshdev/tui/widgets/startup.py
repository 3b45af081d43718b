"""Start-up inside the app: image builds and pod starts with progress bars and a log tail;
a failure shows its cause and the way out (quit, which cleans up, or retry)."""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Label, ProgressBar, RichLog, Static

from meshdev.tui.messages import RetryStart
from meshdev.tui.widgets.keys_bar import KeysBar, keys_text

_STARTING = re.compile(r"^starting (\d+) pods")
_READY = re.compile(r"^pod (\S+) ready")
TAIL_LINES = 500


class StartupScreen(Screen[None]):
    BINDINGS = [
        Binding("q", "app.quit", "Quit"),
        Binding("r", "retry", "Retry"),
    ]

    def __init__(self, title: str, pods: int) -> None:
        super().__init__(id="startup")
        self.title_text = title
        self.pods = pods
        self.ready: list[str] = []
        self.failed = False

    def compose(self) -> ComposeResult:
        with Vertical(id="startup-box"):
            yield Static(Text(self.title_text, style="bold"), id="startup-title")
            yield Label("preparing: images and networks", id="prepare-label")
            yield ProgressBar(total=None, show_eta=False, id="prepare-bar")
            yield Label(f"pods ready: 0/{self.pods}", id="pods-label")
            yield ProgressBar(total=self.pods, show_eta=False, id="pods-bar")
            yield Static("", id="startup-error")
            yield RichLog(id="startup-log", max_lines=TAIL_LINES, wrap=True, markup=False)
        yield KeysBar((("q", "quit, removing what started"), ("?", "help")), id="startup-keys")

    def on_mount(self) -> None:
        self.query_one("#startup-error", Static).display = False

    def add_line(self, line: str) -> None:
        self.query_one("#startup-log", RichLog).write(Text(line))
        starting = _STARTING.match(line)
        if starting:
            self.pods = int(starting.group(1))
            self.query_one("#prepare-bar", ProgressBar).update(total=1, progress=1)
            self.query_one("#prepare-label", Label).update("prepared")
            self.query_one("#pods-bar", ProgressBar).update(total=self.pods)
        ready = _READY.match(line)
        if ready and ready.group(1) not in self.ready:
            self.ready.append(ready.group(1))
            self.query_one("#pods-bar", ProgressBar).update(progress=len(self.ready))
        self.query_one("#pods-label", Label).update(f"pods ready: {len(self.ready)}/{self.pods}")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Retry only means something once the start failed.
        return action != "retry" or self.failed

    def show_failure(self, cause: str) -> None:
        self.failed = True
        keys = (("q", "quit, removing what started"), ("r", "retry"), ("?", "help"))
        self.query_one("#startup-keys", KeysBar).update(keys_text(keys))
        error = self.query_one("#startup-error", Static)
        text = Text("meshdev up failed\n\n", style="bold")
        text.append(cause.rstrip() + "\n\n")
        text.append("Way out: ", style="bold")
        text.append("q quits (whatever started is removed); fix the cause and press r to retry.")
        error.update(text)
        error.display = True
        self.query_one("#prepare-bar", ProgressBar).update(total=1, progress=0)

    def reset(self) -> None:
        self.failed = False
        self.ready.clear()
        self.query_one("#startup-error", Static).display = False
        self.query_one("#prepare-bar", ProgressBar).update(total=None, progress=0)
        self.query_one("#pods-bar", ProgressBar).update(total=self.pods, progress=0)
        self.query_one("#startup-log", RichLog).clear()

    def action_retry(self) -> None:
        if self.failed:
            self.reset()
            self.post_message(RetryStart())
