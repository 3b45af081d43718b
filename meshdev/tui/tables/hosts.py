"""Hosts: each endpoint of each cluster, whether outlier detection ejected it, and when it
returns (Envoy: base_ejection_time times the host's ejection count)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from meshdev.telemetry.aggregation.view import HostStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.tables.keyed import Column, KeyedTable, Row


def host_row(h: HostStats) -> Row:
    if h.ejected:
        # Each sidecar runs its own outlier detection, so a host may be out for some callers.
        by = f" by {len(h.ejected_by)}" if len(h.ejected_by) > 1 else ""
        state = Text(f"EJECTED{by}", style="bold white on red")
    else:
        state = Text("ok", style="green")
    cells = (
        h.cluster,
        h.pod,
        h.address,
        fmt.right(fmt.rate(h.rps)),
        fmt.right(fmt.success(h.success_pct)),
        state,
        fmt.right(Text(str(h.ejection_count), style="yellow" if h.ejection_count else "dim")),
        fmt.right(fmt.seconds(h.returns_in_s) if h.ejected else ""),
        fmt.right(str(h.rq_active)),
    )
    return Row(
        cells,
        {"pod": h.pod, "rps": h.rps, "ejections": h.ejection_count, "success": h.success_pct},
    )


class HostsTable(KeyedTable):
    TITLE = "Hosts  (outlier ejections)"
    COLUMNS = (
        Column("cluster", "CLUSTER"),
        Column("pod", "HOST"),
        Column("address", "ADDRESS"),
        Column("rps", "RPS", 7),
        Column("success", "SUCCESS", 8),
        Column("state", "STATE", 12),
        Column("ejections", "EJECTIONS", 9),
        Column("returns", "RETURNS IN", 10),
        Column("active", "ACTIVE", 6),
    )
    KEY_COLUMNS = ("cluster", "address")
    SORTABLE = ("success", "rps", "ejections", "pod")
    DESCENDING = frozenset({"rps", "ejections"})

    def show(self, hosts: Iterable[HostStats]) -> None:
        self.sync({h.key: host_row(h) for h in hosts})
