"""The fast row path paints exactly what DataTable's own path paints, segment by segment
(text, colours and the metadata mouse clicks use), for every table of the dashboard."""

from __future__ import annotations

from functools import partial

from rich.segment import Segment
from textual.geometry import Region

from meshdev.telemetry.aggregation.view import MeshView
from meshdev.testing.sample_views import sample_view
from meshdev.tui.app import MeshdevApp
from meshdev.tui.tables.keyed import KeyedTable
from tests.support import wait_until
from tests.tui.tuifakes import FakeSession, FakeSource, make_app, started

Painted = list[list[tuple[str, str, object]]]


def _showing(app: MeshdevApp, view: MeshView) -> bool:
    return app.view is view


def _paint(table: KeyedTable, fast: bool) -> Painted:
    table.fast = fast
    if not fast:
        table._clear_caches()  # the fast path's lines are kept from the frames before
    # Every line through the table's own render_line, not Textual's per-widget line cache.
    table._styles_cache.clear()
    before = table.fast_rows
    lines = table.render_lines(Region(0, 0, table.outer_size.width, table.outer_size.height))
    # The path asked for is the path taken (the fast one may serve lines its last frame kept).
    assert table.fast_rows > 0 if fast else table.fast_rows == before
    # Per character: two ways of splitting the same styled text compare equal.
    return [[_char(ch, s) for s in line for ch in s.text] for line in lines]


def _char(ch: str, segment: Segment) -> tuple[str, str, object]:
    style = segment.style
    return (ch, str(style), style.meta if style is not None else None)


async def test_fast_rows_paint_what_datatable_paints(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(120, 36)) as pilot:
        await started(pilot, app, source)
        d = app.dashboard
        # A breaker open, then a host ejected: styled cells of all kinds, and frames in
        # between that change some cells of a row and keep others.
        for ticks in ((4,), (5, 6, 7, 8)):
            for tick in ticks:
                view = sample_view(tick)
                source.emit(view)
                await wait_until(partial(_showing, app, view), f"view {tick}", pause=pilot.pause)
                await pilot.pause()
            for table in (d.routes, d.clusters, d.hosts):
                table.move_cursor(row=len(ticks) % 3)
                await pilot.pause()
                fast, generic = _paint(table, True), _paint(table, False)
                assert any(any(ch != " " for ch, _, _ in line) for line in fast)
                assert fast == generic, (table.id, ticks)
                table.fast = True
