"""The HTTP/1.1 server's behaviour on well-formed traffic: requests, framing, streaming,
keep-alive, back-pressure, errors and shutdown. Real sockets on loopback throughout."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from meshdev.common.sidecar_config import Limits
from meshdev.sidecar.http import (
    HIGH_WATER,
    BodyError,
    HttpServer,
    Request,
    ResponseWriter,
    start_server,
)
from tests.support import WAIT, wait_until

MiB = 1024 * 1024
Handler = Callable[[Request, ResponseWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler, limits: Limits | None = None) -> AsyncIterator[HttpServer]:
    srv = await start_server(handler, "127.0.0.1", 0, limits or Limits())
    try:
        yield srv
    finally:
        await srv.close(grace=1.0)


class Client:
    """A raw keep-alive client that reads responses with a tiny HTTP/1.1 decoder."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), WAIT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                assert k == k.lower(), f"header name not lower-case: {k}"
                headers[k] = v.strip()
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = await self._chunked()
        else:
            body = await asyncio.wait_for(self.reader.read(), WAIT)
        return status, headers, body

    async def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n"

    async def closed(self) -> bool:
        """True when the server closes the connection (EOF) with nothing more sent."""
        try:
            return await asyncio.wait_for(self.reader.read(), WAIT) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


async def text(writer: ResponseWriter, status: int, body: bytes) -> None:
    await writer.start(status, [("content-type", "text/plain"), ("content-length", str(len(body)))])
    await writer.write(body)
    await writer.end()


async def test_request_fields_for_origin_form() -> None:
    seen: list[Request] = []

    async def handler(req: Request, writer: ResponseWriter) -> None:
        seen.append(req)
        await text(writer, 200, b"ok")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(
            b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: backend:8080\r\nX-Trace: T1\r\nAccept: */*\r\n\r\n"
        )
        assert (await c.response())[0] == 200
        local = c.writer.get_extra_info("sockname")
        c.close()
    req = seen[0]
    assert (req.method, req.target, req.path, req.query) == (
        "GET",
        "/a/b?x=1&y=2",
        "/a/b",
        "x=1&y=2",
    )
    assert req.authority == "backend:8080"
    assert req.headers == [("host", "backend:8080"), ("x-trace", "T1"), ("accept", "*/*")]
    assert req.keep_alive and req.version == "1.1"
    assert req.client == (local[0], local[1])
    assert 0 < req.received_at <= asyncio.get_running_loop().time()
    assert req.origin_form == "/a/b?x=1&y=2"
    assert req.header("x-trace") == "T1"
    assert req.body.length is None and not req.body.has_body


@pytest.mark.parametrize(
    ("target", "path", "query", "authority", "origin"),
    [
        ("http://backend:8080/items?x=1", "/items", "x=1", "backend:8080", "/items?x=1"),
        ("http://backend", "/", "", "backend", "/"),
        ("http://backend?q", "/", "q", "backend", "/?q"),
        ("http://user@backend/p", "/p", "", "backend", "/p"),
    ],
)
async def test_request_fields_for_absolute_form(
    target: str, path: str, query: str, authority: str, origin: str
) -> None:
    seen: list[Request] = []

    async def handler(req: Request, writer: ResponseWriter) -> None:
        seen.append(req)
        await text(writer, 200, b"ok")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(f"GET {target} HTTP/1.1\r\nHost: ignored\r\n\r\n".encode())
        await c.response()
        c.close()
    req = seen[0]
    assert (req.target, req.path, req.query, req.authority) == (target, path, query, authority)
    assert req.origin_form == origin


async def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await text(writer, 200, req.path.encode())

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        for i in range(5):
            c.send(f"GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            status, headers, body = await c.response()
            assert (status, body) == (200, f"/{i}".encode())
            assert "connection" not in headers
            assert srv.connections == 1
        c.close()


async def test_response_without_length_is_chunked_for_http11() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        # A caller's own framing headers are replaced by the writer's.
        await writer.start(200, [("transfer-encoding", "gzip"), ("connection", "x"), ("a", "1")])
        for part in (b"one,", b"", b"two,", b"three"):
            await writer.write(part)
        await writer.end()

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = await c.response()
        assert status == 200
        assert headers == {"a": "1", "transfer-encoding": "chunked"}
        assert body == b"one,two,three"
        # Still usable: the chunked framing ended cleanly.
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await c.response())[2] == b"one,two,three"
        c.close()


async def test_http10_client_gets_close_delimited_body() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await writer.start(200, [])
        await writer.write(b"streamed")
        await writer.end()

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        status, headers, body = await c.response()
        assert status == 200
        assert headers == {"connection": "close"}
        assert body == b"streamed"
        c.close()


async def test_http10_keep_alive_with_length_stays_open() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await text(writer, 200, b"ok")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        for _ in range(2):
            c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, body = await c.response()
            assert (status, body, headers["connection"]) == (200, b"ok", "keep-alive")
        c.close()


async def test_connection_close_request_is_answered_then_closed() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await text(writer, 200, b"bye")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers, body = await c.response()
        assert (status, body, headers["connection"]) == (200, b"bye", "close")
        assert await c.closed()
        c.close()


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_bodyless_responses_send_no_body(method: str, status: int) -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await writer.start(status, [("content-length", "5")])
        await writer.write(b"hello")
        await writer.end()

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        got, headers, _ = await c.response(head_only=True)
        assert got == status
        assert ("content-length" in headers) == (status != 204)
        # No stray body bytes: the next response parses cleanly.
        c.send(f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        assert (await c.response(head_only=True))[0] == status
        c.close()


async def test_handler_error_before_start_is_a_500() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        if req.path == "/boom":
            raise RuntimeError("boom")

    async with serving(handler) as srv:
        for path in ("/boom", "/silent"):
            c = await Client.connect(srv.port)
            c.send(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            status, headers, _ = await c.response()
            assert (status, headers["connection"]) == (500, "close")
            assert await c.closed()
            c.close()


async def test_handler_error_after_start_resets_the_connection() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await writer.start(200, [("content-length", "100")])
        await writer.write(b"partial")
        raise RuntimeError("upstream died")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await c.response()
        c.close()


async def test_short_content_length_aborts_the_connection() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await writer.start(200, [("content-length", "10")])
        await writer.write(b"short")
        await writer.end()

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await c.response()
        c.close()


async def test_client_leaving_cancels_the_handler() -> None:
    entered = asyncio.Event()
    outcome: list[str] = []

    async def handler(req: Request, writer: ResponseWriter) -> None:
        entered.set()
        try:
            await asyncio.sleep(WAIT * 2)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(entered.wait(), WAIT)
        c.close()
        await wait_until(
            lambda: outcome == ["cancelled"] and srv.connections == 0,
            "the handler cancelled and the connection gone",
        )


async def test_expect_100_continue_is_answered_on_first_read() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        body = await req.body.read_all(1024)
        assert body is not None
        await text(writer, 200, body.upper())

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert (await c.response())[0] == 100
        c.send(b"hello")
        assert (await c.response())[::2] == (200, b"HELLO")
        c.close()


async def test_upload_is_streamed_with_bounded_buffering() -> None:
    size = 16 * MiB
    stats = {"chunks": 0, "bytes": 0, "max_pending": 0}

    async def handler(req: Request, writer: ResponseWriter) -> None:
        assert req.body.length == size and req.body.has_body
        async for chunk in req.body:
            stats["chunks"] += 1
            stats["bytes"] += len(chunk)
            stats["max_pending"] = max(stats["max_pending"], req.body.pending_bytes)
            await asyncio.sleep(0)  # a slow consumer, so the client outruns it
        await text(writer, 200, str(stats["bytes"]).encode())

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"x" * (256 * 1024)
        for _ in range(size // len(block)):
            c.send(block)
            await c.writer.drain()
        assert (await c.response())[2] == str(size).encode()
        c.close()
    assert stats["bytes"] == size
    assert stats["chunks"] > 16
    # Never more than the high-water mark plus one socket read waits in memory.
    assert stats["max_pending"] <= HIGH_WATER + 256 * 1024


async def test_chunked_upload_with_trailers() -> None:
    seen: list[tuple[bytes, list[tuple[str, str]]]] = []

    async def handler(req: Request, writer: ResponseWriter) -> None:
        body = await req.body.read_all(1024)
        assert body is not None
        seen.append((body, list(req.headers)))
        await text(writer, 200, b"ok")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        assert (await c.response())[0] == 200
        c.close()
    assert seen == [(b"abcde", [("host", "a"), ("transfer-encoding", "chunked")])]


async def test_read_all_over_limit_keeps_the_body_readable() -> None:
    results: list[object] = []

    async def handler(req: Request, writer: ResponseWriter) -> None:
        results.append(await req.body.read_all(1000))
        rest = b"".join([chunk async for chunk in req.body])
        await text(writer, 200, b"%d" % len(rest))

    payload = bytes(range(256)) * 4096  # 1 MiB
    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(payload))
        c.send(payload)
        assert (await c.response())[2] == b"%d" % len(payload)
        c.close()
    assert results == [None]


async def test_download_waits_for_a_slow_client() -> None:
    total = 64 * MiB
    block = b"y" * (64 * 1024)
    written = 0
    finished = asyncio.Event()

    async def handler(req: Request, writer: ResponseWriter) -> None:
        nonlocal written
        await writer.start(200, [("content-length", str(total))])
        for _ in range(total // len(block)):
            await writer.write(block)
            written += len(block)
        await writer.end()
        finished.set()

    async with serving(handler) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", srv.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=64 * 1024)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        # The client reads nothing: the handler must stall on back-pressure.
        last = -1
        while written != last:
            last = written
            await asyncio.sleep(0.1)
        assert not finished.is_set()
        assert written < total // 2
        received = 0
        while received < total:
            data = await asyncio.wait_for(reader.read(1 << 20), WAIT)
            assert data
            received += len(data)
        await asyncio.wait_for(finished.wait(), WAIT)
        writer.close()
    assert received >= total


async def test_response_before_the_body_is_read_closes_the_connection() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await text(writer, 413, b"too big")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 1000)
        status, headers, _ = await c.response()
        assert (status, headers["connection"]) == (413, "close")
        assert await c.closed()
        c.close()


async def test_body_of_a_vanished_client_raises_body_error() -> None:
    errors: list[BaseException] = []
    reading = asyncio.Event()

    async def handler(req: Request, writer: ResponseWriter) -> None:
        reading.set()
        try:
            await req.body.read_all(1 << 20)
        except BodyError as exc:
            errors.append(exc)
        except asyncio.CancelledError:
            errors.append(BodyError("cancelled first"))
            raise

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        await asyncio.wait_for(reading.wait(), WAIT)
        c.close()
        await wait_until(lambda: len(errors) == 1, "the handler's body error")
    assert isinstance(errors[0], BodyError)


async def test_upgrade_request_is_answered_then_closed() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await text(writer, 426, b"no upgrades")

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        status, headers, _ = await c.response()
        assert (status, headers["connection"]) == (426, "close")
        assert await c.closed()
        c.close()


async def test_close_drains_in_flight_requests_and_closes_idle_ones() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def handler(req: Request, writer: ResponseWriter) -> None:
        if req.path == "/wait":
            entered.set()
            await release.wait()
        await text(writer, 200, req.path.encode())

    srv = await start_server(handler, "127.0.0.1", 0, Limits())
    idle = await Client.connect(srv.port)
    idle.send(b"GET /idle HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await idle.response())[2] == b"/idle"
    busy = await Client.connect(srv.port)
    busy.send(b"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
    await asyncio.wait_for(entered.wait(), WAIT)

    closing = asyncio.create_task(srv.close(grace=WAIT))
    assert await idle.closed()
    assert not closing.done()
    release.set()
    status, headers, body = await busy.response()
    assert (status, body, headers["connection"]) == (200, b"/wait", "close")
    assert await busy.closed()
    await asyncio.wait_for(closing, WAIT)
    assert srv.connections == 0
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", srv.port)
    idle.close()
    busy.close()


async def test_close_resets_requests_that_outlive_the_grace() -> None:
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def handler(req: Request, writer: ResponseWriter) -> None:
        entered.set()
        try:
            await asyncio.sleep(WAIT * 2)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    srv = await start_server(handler, "127.0.0.1", 0, Limits())
    c = await Client.connect(srv.port)
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    await asyncio.wait_for(entered.wait(), WAIT)
    await asyncio.wait_for(srv.close(grace=0.2), WAIT)
    assert cancelled.is_set()
    assert await c.closed()
    c.close()


def test_serves_under_uvloop() -> None:
    async def scenario() -> list[bytes]:
        async def handler(req: Request, writer: ResponseWriter) -> None:
            body = await req.body.read_all(1 << 20)
            assert body is not None
            await writer.start(200, [])
            await writer.write(req.path.encode() + b":" + body)
            await writer.end()

        async with serving(handler) as srv:
            c = await Client.connect(srv.port)
            c.send(
                b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nhi\r\n0\r\n\r\n"
            )
            out = [(await c.response())[2], (await c.response())[2]]
            c.close()
            return out

    assert uvloop.run(scenario()) == [b"/a:", b"/b:hi"]
