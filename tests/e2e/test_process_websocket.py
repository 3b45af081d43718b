"""WebSocket through a whole mesh on the process runtime, as a user meets it: `meshdev up` on the
example, aiohttp's WebSocket client at the gateway, the example app's `/ws` echo behind the
frontend's sidecar (ingress gateway -> frontend's inbound sidecar -> app), and the stats each
hop keeps."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, WSMsgType

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, example_copy
from tests.support import WAIT, free_port, wait_until_sync

pytestmark = pytest.mark.slow


async def _echo_through(url: str) -> list[str | bytes]:
    got: list[str | bytes] = []
    async with ClientSession() as s, s.ws_connect(url, max_msg_size=0) as ws:
        for message in ("through the mesh", b"\x00" * 300_000):
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
            reply = await asyncio.wait_for(ws.receive(), WAIT)
            assert reply.type in (WSMsgType.TEXT, WSMsgType.BINARY), reply
            got.append(reply.data)
    return got


def _no_open_stream(admin_url: str, listener: str) -> Callable[[], bool]:
    name = f"http.{listener}.downstream_cx_upgrades_active"
    return lambda: admin_stats(admin_url, name)[name] == 0


def test_websocket_through_the_example_mesh(tmp_path: Path) -> None:
    name = f"e2e-ws-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        got = asyncio.run(_echo_through(f"ws://127.0.0.1:{port}/ws"))
        assert got == ["through the mesh", b"\x00" * 300_000]

        pods = {p["name"]: p for p in up.status()["pods"]}
        ingress, frontend = pods["ingress"]["admin_url"], pods["frontend-0"]["admin_url"]
        gateway = admin_stats(ingress, r"downstream_cx_upgrades|downstream_rq_101")
        assert gateway["http.ingress.downstream_cx_upgrades_total"] == 1
        assert gateway["vhost.frontend.route.default.downstream_cx_upgrades_total"] == 1
        assert gateway["http.ingress.downstream_rq_101"] == 1
        # Once the client closed, every hop's stream has ended.
        for admin, listener in ((ingress, "ingress"), (frontend, "inbound")):
            wait_until_sync(
                _no_open_stream(admin, listener), f"{listener}'s upgrades_active back to 0"
            )
        callee = admin_stats(frontend, r"downstream_cx_upgrades_total")
        assert callee["http.inbound.downstream_cx_upgrades_total"] == 1
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
