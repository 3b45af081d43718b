"""The HTTP engine's upgrades: a WebSocket upgrade request leaves HTTP parsing at its head,
what the client sends after it is held (with flow control) for the upgraded stream, and
`switch_protocols` hands the raw connection over to be spliced; other upgrade protocols are
served as ordinary requests. Real sockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import uvloop

from meshdev.common.sidecar_config import Limits
from meshdev.sidecar.http import (
    HIGH_WATER,
    HttpServer,
    RawEnd,
    Request,
    ResponseWriter,
    Splice,
    start_server,
)
from meshdev.sidecar.http.connection import ClientConnection
from tests.support import WAIT, wait_until

Handler = Callable[[Request, ResponseWriter], Awaitable[None]]
WS_HEAD = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[HttpServer]:
    srv = await start_server(handler, "127.0.0.1", 0, Limits())
    try:
        yield srv
    finally:
        await srv.close(grace=1.0)


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    """Sends back whatever it reads, until the other side closes."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


async def raw_end_to(port: int) -> RawEnd:
    """A client connection handed over as a RawEnd, as the upstream client does after a 101."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    transport.pause_reading()
    end = RawEnd(transport, b"")
    transport.set_protocol(end)
    return end


def spliced_to(port: int, gate: asyncio.Event | None = None) -> Handler:
    """A handler that answers an upgrade with a 101 and splices it to `port`."""

    async def handler(req: Request, w: ResponseWriter) -> None:
        assert req.upgrade == "websocket"
        assert not req.keep_alive  # an answer other than a 101 would close the connection
        if gate is not None:
            await gate.wait()
        up = await raw_end_to(port)
        down = await w.switch_protocols([("upgrade", "websocket")])
        splice = Splice(down, up, idle_timeout=0)
        try:
            await splice.wait()
        finally:
            splice.close()

    return handler


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)


async def test_switch_protocols_hands_the_raw_stream_over() -> None:
    async with echo_server() as port, serving(spliced_to(port)) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        # Bytes sent with the head belong to the upgraded stream.
        writer.write(WS_HEAD + b"early")
        head = await read_head(reader)
        assert head == (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"early"
        # What looks like HTTP is just bytes now.
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(18), WAIT) == b"GET / HTTP/1.1\r\n\r\n"
        assert srv.connections == 1
        writer.close()
        await wait_until(lambda: srv.connections == 0, "the connection gone")


async def test_bytes_before_the_101_are_held_with_flow_control() -> None:
    gate = asyncio.Event()
    early = b"e" * (4 * HIGH_WATER)
    async with echo_server() as port, serving(spliced_to(port, gate)) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(WS_HEAD + early)
        [conn] = srv._conns
        assert isinstance(conn, ClientConnection)
        # Past the high-water mark the connection stops reading (the kernel holds the rest).
        await wait_until(lambda: conn._rpaused, "reading paused")
        held = conn._upgrade_buf
        assert held is not None and HIGH_WATER < len(held) < len(early)
        gate.set()
        await read_head(reader)
        assert await asyncio.wait_for(reader.readexactly(len(early)), WAIT) == early
        writer.close()
        await wait_until(lambda: srv.connections == 0, "the connection gone")


async def test_switch_protocols_refuses_a_request_that_asked_for_none() -> None:
    errors: list[Exception] = []

    async def handler(req: Request, w: ResponseWriter) -> None:
        try:
            await w.switch_protocols([])
        except RuntimeError as exc:
            errors.append(exc)
        await w.start(200, [("content-length", "2")])
        await w.write(b"ok")
        await w.end()

    async with serving(handler) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        # An Upgrade header without `Connection: upgrade` asks for nothing.
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
        assert (await read_head(reader)).startswith(b"HTTP/1.1 200 OK")
        assert await reader.readexactly(2) == b"ok"
        writer.close()
    assert len(errors) == 1


async def test_an_unknown_upgrade_is_served_as_an_ordinary_request() -> None:
    seen: list[tuple[str, str | None, bytes]] = []

    async def handler(req: Request, w: ResponseWriter) -> None:
        body = await req.body.read_all(1 << 20)
        assert body is not None
        seen.append((req.path, req.upgrade, body))
        await w.start(200, [("content-length", "0")])
        await w.end()

    foo = b"Host: a\r\nConnection: upgrade\r\nUpgrade: foo/2\r\n"
    async with serving(handler) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(
            b"POST /a HTTP/1.1\r\n" + foo + b"Content-Length: 3\r\n\r\nabc"
            b"POST /b HTTP/1.1\r\n" + foo + b"Transfer-Encoding: chunked\r\n\r\n"
            b"2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        for _ in range(3):
            assert (await read_head(reader)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
    assert seen == [("/a", None, b"abc"), ("/b", None, b"de"), ("/c", None, b"")]


def test_upgrades_under_uvloop() -> None:
    async def scenario() -> bytes:
        async with echo_server() as port, serving(spliced_to(port)) as srv:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(WS_HEAD + b"one")
            await read_head(reader)
            writer.write(b"two")
            got = await asyncio.wait_for(reader.readexactly(6), WAIT)
            writer.close()
            await wait_until(lambda: srv.connections == 0, "the connection gone")
            return got

    assert uvloop.run(scenario()) == b"onetwo"
