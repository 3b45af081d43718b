"""Test upstreams and an in-process sidecar, all on 127.0.0.1 with ephemeral ports.

`Upstream` is a small aiohttp app that says who it is (`x-upstream: <name>`), echoes what it
got, and does what a test asks of it through the query string or its `mode`:
`?status=503`, `?delay=0.3`, `?hold=1` (wait for `release()`), `/reset` (close the
connection without an answer), `/echo` (stream the body back), `/big?size=N` (stream N bytes).
`script` holds what the next requests do, one entry each: "503" (a status), "reset",
"delay:0.5" (then answer 200), "overloaded" (503 with x-envoy-overloaded).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from tests.support import LOCALHOST, free_port


@dataclass
class Upstream:
    name: str
    port: int = 0
    # A status every request gets unless its query asks for another (None: 200).
    status: int | None = None
    delay: float = 0.0
    reset_all: bool = False
    hits: int = 0
    active: int = 0
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    seen_targets: list[str] = field(default_factory=list)
    seen_bodies: list[bytes] = field(default_factory=list)
    script: deque[str] = field(default_factory=deque)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def address(self) -> tuple[str, int]:
        return LOCALHOST, self.port

    def release(self) -> None:
        self._release.set()

    async def start(self) -> Upstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/reset", self._reset)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/big", self._big)
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _record(self, request: web.Request) -> None:
        self.hits += 1
        self.seen_headers.append({k.lower(): v for k, v in request.headers.items()})
        self.seen_targets.append(request.raw_path)

    def _headers(self) -> dict[str, str]:
        return {"x-upstream": self.name}

    async def _any(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        step = self.script.popleft() if self.script else ""
        if self.reset_all or step == "reset":
            return await self._abort(request)
        self.active += 1
        try:
            delay = float(request.query.get("delay", self.delay))
            if step.startswith("delay:"):
                delay = float(step[6:])
            if delay:
                await asyncio.sleep(delay)
            if "hold" in request.query:
                await self._release.wait()
            status = int(request.query.get("status", self.status or 200))
            headers = self._headers()
            if step == "overloaded":
                status = 503
                headers["x-envoy-overloaded"] = "true"
            elif step.isdigit():
                status = int(step)
            self.seen_bodies.append(await request.read())
            return web.json_response(
                {
                    "upstream": self.name,
                    "method": request.method,
                    "path": request.raw_path,
                    "headers": dict(request.headers),
                },
                status=status,
                headers=headers,
            )
        finally:
            self.active -= 1

    async def _reset(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        return await self._abort(request)

    async def _abort(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        transport.abort()
        # Nothing can be answered on an aborted connection; aiohttp drops this response.
        return web.Response(status=204)

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        resp = web.StreamResponse(headers=self._headers())
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        async for chunk in request.content.iter_chunked(64 * 1024):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def _big(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        size = int(request.query["size"])
        resp = web.StreamResponse(headers=self._headers())
        resp.content_length = size
        await resp.prepare(request)
        block = b"x" * (64 * 1024)
        left = size
        while left > 0:
            n = min(left, len(block))
            await resp.write(block[:n])
            left -= n
        await resp.write_eof()
        return resp


def endpoint(up: Upstream) -> dict[str, Any]:
    return {"address": LOCALHOST, "port": up.port, "pod": up.name}


def outbound_config(
    clusters: list[dict[str, Any]],
    vhosts: list[dict[str, Any]],
    *,
    version: int = 1,
    port: int | None = None,
    extra_listeners: list[dict[str, Any]] | None = None,
    access_log: str = "off",
    kind: str = "outbound",
) -> SidecarConfig:
    listeners: list[dict[str, Any]] = []
    if kind == "outbound":
        listeners.append(
            {
                "name": "outbound",
                "kind": "outbound",
                "address": LOCALHOST,
                "port": port or free_port(),
            }
        )
    listeners += extra_listeners or []
    return SidecarConfig.model_validate(
        {
            "version": version,
            "mesh": "test",
            "node": "test-node",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": listeners,
            "virtual_hosts": vhosts,
            "clusters": clusters,
            "access_log": access_log,
        }
    )


# A virtual host whose answers carry x-envoy-attempt-count (Envoy sends it only when asked).
COUNTED: dict[str, Any] = {"include_attempt_count_in_response": True}


def simple_config(
    upstreams: list[Upstream],
    *,
    route: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    version: int = 1,
    port: int | None = None,
    access_log: str = "off",
    vhost: dict[str, Any] | None = None,
) -> SidecarConfig:
    """One service `backend` (every upstream an endpoint) behind one route `main` on `/`;
    `vhost` adds fields to its virtual host (see COUNTED)."""
    r = {
        "name": "main",
        "match": {"prefix": "/"},
        "clusters": [{"cluster": "backend", "weight": 1}],
    }
    r.update(route or {})
    c: dict[str, Any] = {"name": "backend", "endpoints": [endpoint(u) for u in upstreams]}
    c.update(cluster or {})
    return outbound_config(
        [c],
        [{"name": "backend", "domains": ["backend"], "routes": [r], **(vhost or {})}],
        version=version,
        port=port,
        access_log=access_log,
    )


@asynccontextmanager
async def upstreams(*names: str) -> AsyncIterator[list[Upstream]]:
    ups = [await Upstream(n).start() for n in names]
    try:
        yield ups
    finally:
        for u in ups:
            await u.stop()


@asynccontextmanager
async def sidecar(config: SidecarConfig) -> AsyncIterator[Sidecar]:
    sc = Sidecar(config, token="test-token")
    await sc.start()
    try:
        yield sc
    finally:
        await sc.stop()


@asynccontextmanager
async def client(timeout: float = 30.0) -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=ClientTimeout(total=timeout)) as session:
        yield session


def listener_url(sc: Sidecar, name: str = "outbound") -> str:
    lst = next(x for x in sc.config.listeners if x.name == name)
    return f"http://{lst.address}:{lst.port}"


def stat(sc: Sidecar, name: str) -> int:
    """A counter's or gauge's value (0 when it does not exist yet, as Envoy reports it)."""
    for c in sc.stats.counters():
        if c.name == name:
            return c.value
    for g in sc.stats.gauges():
        if g.name == name:
            return g.value
    return 0


def histogram_count(sc: Sidecar, name: str) -> int:
    for h in sc.stats.histograms():
        if h.name == name:
            return h.count
    return 0


async def get(
    session: ClientSession,
    base: str,
    path: str = "/",
    *,
    host: str = "backend",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    data: Any = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to a listener with a Host header; returns status, headers, body."""
    h = {"Host": host, **(headers or {})}
    async with session.request(method, base + path, headers=h, data=data) as resp:
        body = await resp.read()
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, body


def tally(values: list[str]) -> Counter[str]:
    return Counter(values)


def dead_endpoint() -> dict[str, Any]:
    """An endpoint where nothing listens (connects are refused)."""
    return {"address": LOCALHOST, "port": free_port(), "pod": "dead"}


def log_lines(path: Any) -> list[list[str]]:
    """The access log's lines split into fields (after the sidecar stopped and flushed)."""
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f.read().splitlines()]
