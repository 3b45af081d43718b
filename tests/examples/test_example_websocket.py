"""The example app's WebSocket echo (`GET /ws`, examples/flask-app/websocket_echo.py): a real
app.py process on loopback, aiohttp's WebSocket client, and raw sockets for broken clients."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import ClientSession, WSMsgType, WSServerHandshakeError

from tests.support import ROOT, WAIT

APP = ROOT / "examples" / "flask-app" / "app.py"
READY = re.compile(r"listening on http://127\.0\.0\.1:(?P<port>\d+)")
HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"HOST": "127.0.0.1", "PORT": "0", "SERVICE": "echo"})
    proc = subprocess.Popen(
        [sys.executable, str(APP)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = READY.search(line)
        assert match, line
        yield f"http://127.0.0.1:{match['port']}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
async def session() -> AsyncIterator[ClientSession]:
    async with ClientSession() as s:
        yield s


async def test_messages_come_back_as_sent(app_url: str, session: ClientSession) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB: a 64-bit length
    async with session.ws_connect(app_url + "/ws", max_msg_size=0) as ws:
        for message in ("hi", "ä" * 200, b"\x00\x01", b"x" * 70_000, big):
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
            got = await asyncio.wait_for(ws.receive(), WAIT)
            assert got.type == (WSMsgType.TEXT if isinstance(message, str) else WSMsgType.BINARY)
            assert got.data == message
        await ws.ping(b"are you there")
        await ws.send_str("after the ping")
        got = await asyncio.wait_for(ws.receive(), WAIT)
        assert got.data == "after the ping"
        await ws.close()
        assert ws.close_code == 1000


async def test_the_rest_of_the_app_is_unchanged(app_url: str, session: ClientSession) -> None:
    async with session.get(app_url + "/") as resp:
        assert resp.status == 200
        assert (await resp.json())["service"] == "echo"
    # /ws without an upgrade is an ordinary request, which Flask has no route for.
    async with session.get(app_url + "/ws") as resp:
        assert resp.status == 404
    with pytest.raises(WSServerHandshakeError) as refused:
        await session.ws_connect(app_url + "/ws", headers={"Sec-WebSocket-Version": "8"})
    assert refused.value.status == 400


async def test_an_unmasked_client_frame_is_a_protocol_error(app_url: str) -> None:
    port = int(app_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HANDSHAKE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101 ")
    # RFC 6455's example accept key for this nonce.
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    writer.write(b"\x81\x02hi")  # a text frame without the mask bit
    frame = await asyncio.wait_for(reader.read(), WAIT)  # to the close
    writer.close()
    assert frame[0] == 0x88  # FIN + close
    assert int.from_bytes(frame[2:4], "big") == 1002
