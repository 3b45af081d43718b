"""The routes table's FLAGS/s column: response flags per second, as RPS beside it is."""

from __future__ import annotations

from rich.text import Text

from meshdev.telemetry.aggregation.view import RouteStats
from meshdev.tui.tables.routes import RoutesTable, route_row

# 100 requests a second, half overflowing a breaker: 12-13 of them in a 0.25 s interval.
HALF_OVERFLOWING = RouteStats(
    vhost="backend",
    route="items",
    rps=100.0,
    success_pct=50.0,
    p50=1.0,
    p95=2.0,
    p99=3.0,
    retries_per_s=0.0,
    total=25,
    codes={"200": 13, "503": 12},
    flags={"UO": 12, "FI": 1},
    flags_per_s={"UO": 50.0, "FI": 4.0},
)


def flags_text(route: RouteStats) -> str:
    cell = route_row(route).cells[-1]
    return cell.plain if isinstance(cell, Text) else cell


def test_flags_read_per_second_as_rps_does() -> None:
    assert flags_text(HALF_OVERFLOWING) == "UO 50 FI 4.0"


def test_the_column_says_its_unit() -> None:
    flags = next(c for c in RoutesTable.COLUMNS if c.key == "flags")
    assert flags.label == "FLAGS/s"
