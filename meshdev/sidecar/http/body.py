"""A request body streamed from the client with flow control (see the package doc).

The body sits below the connection in the import graph: it asks of the connection it arrives
on only what ``BodyOwner`` describes."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, Protocol

from meshdev.sidecar.http.flowbuffer import LOW_WATER, FlowBuffer
from meshdev.sidecar.http.tally import Tally
from meshdev.sidecar.http.wire import CONTINUE


class _Answer(Protocol):
    """The response being written on the connection, as far as a body cares."""

    @property
    def started(self) -> bool: ...


class BodyOwner(Protocol):
    """What a body needs of its client connection (``connection.ClientConnection``)."""

    @property
    def _loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def _transport(self) -> asyncio.Transport: ...
    @property
    def _closed(self) -> bool: ...
    # Its bytes written (a 100 Continue adds to it).
    @property
    def _tx(self) -> Tally: ...
    @property
    def _rpaused(self) -> bool: ...
    # 100 Continue is only sent while the response being written has not started.
    @property
    def _active(self) -> _Answer | None: ...
    def _maybe_resume(self) -> None: ...
    def _pause_reading(self) -> None: ...


class BodyError(Exception):
    """The request body cannot be read to its end: malformed chunking or the client left."""


class BodyStream(FlowBuffer):
    """A request body, streamed from the client with flow control (see the package doc).

    ``async for chunk in body`` yields the chunks in arrival order and stops at the body's end.
    When the body broke (malformed chunking, the client left), the chunks that did arrive are
    yielded first, then ``BodyError`` is raised. The first time the reader has to wait, an
    ``Expect: 100-continue`` request gets its ``100 Continue`` (unless its response started).
    A reader cancelled while it waits loses nothing: the chunks stay buffered for a later read.
    """

    __slots__ = ("_conn", "_continue", "length")

    # A deque, not a list: a client controls how many chunks wait (up to HIGH_WATER bytes
    # of them), and taking the first of a long list costs its whole length.
    _chunks: deque[bytes]

    def __init__(self, length: int | None, conn: BodyOwner | None, expect_continue: bool) -> None:
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
        """The whole body (``b""`` when there is none), consuming the stream.

        Returns ``None`` when the body is longer than ``limit``; then nothing is consumed and
        iterating yields the body from its first byte. Raises ``BodyError`` when the body
        broke. Cancelled while waiting for more, it drops the bytes it had already taken: a
        later read goes on after them, so a cancelled ``read_all`` leaves the body unusable."""
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
                conn._tx.value += len(CONTINUE)
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
