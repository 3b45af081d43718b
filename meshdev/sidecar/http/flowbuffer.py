"""A body received from a peer and read by a coroutine, bounded by flow control.

The same buffer sits behind a client's request body (``http.body.BodyStream``) and an
upstream's response body (``upstream.response.UpstreamResponse``): the connection feeds chunks
(``_feed``) and ends the stream (``_finish``); the reader iterates (``async for``). Above
``HIGH_WATER`` unread bytes the connection stops reading, below ``LOW_WATER`` it resumes.

What differs between the two is the subclass's: ``_pause`` (stop the connection reading),
``_pop`` (take the next chunk, resuming the connection when due), ``_wait`` (park the reader
until more arrives), the chunk container, and ``__init__``. Subclasses set every field here
themselves instead of calling ``super().__init__()``: one call less for each body made.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableSequence
from typing import Final

HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024


class FlowBuffer:
    """Chunks fed by a connection, read by `async for` (see the module doc)."""

    __slots__ = ("_chunks", "_done", "_exc", "_size", "_waiter")

    _chunks: MutableSequence[bytes]
    # Bytes fed and not yet read.
    _size: int
    _done: bool
    # What reading raises once the buffered chunks are gone (the stream broke), if anything.
    _exc: BaseException | None
    # The reader parked in `_wait`, woken by `_feed` and `_finish`.
    _waiter: asyncio.Future[None] | None

    @property
    def pending_bytes(self) -> int:
        """Bytes received and not yet read (bounded by flow control)."""
        return self._size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk, waiting for it if need be; ``StopAsyncIteration`` at the end, or
        the stream's error once the chunks that did arrive are read (what a cancelled wait
        leaves behind is the subclass's: see its ``_wait``)."""
        while True:
            if self._chunks:
                return self._pop()
            if self._exc is not None:
                raise self._exc
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._size > HIGH_WATER:
            self._pause()

    def _finish(self, exc: BaseException | None = None) -> None:
        """The stream ended: whole when `exc` is None, else broken with `exc`."""
        if self._done:
            return
        self._done = True
        self._exc = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pop(self) -> bytes:
        raise NotImplementedError

    async def _wait(self) -> None:
        raise NotImplementedError

    def _pause(self) -> None:
        raise NotImplementedError
