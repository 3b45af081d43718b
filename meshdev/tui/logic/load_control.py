"""The dashboard's load button: meshdev's own open-loop generator aimed at the ingress.

One generator runs at a time (a LoadGenerator runs once, so a restart makes a new one); the
rate steps through a fixed ladder so `+` and `-` are predictable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from rich.text import Text

from meshdev.config import Mesh
from meshdev.config.model import Match
from meshdev.loadgen import LoadGenerator, LoadResult, LoadSpec

RATES = (5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
DEFAULT_RATE = 20.0
DEFAULT_PATH = "/"
# Services a plain HTTP/1.1 GET cannot exercise: the load generator speaks neither.
_NOT_FOR_GET = frozenset({"grpc", "http2", "tcp"})


def load_path(mesh: Mesh | None) -> str:
    """Where the dashboard's load and breaker trip send their GETs: the ingress's `load_path`,
    else the first route such a GET takes to an HTTP/1 service, else /. (A fixed path sent
    every request of a mesh that does not serve it to a 404, shown as load that went well.)"""
    ingress = mesh.ingress if mesh is not None else None
    if ingress is None:
        return DEFAULT_PATH
    if ingress.load_path is not None:
        return ingress.load_path
    assert mesh is not None
    for route in ingress.routes:
        m = route.match
        service = mesh.services.get(route.to)
        if service is not None and service.protocol in _NOT_FOR_GET:
            continue
        methods = (m.method,) if isinstance(m.method, str) else m.method
        if m.headers or m.regex is not None or (methods and "GET" not in methods):
            continue
        return m.path or m.prefix or DEFAULT_PATH
    return DEFAULT_PATH


def load_route(mesh: Mesh | None, path: str | None = None) -> str | None:
    """The route (its key, vhost/route, as the routes table shows it) that the load's GETs
    of `path` (default: the mesh's load_path) take once through the ingress: the first of the
    destination's routes a plain GET matches, `default` where mesh.yaml gives it none. None
    when no ingress route takes them, or the destination's routes leave them unmatched.
    Where the dashboard's f and w act before the user chose a route: on the top row (on the
    example, backend/canary, which wants a header the load never sends) they changed nothing
    the load would show."""
    if mesh is None or mesh.ingress is None:
        return None
    path = path if path is not None else load_path(mesh)
    entry = next((r for r in mesh.ingress.routes if _plain_get_matches(r.match, path)), None)
    if entry is None:
        return None
    routes = mesh.routes.get(entry.to)
    if routes is None:  # as the plan renders a destination without routes
        return f"{entry.to}/default"
    for i, route in enumerate(routes):
        if _plain_get_matches(route.match, path):
            return f"{entry.to}/{route.name or f'r{i}'}"
    return None


def _plain_get_matches(m: Match, path: str) -> bool:
    """Whether Envoy's route match `m` takes a GET of `path` sent without extra headers."""
    path = path.split("?", 1)[0]
    methods = (m.method,) if isinstance(m.method, str) else m.method
    if methods and "GET" not in methods:
        return False
    # Only "absent" header conditions hold for a request that sends none of its own.
    if any(h.present is not False for h in m.headers.values()):
        return False
    if m.regex is not None:
        return re.fullmatch(m.regex, path) is not None
    if m.path is not None:
        return path == m.path
    return m.prefix is None or path.startswith(m.prefix)


class LoadControl:
    def __init__(self, base_url: str, path: str = DEFAULT_PATH, rate: float = DEFAULT_RATE) -> None:
        self.url = base_url.rstrip("/") + path
        self.rate = rate
        self._gen: LoadGenerator | None = None
        self._last: LoadResult | None = None

    @property
    def running(self) -> bool:
        return self._gen is not None

    def start(self) -> str:
        """Start sending (inside the running event loop); what it does, in words."""
        if self._gen is None:
            self._gen = LoadGenerator(LoadSpec(self.url, rps=self.rate))
            self._gen.start()
            self._last = None
        return f"load: {self.rate:g} req/s to {self.url}"

    async def stop(self) -> str:
        gen, self._gen = self._gen, None
        if gen is None:
            return "load: not running"
        result = await gen.stop()
        self._last = result
        return f"load stopped: {result.requests} requests, {result.outcomes.short()}"

    def step(self, direction: int) -> str:
        """One rung up (+1) or down (-1) the rate ladder; applies at once when running."""
        higher = [r for r in RATES if r > self.rate]
        lower = [r for r in RATES if r < self.rate]
        if direction > 0 and higher:
            self.rate = higher[0]
        elif direction < 0 and lower:
            self.rate = lower[-1]
        if self._gen is not None:
            self._gen.set_rate(self.rate)
        return f"load rate: {self.rate:g} req/s"

    def snapshot(self) -> LoadResult | None:
        return self._gen.snapshot() if self._gen is not None else self._last


# How each kind of request that was not ok shows on the line.
_FAILURE_STYLE = {"4xx": "yellow", "5xx": "red", "err": "bold red"}


@dataclass(frozen=True, slots=True)
class LoadLine:
    running: bool
    rate: float
    url: str
    result: LoadResult | None


def load_line(load: LoadControl | None, ingress: str | None, path: str) -> LoadLine:
    if load is None:
        target = ingress.rstrip("/") + path if ingress else "(no ingress)"
        return LoadLine(False, DEFAULT_RATE, target, None)
    return LoadLine(load.running, load.rate, load.url, load.snapshot())


def watching_text() -> Text:
    """The load line of a dashboard that only watches (`meshdev watch`): the load, if any, is
    sent by the `meshdev up` that runs the mesh, which this one cannot see or drive."""
    text = Text(" load ", style="reverse")
    text.append(
        "  sent by the `meshdev up` that runs the mesh (l there); this dashboard only watches",
        style="dim",
    )
    return text


def load_text(line: LoadLine) -> Text:
    text = Text()
    if not line.running:
        text.append(" load off ", style="reverse")
        text.append(f"  l: send {line.rate:g} req/s to {line.url}   +/-: rate", style="dim")
        if line.result is not None and line.result.requests:
            text.append(
                f"   last run: {line.result.requests} requests, {line.result.outcomes.short()}",
                style="dim",
            )
        return text
    text.append(" load on ", style="bold reverse green")
    # The path only: the header shows the ingress, and 80 columns must keep the figures after.
    text.append(f"  {line.rate:g} req/s -> {_path(line.url)}")
    result = line.result
    if result is None:
        return text
    text.append(f"  sent {result.requests}")
    # ok is 2xx/3xx only: a 404 for every request is no load that went well, and a 429 of the
    # rate limit is a mesh behaviour to see, so each kind that is not ok comes next, apart.
    o = result.outcomes
    if o.total:
        ok = o.percent(o.ok)
        text.append(f"  ok {ok:.1f}%", style="green" if ok >= 99 else "red")
    for label, count in o.failures():
        text.append(f"  {label} {o.percent(count):.1f}%", style=_FAILURE_STYLE[label])
    p99 = result.latency.quantile(0.99) if result.latency.count else math.nan
    if not math.isnan(p99):
        text.append(f"  p99 {p99:.1f} ms")
    bad = sorted((code, n) for code, n in result.status.items() if code >= 400)
    for code, n in bad[:3]:
        text.append(f"  {code}x{n}", style="yellow")
    for flag, n in sorted(result.flags.items())[:3]:
        text.append(f"  {flag} {n}", style="bold red" if flag == "UO" else "yellow")
    return text


def _path(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
