"""The clusters, routes and hosts tables at 80 to 200 columns: the least important columns give way
so that the rest are shown whole, and come back when the terminal widens."""

from __future__ import annotations

import dataclasses

import pytest
from textual.app import App, ComposeResult

from meshdev.testing.sample_views import sample_view
from meshdev.tui.tables.clusters import ClustersTable
from meshdev.tui.tables.hosts import HostsTable
from meshdev.tui.tables.keyed import KeyedTable
from meshdev.tui.tables.routes import RoutesTable

VIEW = sample_view(4)  # the backend breaker open, a host ejected


class Tables(App[None]):
    CSS = "KeyedTable { height: 1fr; border: round white; }"

    def compose(self) -> ComposeResult:
        yield ClustersTable(id="clusters")
        yield HostsTable(id="hosts")


def used(table: KeyedTable) -> int:
    return sum(c.get_render_width(table) for c in table.columns.values())


def shown(table: KeyedTable) -> list[str]:
    return [str(key.value) for key in table.columns]


async def show(app: Tables) -> tuple[ClustersTable, HostsTable]:
    clusters, hosts = app.query_one(ClustersTable), app.query_one(HostsTable)
    clusters.show(VIEW.clusters)
    hosts.show(VIEW.hosts)
    return clusters, hosts


@pytest.mark.parametrize("width", [80, 100, 120, 200])
async def test_every_shown_column_fits_whole(width: int) -> None:
    app = Tables()
    async with app.run_test(size=(width, 40)) as pilot:
        tables = await show(app)
        await pilot.pause()
        for table in tables:
            room = table.scrollable_content_region.width
            assert used(table) <= room, (table.id, shown(table), used(table), room)
        clusters, hosts = tables
        # What each table is about stays, from 80 columns on.
        assert {"cluster", "breaker", "limits"} <= set(shown(clusters))
        assert {"cluster", "pod", "address", "state", "returns"} <= set(shown(hosts))
        if width >= 200:
            assert shown(clusters) == [c.key for c in ClustersTable.COLUMNS]
            assert shown(hosts) == [c.key for c in HostsTable.COLUMNS]


async def test_columns_come_back_as_the_terminal_widens_and_the_cursor_stays() -> None:
    app = Tables()
    async with app.run_test(size=(200, 40)) as pilot:
        clusters, hosts = await show(app)
        await pilot.pause()
        hosts.move_cursor(row=3)
        chosen = hosts.cursor_key
        await pilot.resize_terminal(80, 40)
        await pilot.pause()
        assert "rps" not in shown(hosts) and "timeline" not in shown(clusters)
        assert hosts.cursor_key == chosen
        # A new view paints the columns shown, and only those.
        clusters.show(sample_view(5).clusters)
        hosts.show(sample_view(5).hosts)
        await pilot.pause()
        assert used(clusters) <= clusters.scrollable_content_region.width
        await pilot.resize_terminal(200, 40)
        await pilot.pause()
        assert shown(hosts) == [c.key for c in HostsTable.COLUMNS]
        assert hosts.cursor_key == chosen
        host = next(h for h in sample_view(5).hosts if h.key == chosen)
        assert hosts.cell_text(host.key, "pod") == host.pod


async def test_the_tcp_columns_give_way_too() -> None:
    cache = dataclasses.replace(VIEW.clusters[0], name="cache", protocol="tcp", cx_active=3)
    app = Tables()
    async with app.run_test(size=(100, 40)) as pilot:
        clusters = app.query_one(ClustersTable)
        clusters.show((*VIEW.clusters, cache))
        await pilot.pause()
        assert len(clusters.shown_columns) == len(ClustersTable.COLUMNS) + 4
        assert used(clusters) <= clusters.scrollable_content_region.width
        await pilot.resize_terminal(200, 40)
        await pilot.pause()
        assert shown(clusters)[-4:] == ["cx_active", "cx_rate", "bytes", "cx_fail"]
        assert clusters.cell_text("cache", "cx_active").strip() == "3"


class Routes(App[None]):
    CSS = "KeyedTable { height: 1fr; border: round white; }"

    def compose(self) -> ComposeResult:
        yield RoutesTable(id="routes")


# The first route with the flags of a failing replica behind retries and a breaker: the
# FLAGS/s column at its widest in the example's story.
ROUTES = (
    dataclasses.replace(
        VIEW.routes[0], flags_per_s={"UO": 28.0, "URX": 8.0, "UH": 2.0}, upgrades_open=3
    ),
    *VIEW.routes[1:],
)
WHAT_ROUTES_ARE_ABOUT = {"route", "rps", "success", "p99", "flags"}


@pytest.mark.parametrize("width", [80, 100, 120, 200])
async def test_the_routes_keep_rate_success_p99_and_flags_whole(width: int) -> None:
    app = Routes()
    async with app.run_test(size=(width, 30)) as pilot:
        routes = app.query_one(RoutesTable)
        routes.show(ROUTES)
        await pilot.pause()
        room = routes.scrollable_content_region.width
        assert used(routes) <= room, (shown(routes), used(routes), room)
        assert set(shown(routes)) >= WHAT_ROUTES_ARE_ABOUT, shown(routes)
        assert routes.cell_text(ROUTES[0].key, "flags").startswith("WS 3 UO 28")
        if width == 80:
            assert "trend" not in shown(routes)  # the first to give way
        if width >= 120:
            assert shown(routes) == [c.key for c in RoutesTable.COLUMNS]


async def test_the_routes_columns_come_back_and_the_cursor_stays() -> None:
    app = Routes()
    async with app.run_test(size=(200, 30)) as pilot:
        routes = app.query_one(RoutesTable)
        routes.show(ROUTES)
        await pilot.pause()
        routes.move_cursor(row=2)
        chosen = routes.cursor_key
        assert chosen is not None
        await pilot.resize_terminal(80, 30)
        await pilot.pause()
        assert "trend" not in shown(routes) and routes.cursor_key == chosen
        # Trends kept between their once-a-second redraws survive a hidden column.
        routes.show(sample_view(5).routes, trends=False)
        await pilot.pause()
        await pilot.resize_terminal(200, 30)
        await pilot.pause()
        assert shown(routes) == [c.key for c in RoutesTable.COLUMNS]
        assert routes.cursor_key == chosen
        assert routes.cell_text(chosen, "trend").strip()
