"""An upstream response: its head at once, its body streamed with flow control, the pool's
request count settled when it ends (see the upstream module doc)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from meshdev.sidecar.http.flowbuffer import LOW_WATER, FlowBuffer
from meshdev.sidecar.upstream.errors import ResponseTooLarge, UpstreamReset

if TYPE_CHECKING:
    from meshdev.sidecar.upstream.connection import _UpstreamConn


class UpstreamResponse(FlowBuffer):
    """An upstream response: head now, body streamed (see the upstream module doc)."""

    __slots__ = ("_conn", "_open", "_pool", "headers", "status")

    # A deque, not a list: an upstream decides how many small chunks wait unread behind a
    # slow client (up to HIGH_WATER bytes), and taking each from a list's front would make
    # draining them quadratic.
    _chunks: deque[bytes]

    def __init__(self, status: int, headers: list[tuple[str, str]], conn: _UpstreamConn) -> None:
        self.status = status
        self.headers = headers
        self._conn: _UpstreamConn | None = conn
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
        return self._done and self._exc is None

    def buffered(self) -> bytes | None:
        """The whole body if it has fully arrived (consuming it), else None; never waits."""
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
        """Drop the response; the connection is discarded unless the response was complete."""
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
