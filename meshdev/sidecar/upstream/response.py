"""An upstream response: its head at once, its body streamed with flow control, the pool's
request count settled when it ends (see the package doc).

The response sits below the connection in the import graph: it asks of the connection it
arrives on only what ``ResponseSource`` describes."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from meshdev.sidecar.http.flowbuffer import LOW_WATER, FlowBuffer
from meshdev.sidecar.http.raw import RawEnd
from meshdev.sidecar.upstream.errors import ResponseTooLarge, UpstreamReset


class _RequestCount(Protocol):
    """The pool, as far as a response cares: its count of requests in flight."""

    rq_active: int


class ResponseSource(Protocol):
    """What a response needs of its connection (``connection._UpstreamConn``)."""

    # Set here too: reading the body resumes the connection's reading.
    rpaused: bool

    @property
    def closed(self) -> bool: ...
    @property
    def transport(self) -> asyncio.Transport: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def pool(self) -> _RequestCount: ...
    def _discard(self) -> None: ...


class UpstreamResponse(FlowBuffer):
    """An upstream response: head now, body streamed (see the package doc).

    ``async for chunk in resp`` yields the body's chunks in arrival order and stops at its
    end. When the connection dies mid-body, the chunks that did arrive are yielded first,
    then ``UpstreamReset`` is raised. A reader cancelled while it waits closes the response
    (the connection is discarded: the exchange cannot be finished) and sees the
    ``CancelledError``.
    """

    __slots__ = ("_conn", "_open", "_pool", "headers", "status")

    # An HTTP/2 upstream's trailers once its body ended. A class attribute: HTTP/1.1's
    # trailers are dropped, so only the HTTP/2 response (http2.client.H2Response) has the slot.
    trailers: list[tuple[str, str]] | None = None

    # A deque, not a list: an upstream decides how many small chunks wait unread behind a
    # slow client (up to HIGH_WATER bytes), and taking each from a list's front would make
    # draining them quadratic.
    _chunks: deque[bytes]

    def __init__(self, status: int, headers: list[tuple[str, str]], conn: ResponseSource) -> None:
        self.status = status
        self.headers = headers
        self._conn: ResponseSource | None = conn
        self._chunks = deque()
        self._size = 0
        self._done = False
        self._exc = None
        self._waiter = None
        self._pool = conn.pool
        # Counted in the pool's rq_active (set by UpstreamPool.request once handed over).
        self._open = False

    @property
    def complete(self) -> bool:
        """The whole body has arrived intact (it may still sit unread in the buffer)."""
        return self._done and self._exc is None

    def buffered(self) -> bytes | None:
        """The whole body if it has fully arrived (consuming it), else None; never waits.

        ``b""`` when the body was empty or already read; ``None`` too when it broke."""
        if not self._done or self._exc is not None:
            return None
        chunks = self._chunks
        if not chunks:
            return b""
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        return body

    async def read_all(self, limit: int) -> bytes:
        """The rest of the body, read to its end.

        Raises ``ResponseTooLarge`` past ``limit`` bytes (the response is closed), and
        ``UpstreamReset`` when the connection dies mid-body. Cancelled while it waits, the
        response is closed as when iterating (the bytes it had taken are dropped)."""
        parts: list[bytes] = []
        total = 0
        while True:
            if self._chunks:
                chunk = self._pop()
                total += len(chunk)
                if total > limit:
                    self.close()
                    raise ResponseTooLarge(f"response body over {limit} bytes")
                parts.append(chunk)
                continue
            if self._exc is not None:
                raise self._exc
            if self._done:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await self._wait()

    def close(self) -> None:
        """Drop the response and whatever of its body waits unread; idempotent, never waits.

        Unless the body had arrived whole, the connection is reset (it cannot be reused) and
        reading afterwards raises ``UpstreamReset``; a complete response's connection has
        already gone back to its pool (or closed) and is left alone."""
        self._chunks.clear()
        self._size = 0
        if self._done:
            return
        self._done = True
        self._exc = UpstreamReset("response closed by the caller")
        conn = self._conn
        if conn is not None:
            conn._discard()
        self._end_rq()

    def _pop(self) -> bytes:
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        conn = self._conn
        if conn is not None and conn.rpaused and self._size < LOW_WATER:
            conn.rpaused = False
            if not conn.closed:
                conn.transport.resume_reading()
        return chunk

    async def _wait(self) -> None:
        conn = self._conn
        assert conn is not None
        waiter = conn.loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        except asyncio.CancelledError:
            # The caller gave up (route timeout): the connection cannot be reused.
            self.close()
            raise
        finally:
            self._waiter = None

    def _pause(self) -> None:
        conn = self._conn
        if conn is not None and not conn.rpaused:
            conn.rpaused = True
            conn.transport.pause_reading()

    def _finish(self, exc: BaseException | None = None) -> None:
        # FlowBuffer's, plus letting go of the connection and the request count; whole
        # rather than through super(): it runs once for every response.
        if self._done:
            return
        self._done = True
        self._exc = exc
        self._conn = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._end_rq()

    def _end_rq(self) -> None:
        if self._open:
            self._open = False
            self._pool.rq_active -= 1

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} complete={self.complete}>"


class UpgradedResponse(UpstreamResponse):
    """The ``101 Switching Protocols`` answer to an upgrade request (``UpstreamPool.upgrade``).

    It has no body; ``tunnel`` is the connection's raw byte stream from here on (its reading
    paused until spliced, see ``sidecar.http.raw``), or None when the switch failed (the
    upstream's 101 was malformed): then the connection is gone. A subclass, so that ordinary
    responses carry no slot for it."""

    __slots__ = ("tunnel",)

    def __init__(self, status: int, headers: list[tuple[str, str]], conn: ResponseSource) -> None:
        super().__init__(status, headers, conn)
        self.tunnel: RawEnd | None = None
