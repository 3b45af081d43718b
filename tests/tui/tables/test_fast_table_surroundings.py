"""The fast row path keeps painting what DataTable paints as the table's surroundings change:
resize, sideways and vertical scroll, hover, focus, theme, sort, rows leaving and coming back,
padding and zebra changes, and columns growing after a frame was already painted.

Each check paints the fast path with the caches the frames before left, then DataTable's own
path from empty caches (DataTable's caches only: the fast path's stay as they were, so a later
check still sees whatever they kept)."""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import DataTable

from meshdev.tui.tables.keyed import Column, KeyedTable, Row

Painted = list[list[tuple[str, str, object]]]


class Table(KeyedTable):
    TITLE = "review"
    COLUMNS = (
        Column("name", "Name"),
        Column("rate", "Rate"),
        Column("fixed", "Fixed", width=6),
    )
    SORTABLE = ("rate",)
    DESCENDING = frozenset({"rate"})


class TableApp(App[None]):
    CSS = """
    Table { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Table(id="table")

    @property
    def table(self) -> Table:
        return self.query_one(Table)


def row(name: str, rate: float, fixed: str = "ok") -> Row:
    styled = Text(f"{rate:.1f}", style="bold red" if rate > 5 else "green")
    return Row((name, styled, fixed), {"rate": rate})


def rows(count: int, rate: float = 1.0, prefix: str = "svc") -> dict[str, Row]:
    return {f"{prefix}{n}": row(f"{prefix}{n}", rate + n) for n in range(count)}


def _char(ch: str, segment: Segment) -> tuple[str, str, object]:
    style = segment.style
    return (ch, str(style), style.meta if style is not None else None)


def _lines(table: Table, *, every_line: bool = True) -> Painted:
    if every_line:
        # Textual keeps the widget's lines not marked dirty: clearing them makes every line
        # go through `render_line`, the fast path's way in.
        table._styles_cache.clear()
    lines = table.render_lines(Region(0, 0, table.size.width, table.size.height))
    return [[_char(ch, s) for s in line for ch in s.text] for line in lines]


def assert_paints_as_datatable(table: Table) -> Painted:
    """The fast path (with its kept caches) paints what DataTable paints from scratch."""
    table.fast = True
    fast = _lines(table)
    table.fast = False
    # DataTable's caches only: the fast path's must survive for the checks that follow.
    DataTable._clear_caches(table)
    try:
        generic = _lines(table)
    finally:
        table.fast = True
    assert any(any(ch != " " for ch, _, _ in line) for line in fast)
    for y, (got, want) in enumerate(zip(fast, generic, strict=True)):
        assert "".join(c for c, _, _ in got) == "".join(c for c, _, _ in want), y
        assert got == want, y
    return fast


def text_of(painted: Painted) -> list[str]:
    return ["".join(ch for ch, _, _ in line) for line in painted]


async def start(pilot: Pilot[None], app: TableApp, count: int = 6) -> Table:
    table = app.table
    table.sync(rows(count))
    await pilot.pause()
    assert_paints_as_datatable(table)
    return table


async def test_column_growing_after_a_painted_frame() -> None:
    # DataTable widens columns on its idle; a frame painted between a sync and that idle
    # draws the old widths. DataTable draws every row anew at the next update; the fast path
    # must not keep the old widths for the rows that did not change.
    app = TableApp()
    async with app.run_test(size=(80, 14)) as pilot:
        table = await start(pilot, app)
        wide = dict(rows(6))
        wide["svc2"] = row("svc2-with-a-much-longer-name", 3.0)
        table.sync(wide)
        _lines(table, every_line=False)  # a frame painted before the table's idle
        await pilot.pause()
        wide["svc4"] = row("svc4", 8.0)  # another row's rate: no column grows
        table.sync(wide)
        await pilot.pause()
        painted = text_of(assert_paints_as_datatable(table))
        assert any("svc2-with-a-much-longer-name" in line for line in painted)


async def test_row_added_with_a_wider_cell_after_a_painted_frame() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 14)) as pilot:
        table = await start(pilot, app)
        # A new row, and a changed cell (which marks the table for repainting).
        more = {**rows(6), "new": row("a-new-service-with-a-long-name", 2.5)}
        more["svc5"] = row("svc5", 5.5)
        table.sync(more)
        _lines(table, every_line=False)  # a frame painted before the table's idle
        await pilot.pause()
        more["svc0"] = row("svc0", 9.5)
        table.sync(more)
        await pilot.pause()
        painted = text_of(assert_paints_as_datatable(table))
        assert any("a-new-service-with-a-long-name" in line for line in painted)


async def test_resize_narrower_and_wider() -> None:
    app = TableApp()
    async with app.run_test(size=(80, 14)) as pilot:
        table = await start(pilot, app)
        for width in (30, 120, 80):
            await pilot.resize_terminal(width, 14)
            await pilot.pause()
            assert table.size.width == width
            painted = assert_paints_as_datatable(table)
            assert all(len(line) == width for line in painted)


async def test_horizontal_scroll() -> None:
    app = TableApp()
    async with app.run_test(size=(24, 14)) as pilot:
        table = await start(pilot, app)
        wide = {f"svc{n}": row(f"svc{n}-{'x' * 30}", 1.0 + n) for n in range(6)}
        table.sync(wide)
        await pilot.pause()
        for x in (4, 19, 0):
            table.scroll_to(x=x, animate=False, immediate=True)
            await pilot.pause()
            assert table.scroll_x == x
            painted = assert_paints_as_datatable(table)
            if x == 4:
                assert any(line.startswith("0-xxx") for line in text_of(painted))


async def test_vertical_scroll_and_cursor_moves() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 8)) as pilot:
        table = await start(pilot, app, count=30)
        table.focus()
        for target in (5, 20, 29, 3, 0):
            table.move_cursor(row=target, animate=False)
            await pilot.pause()
            assert table.cursor_row == target
            assert_paints_as_datatable(table)
        table.scroll_to(y=12, animate=False, immediate=True)
        await pilot.pause()
        painted = assert_paints_as_datatable(table)
        assert any("svc12" in line for line in text_of(painted))


async def test_hover_moves_and_leaves() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        for y in (3, 5, 2):
            await pilot.hover("#table", offset=(4, y))
            await pilot.pause()
            assert table.hover_row == y - 1
            assert table._show_hover_cursor
            assert_paints_as_datatable(table)
        await pilot.hover("#table", offset=(4, 12))  # below the last row
        await pilot.pause()
        assert_paints_as_datatable(table)
        app.table.post_message(events.Leave(table))
        await pilot.pause()
        assert not table._show_hover_cursor
        assert_paints_as_datatable(table)


async def test_focus_and_blur() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        table.move_cursor(row=2)
        table.focus()
        await pilot.pause()
        focused = assert_paints_as_datatable(table)
        table.blur()
        await pilot.pause()
        assert not table.has_focus
        blurred = assert_paints_as_datatable(table)
        assert blurred != focused  # the table's colours follow focus
        table.focus()
        await pilot.pause()
        assert assert_paints_as_datatable(table) == focused


async def test_theme_change() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        table.focus()
        table.move_cursor(row=1)
        await pilot.pause()
        dark = assert_paints_as_datatable(table)
        app.theme = "textual-light"
        await pilot.pause()
        light = assert_paints_as_datatable(table)
        assert light != dark


async def test_sort_cycles() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        table.focus()
        table.move_cursor(row=1)
        await pilot.pause()
        for _ in range(3):
            table.cycle_sort()
            await pilot.pause()
            assert_paints_as_datatable(table)
        # Changing rates reorders rows under a sort.
        table.cycle_sort()
        table.sync({k: row(k, 10.0 - n) for n, k in enumerate(rows(6))})
        await pilot.pause()
        assert_paints_as_datatable(table)


async def test_rows_removed_and_added_back_with_the_same_key() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        table.sync({k: r for k, r in rows(6).items() if k not in {"svc1", "svc3"}})
        await pilot.pause()
        assert_paints_as_datatable(table)
        back = rows(6)
        back["svc1"] = row("svc1", 7.5, "back")
        table.sync(back)
        await pilot.pause()
        painted = assert_paints_as_datatable(table)
        assert any("back" in line for line in text_of(painted))
        # Removed and added back in one frame, with other contents.
        table.sync({k: r for k, r in back.items() if k != "svc4"})
        table.sync({**back, "svc4": row("svc4", 9.0, "again")})
        await pilot.pause()
        assert_paints_as_datatable(table)


async def test_clear_and_refill() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        table.clear()
        table._rows.clear()
        table.sync({k: row(k, 2.0, "refill") for k in rows(4)})
        await pilot.pause()
        painted = assert_paints_as_datatable(table)
        assert sum("refill" in line for line in text_of(painted)) == 4


async def test_cell_padding_and_zebra_changes() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        table.cell_padding = 3
        await pilot.pause()
        assert_paints_as_datatable(table)
        table.zebra_stripes = False
        await pilot.pause()
        assert_paints_as_datatable(table)
        table.cell_padding = 0
        table.zebra_stripes = True
        await pilot.pause()
        assert_paints_as_datatable(table)


async def test_cell_updates_between_frames() -> None:
    app = TableApp()
    async with app.run_test(size=(60, 14)) as pilot:
        table = await start(pilot, app)
        for tick in range(4):
            table.sync(rows(6, rate=1.0 + 2 * tick))
            await pilot.pause()
            assert_paints_as_datatable(table)
