"""A real loopback TCP server that answers with raw bytes, well-formed or not: the peer the
loopback client and its callers are tested against."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request: its head, and the body its Content-Length announces."""
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
    return head + body


@contextlib.asynccontextmanager
async def raw_server(
    answer: bytes,
    *,
    seen: list[bytes] | None = None,
    first: bool = False,
    hold: bool = False,
) -> AsyncIterator[str]:
    """Yields the server's base URL. On every connection it reads the request (kept in
    `seen`), then writes `answer`; with `first` it writes `answer` at once instead, like a
    peer that speaks first (SSH, a database). It closes the connection after the answer, or
    with `hold` only once the client has closed it: an answer that is not whole by then must
    be refused by its framing, not by an end of the stream."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The client hangs up on answers it refuses, maybe while we still write: expected.
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if first:
                writer.write(answer)
                await writer.drain()
            request = await read_request(reader)
            if seen is not None:
                seen.append(request)
            if not first:
                writer.write(answer)
                await writer.drain()
            if hold:
                await reader.read()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.close()
        await srv.wait_closed()
