"""The security view's words: how a mesh is secured, whose policies guard a destination, when
a certificate ends. Pure functions of the mesh model and the view, unit-tested without a
terminal; the tables (tui/tables/security.py) lay them out.

The policy that denied a request is in the destination sidecar's access log
(`rbac_access_denied_matched_policy[<name>]`), but the dashboard follows one pod's log at a
time (the logs tab), so it cannot name it per destination: the view lists the destination's
policies from mesh.yaml instead, and the route detail reasons from them (explain.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.view import CertStatus, EdgeMode, EdgeStats, PodSecurity
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.explain import allows_for, duration, matching_denials, scope

# A certificate this close to its end (a share of its life) is worth a colour: renewal is due
# at half its life, so one that gets here was not renewed.
EXPIRY_WARNING = 0.1
TURN_ON = "security: {mtls: STRICT}"

# Envoy's TLS stats (sidecar/tls/stats.py) as a person reads them.
FAILURE_WORDS = {
    "connection_error": "handshake",
    "fail_verify_error": "bad cert",
    "fail_verify_san": "wrong SAN",
    "fail_verify_no_cert": "no cert",
    "no_filter_chain_match": "plaintext",
}


def remaining(seconds: float) -> str:
    """A duration as a countdown reads: `23h 41m`, `3d 4h`, `12m 5s`, `42s`."""
    s = max(0, int(seconds))
    if s >= 2 * 86400:
        days, hours = divmod(s // 3600, 24)
        return f"{days}d {hours}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m {s % 60}s"
    return f"{s}s"


def expiry_text(cert: CertStatus | None, spiffe_id: str | None, ttl: float | None = None) -> Text:
    """`ttl`: the mesh's cert_ttl, for a certificate that does not say when it began."""
    if cert is None:
        if spiffe_id is None:
            return Text(fmt.DASH, style="dim")
        return Text("no certificate", style="bold red")
    left = cert.expires_in_s
    if left <= 0:
        return Text(f"expired {remaining(-left)} ago", style="bold red")
    life = cert.lifetime_s if cert.lifetime_s is not None else ttl
    warn = life is not None and left < EXPIRY_WARNING * life
    return Text(f"expires in {remaining(left)}", style="bold yellow" if warn else "")


def mode_text(mode: EdgeMode, secured: bool) -> Text:
    """`secured`: the mesh has a CA, so a plaintext hop is a choice worth seeing."""
    if mode == "mtls":
        return Text("mTLS", style="green")
    if mode == "plaintext":
        return Text("plaintext", style="yellow" if secured else "dim")
    if mode == "mixed":
        return Text("mixed", style="bold yellow")
    return Text("?", style="dim")


def failures_text(totals: dict[str, int], recent: dict[str, int] | None = None) -> Text:
    """Refused handshakes by what went wrong: `totals` since the sidecars started (Envoy's
    counters), so one seen once stays in sight; bold where `recent` (the last interval) has
    more of its kind, plain red where they are older."""
    recent = recent or {}
    counts = {k: max(totals.get(k, 0), recent.get(k, 0)) for k in {*totals, *recent}}
    out = Text()
    for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if out:
            out.append("  ")
        style = "bold red" if recent.get(kind) else "red"
        out.append(FAILURE_WORDS.get(kind, kind), style=style)
        out.append(f" {n}", style=style if recent.get(kind) else "")
    return out


def policy_list(mesh: Mesh | None, service: str) -> Text:
    """A destination's authorization policies as mesh.yaml has them, DENY first (Istio
    evaluates them first); what a request of this edge must get past."""
    if mesh is None:
        return Text(fmt.DASH, style="dim")
    policies = mesh.authorization.get(service, ())
    if not policies:
        return Text("none: every caller allowed", style="dim")
    out = Text()
    for p in sorted(policies, key=lambda p: p.action != "DENY"):
        if out:
            out.append(", ")
        out.append(p.name)
        out.append(f" {p.action}", style="red" if p.action == "DENY" else "green")
    return out


def denial_text(mesh: Mesh | None, service: str, caller: str) -> Text:
    """What may refuse `caller` at `service`, for an edge that sees 403s: the DENY policies
    that take this caller (Istio evaluates those first), then the ALLOW side: none names the
    caller, or the ones that do leave some path or method out. The sidecar's access log has
    the exact one per request; the dashboard reasons from mesh.yaml."""
    if mesh is None or not mesh.authorization.get(service):
        return policy_list(mesh, service)
    parts = [
        f"{p.name} DENY{f' ({scope(p)})' if scope(p) else ''}"
        for _, p in matching_denials(mesh, service, [caller])
    ]
    if any(p.action == "ALLOW" for p in mesh.authorization[service]):
        allowed = allows_for(mesh, service, caller)
        if allowed:
            parts.append(f"outside ALLOW {', '.join(p.name for p in allowed)}")
        else:
            parts.append(f"no ALLOW for {caller}")
    if not parts:
        return policy_list(mesh, service)
    out = Text("denied by ", style="red")
    out.append(" or ".join(parts), style="bold red")
    return out


def secured(mesh: Mesh | None, view_edges: Sequence[EdgeStats]) -> bool:
    """Whether mutual TLS is on: the mesh file says, else (watching) the traffic does."""
    if mesh is not None:
        return mesh.security is not None
    return any(e.mode in ("mtls", "mixed") for e in view_edges)


def notice(mesh: Mesh | None, edges: Sequence[EdgeStats], pods: Sequence[PodSecurity]) -> Text:
    """The view's first line: how this mesh is secured, or how to secure it."""
    out = Text()
    if mesh is None:
        tls = sum(1 for e in edges if e.mode == "mtls")
        if tls or any(p.cert is not None for p in pods):
            out.append(f"mutual TLS on {tls} of {len(edges)} edges seen", style="bold")
            out.append("  (watching: policies are in the mesh file)", style="dim")
        else:
            out.append("no mutual TLS seen: ", style="bold yellow")
            out.append(f"a meshdev mesh turns it on with `{TURN_ON}` in mesh.yaml")
        return out
    security = mesh.security
    if security is None:
        out.append("plaintext mesh: ", style="bold yellow")
        out.append(f"add `{TURN_ON}` to mesh.yaml for mutual TLS and identities")
        out.append("  (docs/security.md)", style="dim")
        return out
    out.append(f"mTLS {security.mtls}", style="bold green" if security.mtls == "STRICT" else "bold")
    out.append(" mesh-wide")
    overrides = [
        f"{name} {p.mtls}"
        for name, p in sorted(mesh.policies.items())
        if p.mtls is not None and p.mtls != security.mtls
    ]
    if overrides:
        out.append(f" ({', '.join(overrides)})", style="yellow")
    out.append(
        f"   certificates {duration(security.cert_ttl)}, renewed at "
        f"{duration(security.cert_ttl / 2)}"
    )
    guarded = sorted(s for s, ps in mesh.authorization.items() if ps)
    out.append("   authorization: ")
    out.append(", ".join(guarded) if guarded else "none", style="" if guarded else "dim")
    return out
