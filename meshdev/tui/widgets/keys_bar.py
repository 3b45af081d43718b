"""The footer of keys: one fixed line, drawn again only when the terminal's width changes.

Textual's Footer rebuilds itself whenever focus or the active bindings change, which made
every tab switch cost tens of milliseconds; the dashboard's keys never change, so a line of
text says the same for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual.widgets import Static

# The keys at the end of the line that a narrow terminal must not cut off: with them a user
# finds every other key (`?`) and the way out (`q`).
KEPT_AT_END = 2


def keys_text(keys: Sequence[tuple[str, str]], width: int | None = None) -> Text:
    """The keys as one line; within `width`, the keys just before the last KEPT_AT_END are
    left out (the help lists them all) rather than the line being cut at its end."""
    keys = list(keys)
    if width is not None:
        while len(keys) > KEPT_AT_END + 1 and _length(keys) > width:
            del keys[-KEPT_AT_END - 1]
    out = Text(no_wrap=True, overflow="ellipsis")
    for key, label in keys:
        out.append(f" {key} ", style="bold reverse")
        out.append(f" {label} ")
    return out


def _length(keys: Sequence[tuple[str, str]]) -> int:
    return sum(len(key) + len(label) + 4 for key, label in keys)


class KeysBar(Static):
    DEFAULT_CSS = """
    KeysBar {
        height: 1;
        dock: bottom;
        background: $panel;
    }
    """

    def __init__(self, keys: Sequence[tuple[str, str]], *, id: str | None = None) -> None:
        self.keys = tuple(keys)
        self.text = keys_text(self.keys)
        super().__init__(self.text, id=id)

    def on_resize(self, event: events.Resize) -> None:
        text = keys_text(self.keys, event.size.width)
        if text.plain != self.text.plain:
            self.text = text
            self.update(text)
