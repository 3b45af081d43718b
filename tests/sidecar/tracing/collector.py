"""A stand-in trace collector on loopback: takes Zipkin v2 (POST /api/v2/spans) and OTLP/HTTP
JSON (POST /v1/traces) reports and keeps them, answering `status` (202 by default, as Zipkin)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support import LOCALHOST


@dataclass
class Collector:
    status: int = 202
    # Each request waits this long before answering (a slow collector).
    delay: float = 0.0
    zipkin: list[list[dict[str, Any]]] = field(default_factory=list)
    otlp: list[dict[str, Any]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def zipkin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/api/v2/spans"

    @property
    def otlp_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/v1/traces"

    def zipkin_spans(self) -> list[dict[str, Any]]:
        return [s for report in self.zipkin for s in report]

    def otlp_spans(self) -> list[dict[str, Any]]:
        return [
            s
            for report in self.otlp
            for rs in report["resourceSpans"]
            for ss in rs["scopeSpans"]
            for s in ss["spans"]
        ]

    async def start(self) -> Collector:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/api/v2/spans", self._zipkin)
        app.router.add_post("/v1/traces", self._otlp)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _take(self, request: web.Request) -> Any:
        self.content_types.append(request.headers.get("content-type", ""))
        body = json.loads(await request.read())
        if self.delay:
            await asyncio.sleep(self.delay)
        return body

    async def _zipkin(self, request: web.Request) -> web.Response:
        body = await self._take(request)
        if self.status < 300:
            self.zipkin.append(body)
        return web.Response(status=self.status)

    async def _otlp(self, request: web.Request) -> web.Response:
        body = await self._take(request)
        if self.status < 300:
            self.otlp.append(body)
        return web.json_response({}, status=self.status)


@asynccontextmanager
async def collector(**kwargs: Any) -> AsyncIterator[Collector]:
    col = await Collector(**kwargs).start()
    try:
        yield col
    finally:
        await col.stop()


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)
