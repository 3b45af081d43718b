"""Rows of tcp clusters and hosts: dashes where a column counts requests, connections where
the tcp columns are; and the columns come only with the first tcp row."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult

from meshdev.telemetry.aggregation.view import BreakerLimit, ClusterStats, HostStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.tables.clusters import ClustersTable, cluster_row
from meshdev.tui.tables.hosts import HostsTable, host_row

DASH = fmt.DASH


def plain(cells: tuple[object, ...]) -> list[str]:
    return [c.plain if isinstance(c, Text) else str(c) for c in cells]


TCP = ClusterStats(
    "cache",
    2,
    2,
    0,
    (BreakerLimit("max_connections", 3, 50, False),),
    False,
    0.0,
    (),
    protocol="tcp",
    cx_active=3,
    cx_per_s=1.5,
    bytes_per_s=12_345.0,
    connect_fail_per_s=0.0,
)
HTTP = ClusterStats("web", 1, 1, 0, (), False, 0.0, (), rps=40.0, success_pct=100.0)


def test_a_tcp_clusters_row() -> None:
    cells = plain(cluster_row(TCP, tcp=True).cells)
    assert cells[0] == "cache"
    assert cells[6] == "cx 3/50"
    # RPS and SUCCESS count requests: a tcp cluster has none.
    assert cells[7:9] == [DASH, DASH]
    assert cells[9:] == ["3", "1.5", "12k", "0"]


def test_an_http_clusters_row_beside_tcp_ones() -> None:
    cells = plain(cluster_row(HTTP, tcp=True).cells)
    assert cells[7] == "40"
    assert cells[9:] == [DASH] * 4
    # Without tcp clusters, the row is as it always was.
    assert len(cluster_row(HTTP).cells) == len(ClustersTable.COLUMNS)


def test_a_tcp_hosts_row() -> None:
    h = HostStats("cache", "cache-0", "127.0.0.1:15006", 2.0, None, False, 0, 0.0, 5,
                  protocol="tcp")  # fmt: skip
    cells = plain(host_row(h, tcp=True).cells)
    assert cells[3:5] == [DASH, DASH]
    assert cells[8] == "5"  # open connections
    assert cells[9] == "2.0"  # connections per second


def test_sizes() -> None:
    assert [fmt.size(v) for v in (0, 950, 12_345, 3_400_000, 2.5e9, 99_999)] == [
        "0",
        "950",
        "12k",
        "3.4M",
        "2.5G",
        "100k",
    ]


class Tables(App[None]):
    def compose(self) -> ComposeResult:
        yield ClustersTable(id="clusters")
        yield HostsTable(id="hosts")


async def test_tcp_columns_come_with_the_first_tcp_cluster_and_stay() -> None:
    app = Tables()
    async with app.run_test(size=(200, 40)) as pilot:  # wide enough for every column
        table = app.query_one(ClustersTable)
        table.show([HTTP])
        await pilot.pause()
        assert len(table.columns) == len(ClustersTable.COLUMNS)
        table.show([HTTP, TCP])
        await pilot.pause()
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[-4:] == ["CX", "CX/s", "BYTES/s", "CX FAIL/s"]
        assert table.cell_text("cache", "bytes").strip() == "12k"
        assert table.cell_text("web", "cx_active").strip() == DASH
        # The tcp cluster leaves; its columns stay (a table that jumps is harder to read).
        table.show([HTTP])
        await pilot.pause()
        assert len(table.columns) == len(ClustersTable.COLUMNS) + 4
        assert table.keys == ["web"]
