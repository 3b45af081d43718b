"""A client connection's state and what it does to its transport: flow control both ways,
closing (at once, or after a lingering read), error answers.

One connection is one object in three layers, each a class in its own module: ``ConnCore``
(here), ``http1_lifecycle.ConnLifecycle`` (runs the requests, their timeouts and teardown) and
``http1_protocol._Conn`` (what asyncio and httptools call). The state lives here, in one
``__slots__``; the subclasses add methods only."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import httptools

from meshdev.sidecar.http.flowbuffer import LOW_WATER
from meshdev.sidecar.http.wire import ERRORS, error_response

if TYPE_CHECKING:
    from meshdev.sidecar.http.body import BodyStream
    from meshdev.sidecar.http.request import Request
    from meshdev.sidecar.http.server import HttpServer
    from meshdev.sidecar.http.writer import ResponseWriter

# Pipelined requests parsed ahead of the one being answered before reading pauses.
PIPELINE_DEPTH: Final = 8
# After an error answer, how long we keep reading (and discarding) so the client can read the
# answer before the close; closing with unread input would send a reset instead.
LINGER: Final = 2.0


class ConnCore(asyncio.Protocol):
    """A client connection's state and transport operations (see the module doc)."""

    __slots__ = (
        "_active",
        "_cl",
        "_client",
        "_closed",
        "_drain_waiter",
        "_error_status",
        "_expect",
        "_handler",
        "_hbytes",
        "_hcount",
        "_head_fed",
        "_head_start",
        "_headers",
        "_host",
        "_idle_since",
        "_ignore",
        "_in_head",
        "_in_trailers",
        "_linger_since",
        "_loop",
        "_parser",
        "_pbody",
        "_queue",
        "_rpaused",
        "_server",
        "_task",
        "_te",
        "_transport",
        "_url",
        "_wakeup",
        "_wpaused",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._handler = server._handler
        self._loop = server._loop
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._parser: Any = httptools.HttpRequestParser(self)
        self._client: tuple[str, int] = ("", 0)
        self._in_head = False
        self._head_start = 0.0
        self._head_fed = 0
        self._url: bytes = b""
        self._headers: list[tuple[str, str]] = []
        self._hcount = 0
        self._hbytes = 0
        self._cl = -1
        self._te = False
        self._host: str | None = None
        self._expect = False
        self._in_trailers = False
        self._pbody: BodyStream | None = None
        self._active: ResponseWriter | None = None
        # The connection's worker task, and the future it waits on while idle.
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._queue: deque[tuple[Request, ResponseWriter]] = deque()
        self._error_status = 0
        self._closed = False
        self._ignore = False
        self._linger_since = 0.0
        self._rpaused = False
        self._wpaused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._idle_since = 0.0

    async def _drain(self) -> None:
        if not self._wpaused or self._closed:
            return
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def _pause_reading(self) -> None:
        self._rpaused = True
        self._transport.pause_reading()

    def _maybe_resume(self) -> None:
        if not self._rpaused or self._closed:
            return
        body = self._pbody
        if body is not None and body._size >= LOW_WATER:
            return
        if len(self._queue) >= PIPELINE_DEPTH:
            return
        self._rpaused = False
        self._transport.resume_reading()

    def _send_error(self, status: int) -> None:
        if self._closed:
            return
        self._transport.write(ERRORS.get(status) or error_response(status))
        self._linger_close()

    def _linger_close(self) -> None:
        """Close after the written data, reading and discarding input meanwhile."""
        if self._closed or self._linger_since:
            return
        self._ignore = True
        self._linger_since = self._loop.time()
        transport = self._transport
        if transport.can_write_eof():
            transport.write_eof()
            if self._rpaused:
                self._rpaused = False
                transport.resume_reading()
        else:
            transport.close()

    def _abort(self) -> None:
        if self._closed:
            return
        self._ignore = True
        self._transport.abort()

    def _close_idle(self) -> None:
        if self._active is None and not self._queue and not self._in_head and self._pbody is None:
            self._transport.close()
