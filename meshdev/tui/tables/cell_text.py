"""A table cell's text, rendered to one line of segments without Text's word wrapping."""

from __future__ import annotations

from collections.abc import Iterable

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.segment import Segment
from rich.text import Text


class CellText(Text):
    """A one-line cell: rendered straight to segments, skipping Text's word wrapping.

    Wrapping a short single-line text is most of what rendering a cell costs, and a table
    cell never wraps (rows are one line high).
    """

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterable[Segment]:
        if "\n" in self.plain or "\t" in self.plain:
            yield from super().__rich_console__(console, options)
            return
        # Left-justified cells are padded by the table itself.
        yield from self._line(console, options.max_width, options.justify)

    def line(self, console: Console, width: int) -> list[Segment] | None:
        """The cell's one line, exactly `width` cells wide, padded as DataTable pads it
        (None for a text of several lines)."""
        if "\n" in self.plain or "\t" in self.plain:
            return None
        segments = self._line(console, width, None)
        excess = width - Segment.get_line_length(segments)
        return [*segments, Segment(" " * excess)] if excess > 0 else segments

    def _line(self, console: Console, width: int, justify: str | None) -> list[Segment]:
        plain = self.plain
        base = console.get_style(self.style) if self.style else None
        # Text.render applies the text's own style only through its spans.
        segments = list(self.render(console)) if self.spans else [Segment(plain, base)]
        excess = width - cell_len(plain)
        if excess < 0:
            return Segment.adjust_line_length(segments, width)
        if (self.justify or justify) == "right" and excess:
            return [Segment(" " * excess, base), *segments]
        return segments
