"""The control plane's minimal loopback HTTP client, against real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from meshdev.runtime import loopback


@asynccontextmanager
async def server(answer: bytes, seen: list[bytes] | None = None) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(ln.split(b":")[1])
                for ln in head.split(b"\r\n")
                if ln.lower().startswith(b"content-length")
            ),
            0,
        )
        body = await reader.readexactly(length) if length else b""
        if seen is not None:
            seen.append(head + body)
        writer.write(answer)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        await srv.wait_closed()


async def test_post_with_body_and_headers() -> None:
    seen: list[bytes] = []
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
        b'{"ok": true}extra'
    )
    async with server(reply, seen) as url:
        answer = await loopback.request(
            "POST", f"{url}/config?x=1", body=b'{"a":1}', headers={"x-meshdev-token": "t"}
        )
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.body == b'{"ok": true'  # exactly Content-Length bytes
    request = seen[0].decode()
    assert request.startswith("POST /config?x=1 HTTP/1.1\r\n")
    assert "x-meshdev-token: t\r\n" in request
    assert "Content-Length: 7\r\n" in request
    assert request.endswith('\r\n\r\n{"a":1}')


async def test_chunked_answer() -> None:
    reply = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
    )
    async with server(reply) as url:
        answer = await loopback.request("GET", f"{url}/ready")
    assert (answer.status, answer.body) == (503, b"hello world")


async def test_close_delimited_answer() -> None:
    async with server(b"HTTP/1.0 200 OK\r\n\r\nuntil close") as url:
        answer = await loopback.request("GET", url)
    assert answer.body == b"until close"


async def test_not_http_and_refused_and_timeout() -> None:
    async with server(b"SSH-2.0-OpenSSH\r\n\r\n") as url:
        with pytest.raises(loopback.LoopbackError, match="not an HTTP answer"):
            await loopback.request("GET", url)
    async with server(b"") as url:
        port = url.rsplit(":", 1)[1]
    with pytest.raises(ConnectionRefusedError):
        await loopback.request("GET", f"http://127.0.0.1:{port}/")

    release = asyncio.Event()
    handlers: list[asyncio.Task[None]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        await release.wait()
        writer.close()
        await writer.wait_closed()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        with pytest.raises(TimeoutError):
            await loopback.request(
                "GET", f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/", timeout=0.2
            )
    finally:
        release.set()
        await asyncio.gather(*handlers)
        srv.close()
        await srv.wait_closed()
