"""WebSocket through a whole mesh on the process runtime, as a user meets it: `meshdev up` on the
example, aiohttp's WebSocket client at the gateway, the example app's `/ws` echo behind the
frontend's sidecar (ingress gateway -> frontend's inbound sidecar -> app), the destination's
`idle_timeout` closing a quiet connection, and the stats each hop keeps."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import ClientSession, WSMsgType

from tests.e2e.meshrun import EXAMPLE_DIR, MeshUp, admin_stats, env_for, example_copy
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


async def _quiet_until_closed(url: str) -> float:
    """Seconds from the last message until the mesh closed a quiet connection."""
    async with ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_str("then nothing")
        assert (await asyncio.wait_for(ws.receive(), WAIT)).data == "then nothing"
        quiet = time.monotonic()
        closed = await asyncio.wait_for(ws.receive(), WAIT)
        assert closed.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), closed
        return time.monotonic() - quiet


def _no_open_stream(admin_url: str, listener: str) -> Callable[[], bool]:
    name = f"http.{listener}.downstream_cx_upgrades_active"
    return lambda: admin_stats(admin_url, name)[name] == 0


def test_websocket_through_the_example_mesh(tmp_path: Path) -> None:
    name = f"e2e-ws-{os.getpid()}"
    port = free_port()
    # frontend's idle_timeout holds on the gateway's hop and on frontend's own.
    text = (EXAMPLE_DIR / "mesh.yaml").read_text()
    policy = "  frontend:\n    lb: round_robin\n"
    assert policy in text
    text = text.replace(policy, policy + "    idle_timeout: 1s\n")
    mesh_file = example_copy(tmp_path, name, port, text)
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        got = asyncio.run(_echo_through(f"ws://127.0.0.1:{port}/ws"))
        assert got == ["through the mesh", b"\x00" * 300_000]
        quiet_for = asyncio.run(_quiet_until_closed(f"ws://127.0.0.1:{port}/ws"))
        assert 0.9 < quiet_for < 5.0

        pods = {p["name"]: p for p in up.status()["pods"]}
        ingress, frontend = pods["ingress"]["admin_url"], pods["frontend-0"]["admin_url"]
        gateway = admin_stats(
            ingress, r"downstream_cx_upgrades|downstream_rq_101|downstream_rq_idle_timeout"
        )
        assert gateway["http.ingress.downstream_cx_upgrades_total"] == 2
        assert gateway["vhost.frontend.route.default.downstream_cx_upgrades_total"] == 2
        assert gateway["http.ingress.downstream_rq_101"] == 2
        # The quiet connection's timer went off on one hop (or, by a hair, on both): the
        # callee's, whose last byte was a little earlier, closes it for the gateway too.
        callee = admin_stats(frontend, r"downstream_cx_upgrades_total|downstream_rq_idle_timeout")
        idle = (
            gateway["http.ingress.downstream_rq_idle_timeout"]
            + callee["http.inbound.downstream_rq_idle_timeout"]
        )
        assert 1 <= idle <= 2
        assert callee["http.inbound.downstream_cx_upgrades_total"] == 2
        # Once the client closed, every hop's stream has ended.
        for admin, listener in ((ingress, "ingress"), (frontend, "inbound")):
            wait_until_sync(
                _no_open_stream(admin, listener), f"{listener}'s upgrades_active back to 0"
            )
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
