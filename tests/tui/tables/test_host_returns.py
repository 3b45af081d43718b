"""The Hosts table's RETURNS IN: a countdown while a host is ejected, and what an ejected host
whose ejection time is over waits for (Envoy un-ejects it at the next detection sweep)."""

from __future__ import annotations

from meshdev.telemetry.aggregation.view import HostStats
from meshdev.tui.tables.hosts import HostsTable, host_row


def _host(ejected: bool, returns_in_s: float) -> HostStats:
    return HostStats(
        cluster="backend.v1",
        pod="backend-v1-0",
        address="127.0.99.3:15006",
        rps=8.0,
        success_pct=0.0,
        ejected=ejected,
        ejection_count=2,
        returns_in_s=returns_in_s,
        rq_active=0,
    )


def _returns(h: HostStats) -> str:
    at = [c.key for c in HostsTable.COLUMNS].index("returns")
    cell = host_row(h).cells[at]
    return cell.plain if hasattr(cell, "plain") else str(cell)


def test_an_ejected_host_counts_down_then_waits_for_the_next_sweep() -> None:
    assert _returns(_host(True, 14.4)) == "14s"
    assert _returns(_host(True, 75)) == "1m15s"
    assert _returns(_host(True, 0.0)) == "next sweep"
    assert _returns(_host(False, 0.0)) == ""
