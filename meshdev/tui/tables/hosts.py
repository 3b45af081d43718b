"""Hosts: each endpoint of each cluster, whether outlier detection ejected it, and when it
returns (Envoy: base_ejection_time times the host's ejection count). A tcp cluster's hosts
show their open connections as ACTIVE and connections per second in a column of their own
(appearing with the first of them) instead of requests."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from meshdev.telemetry.aggregation.view import HostStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.tables.keyed import Column, KeyedTable, Row

# A tcp host's connections opened per second (its `rps`: Envoy counts each relayed connection
# as a request on its host).
TCP_COLUMNS = (Column("cx_rate", "CX/s", 6, drop=4),)


def _dash() -> Text:
    return fmt.right(Text(fmt.DASH, style="dim"))


def _returns(h: HostStats) -> str:
    """When an ejected host comes back. Its ejection time over, it is still out until the
    next outlier-detection sweep (Envoy un-ejects on the `interval` timer): a blank there read
    as a host that would never return."""
    if not h.ejected:
        return ""
    return fmt.seconds(h.returns_in_s) or "next sweep"


def host_row(h: HostStats, *, tcp: bool = False) -> Row:
    """`tcp`: the table shows the tcp column (some host is a tcp cluster's)."""
    http = h.protocol != "tcp"
    if h.ejected:
        # Each sidecar runs its own outlier detection, so a host may be out for some callers.
        by = f" by {len(h.ejected_by)}" if len(h.ejected_by) > 1 else ""
        state = Text(f"EJECTED{by}", style="bold white on red")
    else:
        state = Text("ok", style="green")
    cells: tuple[Text | str, ...] = (
        h.cluster,
        h.pod,
        h.address,
        fmt.right(fmt.rate(h.rps)) if http else _dash(),
        fmt.right(fmt.success(h.success_pct)) if http else _dash(),
        state,
        fmt.right(Text(str(h.ejection_count), style="yellow" if h.ejection_count else "dim")),
        fmt.right(_returns(h)),
        # Requests in flight, or a tcp host's open connections.
        fmt.right(str(h.rq_active)),
    )
    if tcp:
        cells += (_dash() if http else fmt.right(fmt.rate(h.rps)),)
    return Row(
        cells,
        {
            "pod": h.pod,
            "rps": h.rps if http else None,
            "ejections": h.ejection_count,
            "success": h.success_pct,
        },
    )


class HostsTable(KeyedTable):
    TITLE = "Hosts  (outlier ejections)"
    # Narrow terminals keep which host is ejected and when it returns; traffic and the
    # requests in flight give way first (ADDRESS stays: with CLUSTER it tells rows apart).
    COLUMNS = (
        Column("cluster", "CLUSTER"),
        Column("pod", "HOST"),
        Column("address", "ADDRESS"),
        Column("rps", "RPS", 7, drop=4),
        Column("success", "SUCCESS", 8, drop=3),
        Column("state", "STATE", 12),
        Column("ejections", "EJECTIONS", 9, drop=2),
        Column("returns", "RETURNS IN", 10, drop=1),
        Column("active", "ACTIVE", 6, drop=4),
    )
    KEY_COLUMNS = ("cluster", "address")
    SORTABLE = ("success", "rps", "ejections", "pod")
    DESCENDING = frozenset({"rps", "ejections"})

    def show(self, hosts: Iterable[HostStats]) -> None:
        """The tcp column appears with the first tcp host, and stays."""
        hosts = tuple(hosts)
        tcp = len(self.shown_columns) > len(self.COLUMNS)
        if not tcp and any(h.protocol == "tcp" for h in hosts):
            self.append_columns(TCP_COLUMNS, _dash())
            tcp = True
        self.sync({h.key: host_row(h, tcp=tcp) for h in hosts})
