"""Route detail (Enter on a route): its latency histogram, status codes, and failures broken
down by response flag, each explained by the mesh.yaml field that causes it (a 403 by the
authorization policy behind it, a connect failure by a failed mTLS handshake when the TLS
stats say so); a route with upgraded (WebSocket) connections also says how many are open, and
a gRPC route the grpc-status codes its callers got (all of them HTTP 200)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from meshdev.common.envoy_names import GRPC_STATUS_NAMES
from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.view import FLAGS, MeshView, RouteStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.explain import Cause, destinations, explain, explain_denial, find_route
from meshdev.tui.logic.recent import RecentFailures, Seen

# Display bins of the latency histogram (ms); the sidecar's own buckets are far finer.
EDGES = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
BAR_WIDTH = 40


def _edge(ms: float) -> str:
    return f"{ms / 1000:g}s" if ms >= 1000 else f"{ms:g}ms"


def histogram_lines(buckets: Sequence[tuple[float, float, int]], width: int = BAR_WIDTH) -> Text:
    counts = [0] * len(EDGES)
    for lower, bucket_width, n in buckets:
        middle = lower + bucket_width / 2
        index = max(i for i, edge in enumerate(EDGES) if middle >= edge)
        counts[index] += n
    used = [i for i, n in enumerate(counts) if n]
    out = Text()
    if not used:
        out.append("  no requests in the last interval", style="dim")
        return out
    top = max(counts)
    for i in range(used[0], used[-1] + 1):
        label = (
            f"{_edge(EDGES[i])}-{_edge(EDGES[i + 1])}"
            if i + 1 < len(EDGES)
            else f">={_edge(EDGES[i])}"
        )
        bar = "#" * max(1 if counts[i] else 0, round(counts[i] / top * width))
        out.append(f"  {label:>12} ", style="dim")
        out.append(f"{bar:<{width}}", style="cyan")
        out.append(f" {counts[i]}\n")
    out.rstrip()
    return out


# Flags whose answer is a 5xx made by the proxy (or the last try's, for URX).
_FIVE_XX_FLAGS = ("UO", "UH", "UF", "UT", "URX", "FI")


def open_limits(view: MeshView | None, services: list[str]) -> set[str]:
    """Breaker limits that are full right now on the clusters of these services."""
    if view is None:
        return set()
    return {
        limit.name
        for c in view.clusters
        if c.name.split(".", 1)[0] in services
        for limit in c.limits
        if limit.open
    }


def refused_callers(view: MeshView | None, services: list[str]) -> list[str]:
    """The services whose requests to these were answered 403 in the interval (else every
    caller seen: the denial may be older than the interval)."""
    edges = [e for e in view.edges if e.destination in services] if view is not None else []
    refused = [e.source for e in edges if e.denied_per_s > 0]
    return list(dict.fromkeys(refused or [e.source for e in edges]))


def tls_failures(
    view: MeshView | None, services: list[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Failed handshakes to these services in the interval: as their callers' clusters count
    them, and as their own pods' inbound listeners do."""
    upstream: dict[str, int] = {}
    inbound: dict[str, int] = {}
    if view is not None:
        for e in view.edges:
            if e.destination in services:
                for kind, n in e.tls_failures.items():
                    upstream[kind] = upstream.get(kind, 0) + n
        for p in view.pod_security:
            if p.service in services:
                for kind, n in p.tls_failures.items():
                    inbound[kind] = inbound.get(kind, 0) + n
    return upstream, inbound


def denial_cause(
    route: RouteStats,
    mesh: Mesh | None,
    view: MeshView | None,
    recent: RecentFailures | None = None,
) -> Cause | None:
    """Why the route's 403s were refused, if an authorization policy did: mesh.yaml gives the
    destination some, or (watching, without the file) its pods' RBAC filters denied some.
    `recent`: the refusals of the last seconds, whose callers count as the interval's."""
    services = destinations(mesh, route.vhost, route.route)
    callers = (recent.refused_callers(services) if recent is not None else []) or (
        refused_callers(view, services)
    )
    if mesh is not None:
        found = find_route(mesh, route.vhost, route.route)
        match = found[1].match if found is not None else None
        causes = (explain_denial(mesh, s, callers, match) for s in services)
        return next((c for c in causes if c is not None), None)
    pods = view.pod_security if view is not None else ()
    if any(p.service in services and p.rbac_denied_per_s for p in pods) or (
        recent is not None and recent.rbac_denied(services)
    ):
        return explain(None, route.vhost, route.route, "RBAC")
    return None


def _cause_lines(out: Text, count: int, cause: Cause, when: str | None = None) -> None:
    """`when`: how recent the failures are, when the last interval had none of them."""
    out.append(f"  {count:>6}  ", style="bold")
    out.append(cause.headline(fmt.ARROW), style="bold red")
    out.append(f"\n          {cause.meaning}\n", style="italic")
    if when is not None:
        out.append(f"          none in the last interval: {when}\n", style="yellow")
    for extra in cause.fields[1:]:
        out.append(f"          also: {extra}\n", style="dim")


def _most(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in {*a, *b}}


def _when(interval: int, seen: Seen | None) -> str | None:
    """How recent the failures are, when the interval (whose count the line shows, as every
    other line's) has none of them but the last seconds have."""
    if interval or seen is None:
        return None
    return seen.when()


def detail_text(
    route: RouteStats,
    mesh: Mesh | None,
    view: MeshView | None = None,
    recent: RecentFailures | None = None,
) -> Text:
    """`recent`: the 403s and failed handshakes of the last seconds (logic/recent.py): their
    explanations stay between sparse ones, saying how recent they are, instead of showing
    only in the quarter of a second whose view counted one."""
    out = Text()
    out.append(f"route {route.key}", style="bold")
    found = find_route(mesh, route.vhost, route.route)
    if found is not None and found[1].to is not None:
        to = found[1].to
        target = to if isinstance(to, str) else ", ".join(f"{k} {v}" for k, v in to.items())
        out.append(f"  -> {target}", style="dim")
    out.append("\n\n")
    out.append(f"  {fmt.rate(route.rps)} req/s   success ")
    out.append_text(fmt.success(route.success_pct))
    out.append(
        f"   p50 {fmt.ms(route.p50)}  p95 {fmt.ms(route.p95)}  p99 {fmt.ms(route.p99)}"
        f"   retries {fmt.rate(route.retries_per_s)}/s   total {route.total}\n\n"
    )
    if route.upgrades or route.upgrades_open:
        out.append_text(upgrades_line(route))
    out.append("Latency (last interval)", style="bold underline")
    out.append("\n")
    out.append_text(histogram_lines(route.latency_buckets))
    out.append("\n\n")
    out.append("Status codes (last interval)", style="bold underline")
    out.append("\n")
    if route.codes:
        for code, n in sorted(route.codes.items()):
            out.append(f"  {code} ", style="green" if code.startswith(("2", "3")) else "bold red")
            out.append(f"{n}")
    else:
        out.append("  none", style="dim")
    out.append("\n\n")
    if route.grpc_codes:
        out.append_text(grpc_lines(route.grpc_codes))
    out.append("Failures by response flag, and what in mesh.yaml causes them", "bold underline")
    out.append("\n")
    services = destinations(mesh, route.vhost, route.route)
    full = open_limits(view, services)
    upstream_tls, inbound_tls = tls_failures(view, services)
    if recent is not None:
        # The window's, which hold the interval's once the app has seen this view.
        upstream_tls, inbound_tls = (
            _most(now, window)
            for now, window in zip(
                (upstream_tls, inbound_tls), recent.tls_failures(services), strict=True
            )
        )
    # A connect failure (a failed handshake, with TLS) stays explained through the window.
    failed_connect = recent.route(route.key, "UF") if recent is not None else None
    failing = [f for f in FLAGS if route.flags.get(f) or (f == "UF" and failed_connect)]
    for flag in failing:
        cause = explain(
            mesh,
            route.vhost,
            route.route,
            flag,
            full,
            upstream_tls=upstream_tls,
            inbound_tls=inbound_tls,
        )
        count = route.flags.get(flag, 0)
        _cause_lines(out, count, cause, _when(count, failed_connect if flag == "UF" else None))
    denied = route.codes.get("403", 0)
    denied_when = _when(denied, recent.route(route.key, "403") if recent is not None else None)
    denial = denial_cause(route, mesh, view, recent) if denied or denied_when else None
    if denial is not None:
        _cause_lines(out, denied, denial, denied_when)
    five_xx = sum(n for code, n in route.codes.items() if code.startswith("5"))
    own = five_xx - sum(route.flags.get(f, 0) for f in _FIVE_XX_FLAGS)
    if own > 0:
        out.append(f"  {own:>6}  ", style="bold")
        out.append("5xx without a flag: answered so by the upstream app itself", "bold red")
        out.append(
            "\n          (the mesh passed them on; retries and outlier detection see them)\n"
        )
    if not failing and own <= 0 and denial is None:
        out.append("  none in the last interval", style="green")
    else:
        out.append("\n  t: a trace of one of them, hop by hop (Traces view, 6)\n", style="dim")
    unattributed = view.unattributed_flags if view is not None else {}
    if any(unattributed.values()):
        listed = "  ".join(f"{f} {n}" for f, n in sorted(unattributed.items()) if n)
        out.append("\n  Elsewhere in the mesh, not tied to one route: ", style="dim")
        out.append(listed, style="yellow")
    out.rstrip()
    return out


def grpc_lines(codes: dict[str, int]) -> Text:
    """The grpc-status its gRPC callers got: HTTP says 200 for all of them."""
    out = Text()
    out.append("gRPC status codes (last interval)", style="bold underline")
    out.append("\n")
    for code, n in sorted(codes.items(), key=lambda item: int(item[0])):
        i = int(code)
        name = GRPC_STATUS_NAMES[i] if i < len(GRPC_STATUS_NAMES) else "?"
        out.append(f"  {code} {name} ", style="green" if i == 0 else "bold red")
        out.append(f"{n}")
    out.append("\n\n")
    return out


def upgrades_line(route: RouteStats) -> Text:
    """The route's upgraded (WebSocket) connections; the latencies above are their handshakes'."""
    out = Text()
    out.append("  WebSocket ", style="bold cyan")
    out.append(
        f"{route.upgrades_open} open, {route.upgrades} upgrades in the last interval"
        " (the latency above is their handshake's, to the 101)\n\n"
    )
    return out


class RouteDetailScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,enter,q", "dismiss", "Back"),
        # A modal screen hides the app's keys: this one is asked for here.
        Binding("t", "app.trace", "Trace"),
    ]

    def __init__(
        self,
        route: RouteStats,
        mesh: Mesh | None,
        view: MeshView | None,
        recent: RecentFailures | None = None,
    ) -> None:
        super().__init__()
        self.route = route
        self.mesh = mesh
        self.view = view
        self.recent = recent  # the app's: it sees every view, this screen only painted ones

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail-box"):
            yield Static(
                detail_text(self.route, self.mesh, self.view, self.recent), id="detail-body"
            )

    def show(self, view: MeshView, mesh: Mesh | None) -> None:
        """A newer view; the route keeps its last numbers if it is gone from it."""
        route = next((r for r in view.routes if r.key == self.route.key), self.route)
        self.route, self.mesh, self.view = route, mesh, view
        self.query_one("#detail-body", Static).update(detail_text(route, mesh, view, self.recent))
