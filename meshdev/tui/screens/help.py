"""`?`: every key, and how to read the panels."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = (
    ("1-6", "traffic, pods, events, logs, security, traces"),
    (
        "enter",
        "route detail: latency histogram, failures explained by mesh.yaml; on a "
        "trace: its waterfall",
    ),
    (
        "t",
        "a trace of the selected route (its newest failed one), or in events of the "
        "newest breaker or ejection's cluster",
    ),
    ("s", "sort the focused table by its next column; traces: newest, slowest, failed"),
    ("tab", "next panel"),
    ("l", "start / stop the load generator (to the ingress)"),
    ("+ / -", "load rate up / down"),
    ("b", "trip the breaker: a burst of concurrent requests"),
    ("x", "make one replica fail (its chaos knob); again to heal it"),
    ("p", "a plaintext request straight at a secured pod, on Security the selected one"),
    ("a", "a request from a service no authorization policy allows (403, explained)"),
    (
        "f",
        "switch an abort fault on / off on the selected route, at runtime (until you move "
        "the cursor, it sits on the route the load takes)",
    ),
    (
        "w",
        "shift the canary weight of the selected route, else of the busiest split one "
        "(applied now, not written to mesh.yaml)",
    ),
    ("/", "filter the log (a regex per source)"),
    ("?", "this help"),
    ("q", "quit and tear the mesh down (unless --keep)"),
)

PANELS = (
    (
        "Routes",
        "per route, summed over sidecars: RPS, success %, latency, retries per second, and "
        "FLAGS/s: Envoy's response flags per second, as RPS (UO 50 at RPS 100: half of the "
        "requests overflowed a breaker); WS n: upgraded connections open now.",
    ),
    (
        "Clusters",
        "BREAKER is the state now: OPEN while a limit is full (the next request over it "
        "gets 503 UO), tripped when requests overflowed in the last interval.",
    ),
    (
        "Hosts",
        "each endpoint: EJECTED by outlier detection, and when it returns (its ejection time"
        " over: at the next detection sweep).",
    ),
    ("Pods", "state, readiness, restarts, and the config version each sidecar serves."),
    ("Events", "reloads, rejected saves, breaker trips, ejections, exits, your actions."),
    (
        "Security",
        "each caller -> destination seen: mTLS or plaintext, RPS, 403/s (authorization), "
        "the destination's policies in mesh.yaml; per pod: RBAC allowed/denied, refused "
        "handshakes, and when its certificate expires (yellow: under 10% of its life).",
    ),
    (
        "Traces",
        "requests followed across hops, read from every sidecar's /spans once a second: "
        "route, services crossed, total time, spans, status and response flags; enter opens "
        "the waterfall with each failure explained by mesh.yaml.",
    ),
)


def help_text() -> Text:
    out = Text()
    out.append("Keys\n", style="bold underline")
    for key, what in KEYS:
        out.append(f"  {key:>7}  ", style="bold cyan")
        out.append(f"{what}\n")
    out.append("\n")
    out.append("Panels\n", style="bold underline")
    for name, what in PANELS:
        out.append(f"  {name:>8}  ", style="bold")
        out.append(f"{what}\n")
    out.rstrip()
    return out


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(help_text(), id="help-body")
