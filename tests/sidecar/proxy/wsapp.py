"""A real WebSocket app (aiohttp's server) for the upgrade tests, and the sidecar configs that
put one or two sidecars in front of it, all on 127.0.0.1 with ephemeral ports.

Paths: `/ws` echoes text and binary messages; `/ws/stall` echoes too, but reads nothing until
`release()`; `/ws/bye` sends "bye" and closes; `/deny` refuses the handshake with a 403;
`/flaky` answers its first handshake 503 and accepts the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import WSMsgType, web

from meshdev.common.sidecar_config import SidecarConfig
from tests.sidecar.helpers import outbound_config
from tests.support import LOCALHOST, free_port


class WsApp:
    """The app: counts handshakes it accepted and streams that ended (with how they ended)."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self.ended: list[str] = []  # per stream: "client closed" / "dropped" / "app closed"
        self.seen_headers: list[dict[str, str]] = []
        self._flaky_calls = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def release(self) -> None:
        self._release.set()

    async def start(self) -> WsApp:
        app = web.Application()
        app.router.add_get("/ws", self._echo)
        app.router.add_get("/ws/stall", self._stall)
        app.router.add_get("/ws/bye", self._bye)
        app.router.add_get("/deny", self._deny)
        app.router.add_get("/flaky", self._flaky)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _accept(self, request: web.Request) -> web.WebSocketResponse:
        self.seen_headers.append({k.lower(): v for k, v in request.headers.items()})
        # No size limit: the tests send messages of several MB.
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.accepted += 1
        return ws

    async def _echo_all(self, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        # 1000: a close handshake; 1006 (aiohttp's "abnormal closure"): the connection dropped.
        self.ended.append("client closed" if ws.close_code == 1000 else "dropped")

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        ws = await self._accept(request)
        await self._echo_all(ws)
        return ws

    async def _stall(self, request: web.Request) -> web.StreamResponse:
        ws = await self._accept(request)
        await self._release.wait()
        await self._echo_all(ws)
        return ws

    async def _bye(self, request: web.Request) -> web.StreamResponse:
        ws = await self._accept(request)
        await ws.send_str("bye")
        await ws.close()
        self.ended.append("app closed")
        return ws

    async def _deny(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="no sockets for you")

    async def _flaky(self, request: web.Request) -> web.StreamResponse:
        self._flaky_calls += 1
        if self._flaky_calls == 1:
            return web.Response(status=503, text="warming up")
        return await self._echo(request)


@asynccontextmanager
async def ws_app() -> AsyncIterator[WsApp]:
    app = await WsApp().start()
    try:
        yield app
    finally:
        await app.stop()


def outbound_to(
    port: int,
    *,
    route: dict[str, Any] | None = None,
    cluster: dict[str, Any] | None = None,
    access_log: str = "off",
) -> SidecarConfig:
    """An outbound sidecar: host `backend`, route `main` on `/`, its one endpoint at `port`
    (the app, or the inbound listener of a second sidecar)."""
    r: dict[str, Any] = {
        "name": "main",
        "match": {"prefix": "/"},
        "clusters": [{"cluster": "backend", "weight": 1}],
    }
    r.update(route or {})
    c: dict[str, Any] = {
        "name": "backend",
        "endpoints": [{"address": LOCALHOST, "port": port, "pod": "backend-0"}],
    }
    c.update(cluster or {})
    return outbound_config(
        [c],
        [{"name": "backend", "domains": ["backend"], "routes": [r]}],
        access_log=access_log,
    )


def inbound_to(
    app_port: int, *, cluster: dict[str, Any] | None = None, access_log: str = "off"
) -> SidecarConfig:
    """The callee's sidecar: an inbound listener (on a free port) in front of the app."""
    c: dict[str, Any] = {
        "name": "inbound|8080",
        "endpoints": [{"address": LOCALHOST, "port": app_port, "pod": "backend-0"}],
    }
    c.update(cluster or {})
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "mesh": "test",
            "node": "backend-0",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "access_log": access_log,
            "listeners": [
                {
                    "name": "inbound",
                    "kind": "inbound",
                    "address": LOCALHOST,
                    "port": free_port(),
                    "cluster": "inbound|8080",
                }
            ],
            "clusters": [c],
        }
    )
