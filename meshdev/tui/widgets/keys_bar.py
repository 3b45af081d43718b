"""The footer of keys: one fixed line, drawn once.

Textual's Footer rebuilds itself whenever focus or the active bindings change, which made
every tab switch cost tens of milliseconds; the dashboard's keys never change, so a line of
text says the same for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static


def keys_text(keys: Sequence[tuple[str, str]]) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    for key, label in keys:
        out.append(f" {key} ", style="bold reverse")
        out.append(f" {label} ")
    return out


class KeysBar(Static):
    DEFAULT_CSS = """
    KeysBar {
        height: 1;
        dock: bottom;
        background: $panel;
    }
    """

    def __init__(self, keys: Sequence[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__(keys_text(keys), id=id)
