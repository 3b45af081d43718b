"""A request body streamed from the client with flow control (see the http1 module doc)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from meshdev.sidecar.http.flowbuffer import LOW_WATER, FlowBuffer
from meshdev.sidecar.http.wire import CONTINUE

if TYPE_CHECKING:
    from meshdev.sidecar.http.connection import ConnCore


class BodyError(Exception):
    """The request body cannot be read to its end: malformed chunking or the client left."""


class BodyStream(FlowBuffer):
    """A request body, streamed from the client with flow control (see the http1 module doc)."""

    __slots__ = ("_conn", "_continue", "length")

    # A deque, not a list: a client controls how many chunks wait (up to HIGH_WATER bytes
    # of them), and taking the first of a long list costs its whole length.
    _chunks: deque[bytes]

    def __init__(self, length: int | None, conn: ConnCore | None, expect_continue: bool) -> None:
        self.length = length
        self._conn = conn
        self._chunks = deque()
        self._size = 0
        self._done = conn is None
        self._exc = None
        self._waiter = None
        self._continue = expect_continue

    @property
    def has_body(self) -> bool:
        """True when the request declared a body (Content-Length > 0 or chunked)."""
        return self._conn is not None

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived (it may still sit unread in the buffer)."""
        return self._done

    async def read_all(self, limit: int) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            if self._chunks:
                chunk = self._pop()
                parts.append(chunk)
                total += len(chunk)
                if total > limit:
                    # Put it all back: the caller may still stream the body.
                    self._chunks.extendleft(reversed(parts))
                    self._size += total
                    return None
                continue
            if self._exc is not None:
                raise self._exc
            if self._done:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await self._wait()

    def _pop(self) -> bytes:
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        conn = self._conn
        if conn is not None and conn._rpaused and self._size < LOW_WATER:
            conn._maybe_resume()
        return chunk

    async def _wait(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if self._continue:
            self._continue = False
            active = conn._active
            if active is not None and not active.started and not conn._closed:
                conn._transport.write(CONTINUE)
        waiter = conn._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _pause(self) -> None:
        conn = self._conn
        if conn is not None and not conn._rpaused:
            conn._pause_reading()


# Requests without a body share one finished stream.
EMPTY_BODY: Final = BodyStream(None, None, False)
