"""The HTTP/1.1 server refuses malformed and smuggling-prone input (issue 3, Hardening).

Every test talks raw bytes over a real loopback socket to a real server from start_server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator

import pytest

from meshdev.common.sidecar_config import Limits
from meshdev.sidecar.http import HttpServer, Request, ResponseWriter, set_limits, start_server
from meshdev.sidecar.http import connection as http_connection
from tests.support import WAIT, wait_until

LIMITS = Limits(
    header_timeout=0.5,
    idle_timeout=0.5,
    max_headers=20,
    max_header_bytes=4096,
    max_header_line=512,
)


class App:
    """Echoes method, path and body size; records every request it was handed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, req: Request, writer: ResponseWriter) -> None:
        self.seen.append(req.path)
        if req.path == "/slow":
            await asyncio.sleep(0.2)
        elif req.path == "/sleep-past-idle":
            await asyncio.sleep(LIMITS.idle_timeout * 1.6)
        body = await req.body.read_all(1 << 20)
        assert body is not None
        text = f"{req.method} {req.path} {len(body)}".encode()
        await writer.start(200, [("content-length", str(len(text)))])
        await writer.write(text)
        await writer.end()


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
async def server(app: App) -> AsyncIterator[HttpServer]:
    srv = await start_server(app, "127.0.0.1", 0, LIMITS)
    yield srv
    await srv.close(grace=1.0)


async def send_and_read_to_eof(port: int, data: bytes) -> bytes:
    """Send `data`, then read until the server closes; fails if it does not close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:80]
    return int(raw.split(b" ", 2)[1])


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: svc\r\n" + extra + b"\r\n"


def many_headers(n: int, size: int = 8) -> bytes:
    return b"".join(b"X-H%d: %s\r\n" % (i, b"v" * size) for i in range(n))


CHUNKED = b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"

REFUSED = {
    "content-length with transfer-encoding": (
        400,
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    "transfer-encoding with content-length": (
        400,
        b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\nabc",
    ),
    "two different content-lengths": (
        400,
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    "content-length not a number": (
        400,
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 3x\r\n\r\nabc",
    ),
    "bad chunk size": (400, CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n"),
    "chunk size overflow": (400, CHUNKED + b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    "chunk longer than its size": (400, CHUNKED + b"3\r\nabcdef\r\n0\r\n\r\n"),
    "transfer-encoding chunkedx": (
        400,
        b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunkedx\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ),
    "chunked not the final coding": (
        400,
        b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    ),
    "NUL in a header value": (400, get(extra=b"X-A: a\x00b\r\n")),
    "CR in a header value": (400, get(extra=b"X-A: a\rb\r\n")),
    "LF in a header value": (400, get(extra=b"X-A: a\nX-B: b\r\n")),
    "obsolete line folding": (400, get(extra=b"X-A: a\r\n b\r\n")),
    "space before the colon": (400, get(extra=b"X-A : a\r\n")),
    "two Host headers": (400, get(extra=b"Host: other\r\n")),
    "bare LF line endings": (400, b"GET / HTTP/1.1\nHost: svc\n\n"),
    "invalid method": (400, b"G@T / HTTP/1.1\r\nHost: svc\r\n\r\n"),
    "more than max_headers headers": (431, get(extra=many_headers(LIMITS.max_headers))),
    "headers over max_header_bytes": (431, get(extra=many_headers(10, 450))),
    "header line over max_header_line": (431, get(extra=b"X-Long: " + b"v" * 600 + b"\r\n")),
    "request line over max_header_bytes": (431, get("/" + "a" * 5000)),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_with_status_and_closed(server: HttpServer, app: App, case: str) -> None:
    status, data = REFUSED[case]
    raw = await send_and_read_to_eof(server.port, data)
    assert status_of(raw) == status
    assert b"connection: close" in raw.lower()
    # Exactly one answer, and nothing reached the application.
    assert raw.count(b"HTTP/1.1 ") == 1
    assert app.seen == []


async def test_limits_are_inclusive(server: HttpServer, app: App) -> None:
    # max_headers counts Host too; a line of exactly max_header_line is allowed.
    line = b"X-L: " + b"v" * (LIMITS.max_header_line - 5) + b"\r\n"
    for extra in (many_headers(LIMITS.max_headers - 1), line):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(get("/ok", extra))
        status, _, body = await read_response(reader)
        writer.close()
        assert (status, body) == (200, b"GET /ok 0")


async def test_issue_defaults_100_headers_60k_and_8k_lines(app: App) -> None:
    srv = await start_server(app, "127.0.0.1", 0, Limits())
    try:
        line_8k = b"X-L: " + b"v" * (8 * 1024 - 5) + b"\r\n"
        # 60 KiB of headers in lines under 8 KiB, fewer than 100 of them.
        bulk = b"".join(b"X-B%d: %s\r\n" % (i, b"v" * 4000) for i in range(16))
        cases = [
            (200, get("/ok", many_headers(99))),
            (431, get("/", many_headers(100))),
            (200, get("/ok", line_8k)),
            (431, get("/", b"X-L: " + b"v" * (8 * 1024) + b"\r\n")),
            (431, get("/", bulk)),
        ]
        for status, data in cases:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            writer.close()
            assert status_of(head) == status
    finally:
        await srv.close(grace=1.0)
    assert app.seen == ["/ok", "/ok"]


async def test_header_value_whitespace_is_trimmed(app: App) -> None:
    seen: list[list[tuple[str, str]]] = []

    async def handler(req: Request, writer: ResponseWriter) -> None:
        seen.append(req.headers)
        await writer.start(204, [])
        await writer.end()

    srv = await start_server(handler, "127.0.0.1", 0, LIMITS)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(get(extra=b"X-Pad:   a b \t \r\n"))
        status, _, _ = await read_response(reader)
        writer.close()
    finally:
        await srv.close(grace=1.0)
    assert status == 204
    assert seen == [[("host", "svc"), ("x-pad", "a b")]]


async def test_headers_sent_a_byte_at_a_time_are_cut_after_header_timeout(
    server: HttpServer, app: App
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    trickle = get("/", many_headers(8)) * 4  # far longer than header_timeout at 20 ms a byte
    sent = 0

    async def dribble() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            for i in range(len(trickle)):
                if writer.is_closing() or reader.at_eof():
                    return
                writer.write(trickle[i : i + 1])
                sent += 1
                await asyncio.sleep(0.02)

    task = asyncio.create_task(dribble())
    try:
        raw = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        task.cancel()
        writer.close()
    assert status_of(raw) == 408
    assert sent < len(trickle)
    assert app.seen == []


async def test_unfinished_header_line_is_bounded_by_max_header_bytes(
    server: HttpServer, app: App
) -> None:
    # One header line that never ends, sent in pieces: llhttp would keep growing it.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: svc\r\nX-Endless: ")
    sent = 0
    with contextlib.suppress(ConnectionError):
        while sent < 10 * LIMITS.max_header_bytes and not reader.at_eof():
            writer.write(b"v" * 256)
            sent += 256
            await asyncio.sleep(0.001)
    raw = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    assert status_of(raw) == 431
    assert app.seen == []


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get("/first"))
    status, _, _ = await read_response(reader)
    assert status == 200
    assert server.connections == 1
    # Then silence: the server closes it (EOF, no further bytes).
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()
    await wait_until(lambda: server.connections == 0, "every connection closed")


async def test_silent_connection_is_closed_after_idle_timeout(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""
    writer.close()


async def test_idle_timeout_does_not_cut_a_request_in_flight(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get("/sleep-past-idle"))
    status, _, body = await read_response(reader)
    writer.close()
    assert (status, body) == (200, b"GET /sleep-past-idle 0")


async def test_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    post = b"POST /post HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello"
    writer.write(get("/slow") + post + get("/fast") + CHUNKED + b"2\r\nhi\r\n0\r\n\r\n")
    bodies = [(await read_response(reader))[2] for _ in range(4)]
    writer.close()
    assert bodies == [b"GET /slow 0", b"POST /post 5", b"GET /fast 0", b"POST / 2"]


async def test_bad_request_after_good_pipelined_ones_is_answered_last(
    server: HttpServer, app: App
) -> None:
    bad = b"POST /bad HTTP/1.1\r\nHost: svc\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    raw = await send_and_read_to_eof(server.port, get("/slow") + get("/fast") + bad)
    assert raw.startswith(b"HTTP/1.1 200 ")
    parts = raw.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"200", b"400"]
    assert parts[0].endswith(b"GET /slow 0")
    assert app.seen == ["/slow", "/fast"]


async def test_bad_chunk_while_the_handler_reads_the_body_gets_400(
    server: HttpServer, app: App
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(CHUNKED + b"3\r\nabc\r\n")
    # The app records the request and starts reading its body in one step.
    await wait_until(lambda: app.seen == ["/"], "the handler reading the body")
    writer.write(b"zz\r\n")
    raw = await asyncio.wait_for(reader.read(), WAIT)
    writer.close()
    assert status_of(raw) == 400
    assert raw.count(b"HTTP/1.1 ") == 1


async def test_limits_can_be_swapped_on_a_running_server(server: HttpServer) -> None:
    eight = get("/", many_headers(7))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(eight)
    assert (await read_response(reader))[0] == 200
    writer.close()

    set_limits(server, LIMITS.model_copy(update={"max_headers": 5}))
    assert server.limits.max_headers == 5
    assert status_of(await send_and_read_to_eof(server.port, eight)) == 431


async def test_bad_connections_leak_no_file_descriptors_or_connections(
    server: HttpServer,
) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    # Warm up lazily created loop resources before counting.
    await send_and_read_to_eof(server.port, REFUSED["bad chunk size"][1])
    await wait_until(lambda: server.connections == 0, "every connection closed")
    gc.collect()
    before = open_fds()

    kinds = [data for _, data in REFUSED.values()]
    for batch in range(8):
        await asyncio.gather(
            *(send_and_read_to_eof(server.port, kinds[(batch + i) % len(kinds)]) for i in range(25))
        )
    # Clients that vanish mid-request, without reading anything.
    for _ in range(25):
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()
        writer.close()
    await wait_until(lambda: server.connections == 0, "every connection closed")
    gc.collect()
    assert open_fds() <= before
    assert not [o for o in gc.get_objects() if isinstance(o, http_connection.ClientConnection)]
