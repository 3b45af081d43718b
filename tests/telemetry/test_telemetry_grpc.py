"""gRPC calls from a real sidecar's /stats/stream to the dashboard's views: a real grpcio
client and server through a real sidecar, and the grpc-status codes its callers got (HTTP 200
for every one of them) counted on the route, local answers (the route timeout's
DEADLINE_EXCEEDED) included."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import grpc
import pytest

from meshdev.telemetry.aggregation.mesh import Aggregator
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.client import SidecarClient
from tests.sidecar.helpers import sidecar
from tests.sidecar.http2.grpcapp import call, channel, grpc_server
from tests.sidecar.proxy.wsapp import outbound_to
from tests.support import LOCALHOST, wait_until


async def test_grpc_status_codes_reach_the_routes_view() -> None:
    views: list[MeshView] = []
    aggregator = Aggregator()
    client: SidecarClient | None = None

    def changed() -> None:
        assert client is not None
        views.append(aggregator.build([client.state(time.monotonic())], time.time()))

    def codes() -> dict[str, int]:
        total: dict[str, int] = {}
        for v in views:
            for r in v.routes:
                if r.key == "backend/main":
                    for code, n in r.grpc_codes.items():
                        total[code] = total.get(code, 0) + n
        return total

    cfg_route = {"timeout": 0.3}
    async with (
        grpc_server() as app,
        sidecar(outbound_to(app.port, route=cfg_route, cluster={"http2": True})) as sc,
        aiohttp.ClientSession() as session,
    ):
        admin = f"http://{LOCALHOST}:{sc.admin_port}"
        client = SidecarClient("frontend-0", admin, session, interval=0.05, on_change=changed)
        task = asyncio.create_task(client.run())
        port = next(x.port for x in sc.config.listeners if x.name == "outbound")
        try:
            await wait_until(lambda: client.connected and client.topology is not None, "stream")
            async with channel(port) as ch:
                for _ in range(3):
                    await call(ch, "Unary", b"x")
                with pytest.raises(grpc.aio.AioRpcError):
                    await call(ch, "Fail", b"14")
                with pytest.raises(grpc.aio.AioRpcError):
                    await call(ch, "Slow", b"2")
            await wait_until(lambda: codes() == {"0": 3, "14": 1, "4": 1}, "gRPC codes")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
