"""A DataTable that, at each frame, renders only the cells that changed, and cheaply.

Why: with 20 routes changing 4 times a second, DataTable's own rendering was most of the
dashboard's CPU. It keys every render cache on one table-wide update counter, so a single
`update_cell` renders every visible cell again; and each cell it renders goes through
Rich's generic layering (a Padding in a Styled, line splitting, a metadata style built anew),
while every row asks the CSS engine for its component styles by walking all ancestors.

Here (for one-line rows without labels or fixed columns, which is all meshdev draws):
- a cell's content is rendered once per version of that cell (`changed`), or of the
  layout (`moved`: rows or columns moved, a column grew), and kept;
- a row's line is joined from those contents with the row's styles (zebra, cursor, hover)
  applied on top, exactly as DataTable would (a unit test compares the two segment by
  segment);
- the styles a frame needs are computed once per frame, not once per row or line.
Everything else (headers, and tables unlike ours) takes DataTable's own path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._segment_tools import line_crop
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from meshdev.tui.tables.cell_text import CellText

if TYPE_CHECKING:
    from textual.coordinate import Coordinate
    from textual.widgets._data_table import RowRenderables

Cell = str | Text
SegmentLines = list[list[Segment]]


class FastDataTable(DataTable[Cell]):
    # False: DataTable's own path throughout (tests and the benchmark compare the two).
    fast: bool = True

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        # Set before DataTable.__init__, which already clears caches.
        # Render versions: a cell renders anew when its own version or the layout's is newer
        # than the rendering kept for it.
        self._cell_versions: dict[tuple[RowKey, ColumnKey], int] = {}
        self._row_versions: dict[RowKey, int] = {}
        self._layout_version = 0
        # (row, column) -> (version, width, content segments without the row's styles).
        self._contents: dict[tuple[RowKey, ColumnKey], tuple[int, int, list[Segment]]] = {}
        # Row -> (what its line was painted for, the line): one line kept per row.
        self._lines: dict[RowKey, tuple[tuple[object, ...], tuple[SegmentLines, SegmentLines]]] = {}
        # (row, column) -> (content, styles applied, the styled segments).
        self._styled: dict[
            tuple[RowKey, ColumnKey], tuple[list[Segment], Style, Style, list[Segment]]
        ] = {}
        # Row -> (the line it was cut from, how it was cut, the Strip).
        self._strips: dict[RowKey, tuple[SegmentLines, tuple[object, ...], Strip]] = {}
        self._metas: dict[tuple[int, int], Style] = {}
        self._frame_styles: dict[str, Style] | None = None
        self._frame_width: int | None = None  # the widget's width during a frame
        # The widths the last frame was painted at (the widget's, then each column's).
        self._painted_layout: tuple[int, ...] = ()
        self.fast_rows = 0  # rows painted by the fast path
        self.lines_rendered = 0  # lines Textual asked the table for (it keeps the others)
        super().__init__(
            id=id, classes=classes, cursor_type="row", zebra_stripes=True, cell_padding=1
        )

    # -- versions -----------------------------------------------------------------------------

    def moved(self) -> None:
        """Rows or columns moved (or a column's width changed): every cell renders anew."""
        self._layout_version = self._update_count
        self._cell_versions.clear()
        self._row_versions.clear()
        self._contents.clear()
        self._styled.clear()
        self._lines.clear()
        self._strips.clear()

    def changed(self, row: str, column: str) -> None:
        """One cell's content changed (after `update_cell`)."""
        key = RowKey(row)
        self._cell_versions[(key, ColumnKey(column))] = self._update_count
        self._row_versions[key] = self._update_count

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._contents.clear()
        self._styled.clear()
        self._lines.clear()
        self._strips.clear()

    def set_cell(self, row: str, column: str, value: Cell) -> None:
        """`update_cell` for a cell whose column keeps its width, without a repaint request
        per cell: the caller calls `refresh()` once it has set all of a frame's cells."""
        row_key, column_key = RowKey(row), ColumnKey(column)
        self._data[row_key][column_key] = value
        self._update_count += 1
        self.changed(row, column)

    def refresh_rows(self, rows: Iterable[str]) -> None:
        """Repaint only the lines of these rows: Textual keeps every other line of the table
        (borders and header included) from the last frame, and the compositor neither
        renders nor sends them to the terminal again. One repaint request for all of them;
        rows scrolled out of sight ask for none."""
        if any(row.height != 1 for row in self.rows.values()):
            self.refresh()  # not a table like meshdev's: a row's line is not its index
            return
        # DataTable.refresh_row's region, without its walk over every row above it (per row).
        top = self.header_height if self.show_header else 0
        width = max(
            self.size.width,
            sum(c.get_render_width(self) for c in self.columns.values())
            + self._row_label_column_width,
        )
        window = self.window_region
        scroll = self.scroll_offset
        regions = []
        for key in rows:
            at = self._row_locations.get(RowKey(key))
            if at is not None:
                region = Region(0, top + at, width, 1)
                if window.overlaps(region):
                    regions.append(region.translate(-scroll))
        if regions:
            self.refresh(*regions)

    def _row_version(self, row: RowKey) -> int:
        return max(self._layout_version, self._row_versions.get(row, 0))

    # -- styles, once per frame ---------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # Widths also change outside `moved`: a resize (which DataTable counts but the row
        # versions do not), and columns DataTable widens on its idle, which may come after a
        # frame was painted at the old widths.
        self._frame_width = self.size.width
        layout = (self._frame_width, *(c.get_render_width(self) for c in self.ordered_columns))
        if layout != self._painted_layout:
            self._painted_layout = layout
            self._update_count += 1  # DataTable's own caches too (the header's line)
            self.moved()
        self._frame_styles = {}
        try:
            return super().render_lines(crop)
        finally:
            self._frame_styles = None
            self._frame_width = None

    @property
    def rich_style(self) -> Style:
        # DataTable asks for it once per line; within a frame it cannot change.
        memo = self._frame_styles
        if memo is None:
            return super().rich_style
        if (style := memo.get("")) is None:
            style = memo[""] = super().rich_style
        return style

    def _width(self) -> int:
        width = self._frame_width
        return self.size.width if width is None else width

    def _component(self, name: str) -> Style:
        memo = self._frame_styles
        if memo is None:
            return self.get_component_styles(name).rich_style
        if (style := memo.get(name)) is None:
            style = memo[name] = self.get_component_styles(name).rich_style
        return style

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        if row_index < 0 or row_index < self.fixed_rows or not self.zebra_stripes:
            return super()._get_row_style(row_index, base_style)
        return self._component("datatable--odd-row" if row_index % 2 else "datatable--even-row")

    def _meta(self, row_index: int, column_index: int) -> Style:
        # Mouse clicks find their cell by this metadata; building it is costly, it never
        # changes for a position.
        if (style := self._metas.get((row_index, column_index))) is None:
            meta: dict[str, object] = {"row": row_index, "column": column_index}
            if column_index < 0:  # the space right of the last column
                meta = {"row": row_index, "column": 0, "out_of_bounds": True}
            style = self._metas[(row_index, column_index)] = Style.from_meta(meta)
        return style

    # -- rows ---------------------------------------------------------------------------------

    def _is_fast(self, row_key: RowKey, line_no: int) -> bool:
        """Whether this line is one the fast path paints (a data row like meshdev's)."""
        return (
            self.fast
            and line_no == 0
            and row_key is not self._header_row_key
            and row_key in self._row_locations
            and self.cursor_type == "row"
            and not self.fixed_columns
            and not (self._labelled_row_exists and self.show_row_labels)
        )

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        # DataTable builds a new Strip for every line at every frame (its line cache keys on
        # the table-wide counter); a row whose line was not painted anew keeps its Strip.
        self.lines_rendered += 1
        try:
            row_key, line_no = self._get_offsets(y)
        except LookupError:
            return super()._render_line(y, x1, x2, base_style)
        if not self._is_fast(row_key, line_no):
            return super()._render_line(y, x1, x2, base_style)
        _, scrollable = self._render_line_in_row(
            row_key, 0, base_style, self.cursor_coordinate, self.hover_coordinate
        )
        width = self._width()
        crop = (x1, x2, width, base_style)
        kept = self._strips.get(row_key)
        if kept is not None and kept[0] is scrollable and kept[1] == crop:
            return kept[2]
        segments = line_crop([s for cell in scrollable for s in cell], x1, x2, width)
        strip = Strip(segments).adjust_cell_length(width, base_style).simplify()
        self._strips[row_key] = (scrollable, crop, strip)
        return strip

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        if not self._is_fast(row_key, line_no):
            return self._generic_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        row_index = self._row_locations.get(row_key)
        assert row_index is not None
        styles = self._row_styles(row_index, base_style, cursor_location, hover_location)
        signature = (row_index, self._width(), self._row_version(row_key), *styles)
        kept = self._lines.get(row_key)
        if kept is not None and kept[0] == signature:
            return kept[1]
        pair: tuple[SegmentLines, SegmentLines] = ([], self._paint_row(row_key, row_index, *styles))
        self._lines[row_key] = (signature, pair)
        self.fast_rows += 1
        return pair

    def _generic_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        # DataTable's own path, with its caches keyed on this row's version.
        version = self._row_version(row_key)
        current, self._update_count = self._update_count, version
        try:
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        finally:
            self._update_count = current

    def _row_styles(
        self, row_index: int, base_style: Style, cursor_at: Coordinate, hover_at: Coordinate
    ) -> tuple[Style, Style, Style, Style]:
        """The row's zebra style, the cursor's and hover's style on top of it (and what
        must win over the cells' own colours), and the style right of the last column."""
        cursor, hover = cursor_at.row == row_index, hover_at.row == row_index
        show = (self.show_cursor, self._show_hover_cursor)
        component, post = self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            *show,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        extend, _ = self._get_styles_to_render_cell(
            False, False, False, hover, cursor, *show, False, False
        )
        row_style = self._get_row_style(row_index, base_style)
        return row_style, component, post, row_style + extend + self._meta(row_index, -1)

    def _paint_row(
        self,
        row_key: RowKey,
        row_index: int,
        row_style: Style,
        component: Style,
        post: Style,
        extend: Style,
    ) -> SegmentLines:
        """The row's cells as DataTable's `_render_line_in_row` lays them out."""
        cells: SegmentLines = []
        table_width = self._row_label_column_width
        for column_index, column in enumerate(self.ordered_columns):
            width = column.get_render_width(self)
            table_width += width
            content = self._content(row_key, column.key, row_index, column_index, width)
            pre = row_style + self._meta(row_index, column_index) + component
            # In a changed row most cells did not change: keep their styled segments.
            kept = self._styled.get((row_key, column.key))
            if kept is None or kept[0] is not content or kept[1] != pre or kept[2] != post:
                kept = (content, pre, post, list(Segment.apply_style(content, pre, post)))
                self._styled[(row_key, column.key)] = kept
            cells.append(kept[3])
        cells.append([Segment(" " * max(0, self._width() - table_width), extend)])
        return cells

    def _content(
        self, row_key: RowKey, column_key: ColumnKey, row_index: int, column_index: int, width: int
    ) -> list[Segment]:
        version = max(self._layout_version, self._cell_versions.get((row_key, column_key), 0))
        kept = self._contents.get((row_key, column_key))
        if kept is not None and kept[0] == version and kept[1] == width:
            return kept[2]
        cell = self._data[row_key][column_key]
        pad = self.cell_padding
        console = self.app.console
        line = None
        if isinstance(cell, CellText) and width > 2 * pad:
            line = cell.line(console, width - 2 * pad)
        if line is not None:
            # What Padding(cell) gives, without the generic render and line splitting.
            content = [Segment(" " * pad), *line, Segment(" " * pad)] if pad else line
        else:
            _, renderables = self._get_row_renderables(row_index)
            options = self.app.console_options.update_dimensions(width, 1).update(no_wrap=True)
            lines = console.render_lines(
                Padding(renderables[column_index], (0, self.cell_padding)), options
            )
            content = lines[0] if lines else [Segment(" " * width)]
        self._contents[(row_key, column_key)] = (version, width, content)
        return content

    def _get_row_renderables(self, row_index: int) -> RowRenderables:
        # Cached by DataTable per update counter: per row version instead.
        if row_index < 0:
            return super()._get_row_renderables(row_index)
        row = self._row_locations.get_key(row_index)
        assert row is not None
        version = self._row_version(row)
        current, self._update_count = self._update_count, version
        try:
            return super()._get_row_renderables(row_index)
        finally:
            self._update_count = current

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        # The generic path's cells (headers, other tables), cached per cell version.
        if row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row = self._row_locations.get_key(row_index)
        column = self._column_locations.get_key(column_index)
        assert row is not None and column is not None
        version = max(self._layout_version, self._cell_versions.get((row, column), 0))
        current, self._update_count = self._update_count, version
        try:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        finally:
            self._update_count = current
