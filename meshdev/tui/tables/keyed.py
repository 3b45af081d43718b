"""A DataTable whose rows are kept by key and changed cell by cell, never rebuilt.

Panels hand `sync` the full set of rows they want; the table adds new keys, removes gone
ones, and sets only the cells whose text or style changed (one repaint request per sync, for
the lines of the changed rows only), so a live table neither flickers nor loses its cursor
and scroll position (dolphie's way).
The caller wraps a frame's syncs in `App.batch_update()` so they paint once.

It tells its base (fast.py) which cells changed and when the layout moved, so a frame
renders only the changed cells.

Where the table is narrower than its columns, the least important ones (`Column.drop`) give
way, and come back when it widens: DataTable has no hidden columns, so the table is rebuilt
with the ones that fit (on a resize, or when a column grew), from the rows it keeps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist

from meshdev.tui.tables.cell_text import CellText
from meshdev.tui.tables.fast import Cell, FastDataTable

SortValue = float | str


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int | None = None
    # Where the table is too narrow for every column, those of the highest `drop` give way
    # first (the rightmost first among equals); 0: never (what tells rows apart, and what
    # the table is about).
    drop: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    cells: tuple[Cell, ...]
    # Column key -> the value it sorts by; a row without one (None) sorts last either way.
    sort: Mapping[str, SortValue | None]


def as_cell(value: Cell) -> CellText:
    if isinstance(value, CellText):
        return value
    if isinstance(value, str):
        return CellText(value, end="")
    return CellText(
        value.plain, style=value.style, justify=value.justify, end="", spans=value.spans
    )


def _same(a: Cell, b: Cell) -> bool:
    # rich's Text.__eq__ ignores the text's own style: a cell going from green to red must
    # still be updated.
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and str(a.style) == str(b.style) and a.spans == b.spans
    return type(a) is type(b) and a == b


class KeyedTable(FastDataTable):
    TITLE: ClassVar[str] = ""
    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    # Columns sortable with `s`, in the order the key cycles through them.
    SORTABLE: ClassVar[tuple[str, ...]] = ()
    # Sorts that read best largest-first (rates, latencies).
    DESCENDING: ClassVar[frozenset[str]] = frozenset()
    # Columns whose texts together tell rows apart (default: the first column).
    KEY_COLUMNS: ClassVar[tuple[str, ...]] = ()
    # A list whose new rows come in on top (the traces): a cursor on the top row stays there,
    # as `tail -f` follows the end. Else, and once moved down, the cursor keeps to its row,
    # which on such a list scrolls the view away from the new rows as they push it down.
    FOLLOW_TOP: ClassVar[bool] = False

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._rows: dict[str, Row] = {}
        # COLUMNS, and any a panel appended since (a new kind of row brought them).
        self.shown_columns: tuple[Column, ...] = self.COLUMNS
        # Keys of the columns that do not fit the table's width now (see `drop`), and the
        # positions in `shown_columns` of those that do: the table's columns, in order.
        self.hidden: frozenset[str] = frozenset()
        self._visible: tuple[int, ...] = tuple(range(len(self.COLUMNS)))
        self.sort_column: str | None = None
        self.updates = 0  # cells changed, for tests and the benchmark

    def on_mount(self) -> None:
        self.border_title = self.TITLE
        for column in self.COLUMNS:
            self.add_column(column.label, key=column.key, width=column.width)

    def on_resize(self, _: events.Resize) -> None:
        self._fit()

    @property
    def visible_columns(self) -> tuple[Column, ...]:
        return tuple(self.shown_columns[i] for i in self._visible)

    def _fit(self, *, rebuild: bool = False) -> None:
        """Show the columns that fit the table's width (all, where it is not laid out yet);
        `rebuild`: rebuild the table even if they are the same (its columns changed)."""
        room = self.scrollable_content_region.width
        hidden = self._overflowing(room) if room > 0 else frozenset()
        if hidden == self.hidden and not rebuild:
            return
        self.hidden = hidden
        self._visible = tuple(i for i, c in enumerate(self.shown_columns) if c.key not in hidden)
        self._rebuild()

    def _overflowing(self, room: int) -> frozenset[str]:
        """The columns to hide for the rest to fit in `room` cells, least important first."""
        droppable = [(i, c) for i, c in enumerate(self.shown_columns) if c.drop]
        if not droppable:  # most tables: no cells to measure (the traces' grow every second)
            return frozenset()
        widths = {c.key: self._column_width(i, c) for i, c in enumerate(self.shown_columns)}
        total = sum(widths.values())
        hidden: set[str] = set()
        for _, column in sorted(droppable, key=lambda ic: (-ic[1].drop, -ic[0])):
            if total <= room:
                break
            hidden.add(column.key)
            total -= widths[column.key]
        return frozenset(hidden)

    def _column_width(self, at: int, column: Column) -> int:
        """The cells a column takes, its padding included: an auto-width one is as wide as
        its widest cell (or label), as DataTable makes it."""
        width = column.width
        if width is None:
            widths = [cell_len(column.label)]
            widths += (cell_len(_plain(row.cells[at])) for row in self._rows.values())
            shown = self.columns.get(ColumnKey(column.key))
            if shown is not None:  # DataTable's auto widths only grow (see `_wider`)
                widths.append(shown.content_width)
            width = max(widths)
        return width + 2 * self.cell_padding

    def _rebuild(self) -> None:
        """The table anew, with the visible columns and every kept row (its cursor on the
        same row, its sort kept)."""
        cursor = self.cursor_key
        self.clear(columns=True)
        for column in self.visible_columns:
            self.add_column(column.label, key=column.key, width=column.width)
        for key, row in self._rows.items():
            self.add_row(*(as_cell(row.cells[i]) for i in self._visible), key=key)
        self.moved()
        self._apply_sort()
        if cursor is not None and cursor in self._rows:
            self.move_cursor(row=self.keys.index(cursor), animate=False)

    def append_columns(self, columns: Sequence[Column], filler: Cell) -> None:
        """Append columns to a live table; its rows show `filler` there until their next
        sync (which must then give every row a cell for them). For what only some rows have
        (the tcp clusters' connections): a table without such rows keeps its old look."""
        self.shown_columns = (*self.shown_columns, *columns)
        extra = (filler,) * len(columns)
        self._rows = {k: Row((*row.cells, *extra), row.sort) for k, row in self._rows.items()}
        self._fit(rebuild=True)

    @property
    def keys(self) -> list[str]:
        """Row keys in display order."""
        return [str(row.key.value) for row in self.ordered_rows]

    @property
    def cursor_key(self) -> str | None:
        if not self._rows or self.cursor_row < 0:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except CellDoesNotExist:
            return None

    def kept_cell(self, key: str, column: str) -> Text | None:
        """The cell shown now (None for a new row), to show it again unchanged."""
        row = self._rows.get(key)
        if row is None:
            return None
        at = next(i for i, c in enumerate(self.shown_columns) if c.key == column)
        cell = row.cells[at]
        return cell if isinstance(cell, Text) else Text(cell)

    def cell_text(self, key: str, column: str) -> str:
        value = self.get_cell(key, column)
        return value.plain if isinstance(value, Text) else str(value)

    def sync(self, rows: Mapping[str, Row]) -> None:
        visible = self._visible
        relaid = False  # rows or columns moved: every line shows something else
        for key in [k for k in self._rows if k not in rows]:
            del self._rows[key]
            try:
                self.remove_row(key)
            except RowDoesNotExist:
                continue
            self.moved()
            relaid = True
        # Rows of which only some cells changed, in a table whose layout stayed.
        dirty: dict[str, None] = {}
        for key, wanted in rows.items():
            old = self._rows.get(key)
            if old is None:
                # Plain strings would be parsed as console markup by DataTable (a name with a
                # "[" in it would vanish); CellText also renders without Text's wrapping.
                self.add_row(*(as_cell(wanted.cells[i]) for i in visible), key=key)
                self.updates += len(wanted.cells)
                self.moved()
                relaid = True
            else:
                # Compared as given: most cells of a row are unchanged from the last view.
                for i in visible:
                    before, after = old.cells[i], wanted.cells[i]
                    if _same(before, after):
                        continue
                    column = self.shown_columns[i]
                    self.updates += 1
                    if column.width is None and self._wider(column.key, after):
                        self.update_cell(key, column.key, as_cell(after), update_width=True)
                        self.moved()  # a wider column shifts every cell right of it
                        relaid = True
                    else:
                        self.set_cell(key, column.key, as_cell(after))
                        dirty[key] = None
            self._rows[key] = wanted
        if relaid:
            self.refresh()
        else:
            self.refresh_rows(dirty)  # only the changed rows' lines
        self._apply_sort()
        if relaid:
            # New rows or a wider column: the columns that fit may be others now.
            self._fit()

    def _wider(self, column: str, cell: Cell) -> bool:
        # Auto-width columns only ever grow: re-measuring them for every changed cell would
        # re-lay out the screen at every frame, and a column that shrinks and grows back
        # makes the table jitter.
        current = self.columns[ColumnKey(column)].content_width
        return cell_len(_plain(cell)) > current

    def cycle_sort(self) -> str:
        """Move to the next sortable column (or back to the natural order); its name."""
        options: list[str | None] = [None, *self.SORTABLE]
        at = options.index(self.sort_column) if self.sort_column in options else 0
        self.sort_column = options[(at + 1) % len(options)]
        self._apply_sort()
        if self.sort_column is None:
            return "natural order"
        return next(c.label for c in self.shown_columns if c.key == self.sort_column)

    def _wanted_order(self) -> list[str]:
        column = self.sort_column
        if column is None:
            return list(self._rows)  # the order rows were first seen in
        descending = column in self.DESCENDING

        def value(key: str) -> tuple[int, SortValue, str]:
            raw = self._rows[key].sort.get(column)
            if raw is None:
                return (1, 0.0, key)  # rows without a value go last either way
            if descending and isinstance(raw, float | int):
                return (0, -raw, key)
            return (0, raw, key)

        return sorted(self._rows, key=value)

    def _apply_sort(self) -> None:
        wanted = self._wanted_order()
        if wanted == self.keys:
            return
        cursor = self.cursor_key
        on_top = self.cursor_row == 0
        # DataTable.sort sees cell values, not row keys: rank rows by their key columns.
        columns = list(self.KEY_COLUMNS or (self.COLUMNS[0].key,))
        at = [next(i for i, c in enumerate(self.shown_columns) if c.key == k) for k in columns]
        rank = {
            tuple(_plain(self._rows[key].cells[i]) for i in at): n for n, key in enumerate(wanted)
        }

        def position(cells: object) -> int:
            parts = cells if isinstance(cells, tuple) else (cells,)
            return rank.get(tuple(_plain(c) for c in parts), len(rank))

        self.sort(*columns, key=position)
        self.moved()
        if self.FOLLOW_TOP and on_top:
            self.move_cursor(row=0, animate=False)
        elif cursor is not None and cursor in wanted:
            self.move_cursor(row=wanted.index(cursor), animate=False)


def _plain(cell: object) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)
