"""Upgraded (WebSocket) connections from a real sidecar's /stats/stream to the dashboard's
views: the route's open connections while they are open, and its upgrades once each."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from meshdev.telemetry.aggregation.mesh import Aggregator
from meshdev.telemetry.aggregation.view import MeshView, RouteStats
from meshdev.telemetry.io.client import SidecarClient
from tests.sidecar.helpers import listener_url, sidecar
from tests.sidecar.proxy.wsapp import outbound_to, ws_app
from tests.support import LOCALHOST, wait_until


async def test_open_websockets_and_upgrades_reach_the_routes_view() -> None:
    views: list[MeshView] = []
    aggregator = Aggregator()
    client: SidecarClient | None = None

    def changed() -> None:
        assert client is not None
        views.append(aggregator.build([client.state(time.monotonic())], time.time()))

    def main() -> RouteStats:
        return next(r for r in views[-1].routes if r.key == "backend/main")

    async with (
        ws_app() as app,
        sidecar(outbound_to(app.port)) as sc,
        aiohttp.ClientSession() as session,
    ):
        admin = f"http://{LOCALHOST}:{sc.admin_port}"
        client = SidecarClient("frontend-0", admin, session, interval=0.05, on_change=changed)
        task = asyncio.create_task(client.run())
        try:
            await wait_until(lambda: client.connected and client.topology is not None, "stream")
            url = listener_url(sc) + "/ws"
            async with (
                session.ws_connect(url, headers={"Host": "backend"}) as one,
                session.ws_connect(url, headers={"Host": "backend"}) as two,
            ):
                await wait_until(lambda: views and main().upgrades_open == 2, "two open")
                for ws in (one, two):
                    await ws.send_str("ping")
                    assert (await ws.receive()).data == "ping"
            await wait_until(lambda: main().upgrades_open == 0, "none open")
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    upgrades = sum(r.upgrades for v in views for r in v.routes if r.key == "backend/main")
    assert upgrades == 2
