"""Who may call whom: the edges between services seen in traffic (their mode, rate, and the
403s the destination's authorization answered), and each pod's inbound side (its RBAC
decisions, refused handshakes) with its certificate's countdown."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.view import EdgeStats, PodSecurity
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.recent import RecentFailures
from meshdev.tui.logic.security import (
    denial_text,
    expiry_text,
    failures_text,
    mode_text,
    policy_list,
)
from meshdev.tui.tables.keyed import Column, KeyedTable, Row


def _rate(value: float | None, bad: bool = False) -> Text:
    """A rate, a dash where nothing counts it (no policies, no TLS yet)."""
    if value is None:
        return fmt.right(Text(fmt.DASH, style="dim"))
    style = "bold red" if bad and value > 0 else "" if value > 0 else "dim"
    return fmt.right(Text(fmt.rate(value), style=style))


def edge_row(
    e: EdgeStats, mesh: Mesh | None, *, secured: bool, recent: RecentFailures | None = None
) -> Row:
    """`recent`: the refusals of the last seconds, so that what refused this edge's callers
    stays named between sparse 403s (it said so only in a view that had one)."""
    seen = recent.denied(e.key) if recent is not None else None
    if e.denied_per_s:
        policies = denial_text(mesh, e.destination, e.source)
    elif seen is not None:
        policies = denial_text(mesh, e.destination, e.source)
        policies.append(f"  (last 403 {seen.ago})", style="dim")
    else:
        policies = policy_list(mesh, e.destination)
    cells = (
        e.source,
        e.destination,
        mode_text(e.mode, secured),
        _rate(e.rps),
        _rate(e.denied_per_s, bad=True),
        failures_text(e.tls_failures_total, e.tls_failures),
        policies,
    )
    return Row(
        cells,
        {"source": e.source, "rps": e.rps, "denied": e.denied_per_s, "destination": e.destination},
    )


class EdgesTable(KeyedTable):
    TITLE = "Who calls whom  (as the callers' sidecars see it)"
    COLUMNS = (
        Column("source", "SOURCE"),
        Column("destination", "DESTINATION"),
        Column("mode", "MODE", 9),
        Column("rps", "RPS", 7),
        Column("denied", "403/s", 7),
        Column("tls", "TLS FAILED"),
        Column("policies", "POLICIES (mesh.yaml)"),
    )
    KEY_COLUMNS = ("source", "destination")
    SORTABLE = ("denied", "rps", "source", "destination")
    DESCENDING = frozenset({"denied", "rps"})

    def show(
        self,
        edges: Iterable[EdgeStats],
        mesh: Mesh | None,
        *,
        secured: bool,
        recent: RecentFailures | None = None,
    ) -> None:
        self.sync({e.key: edge_row(e, mesh, secured=secured, recent=recent) for e in edges})


def pod_security_row(p: PodSecurity, ttl: float | None = None) -> Row:
    """`ttl`: the mesh's cert_ttl, for a certificate that does not say when it began."""
    cells = (
        p.node,
        p.service,
        Text(p.mtls or fmt.DASH, style="" if p.mtls else "dim"),
        _rate(p.rbac_allowed_per_s),
        _rate(p.rbac_denied_per_s, bad=True),
        _rate(p.handshakes_per_s),
        failures_text(p.tls_failures_total, p.tls_failures),
        expiry_text(p.cert, p.spiffe_id, ttl),
    )
    expires = p.cert.expires_in_s if p.cert is not None else None
    return Row(
        cells,
        {"pod": p.node, "denied": p.rbac_denied_per_s, "cert": expires, "service": p.service},
    )


def has_security(pods: Iterable[PodSecurity]) -> bool:
    """Whether any pod has something to show here: an identity, policies, TLS."""
    return any(
        p.spiffe_id is not None
        or p.cert is not None
        or p.rbac_allowed_per_s is not None
        or p.handshakes_per_s is not None
        or p.tls_failures
        or p.tls_failures_total
        for p in pods
    )


class PodSecurityTable(KeyedTable):
    TITLE = "Pods  (inbound: authorization, TLS refused since start, certificate)"
    COLUMNS = (
        Column("pod", "POD"),
        Column("service", "SERVICE"),
        Column("mtls", "INBOUND", 10),
        Column("allowed", "ALLOWED/s", 9),
        Column("denied", "DENIED/s", 8),
        Column("handshakes", "TLS/s", 6),
        Column("refused", "REFUSED"),
        Column("cert", "CERTIFICATE"),
    )
    SORTABLE = ("denied", "cert", "service", "pod")
    DESCENDING = frozenset({"denied"})

    def show(self, pods: Iterable[PodSecurity], ttl: float | None = None) -> None:
        self.sync({p.node: pod_security_row(p, ttl) for p in pods})
