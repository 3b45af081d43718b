"""Running a client connection's requests: one worker task answers them in order, a finished
response decides whether the connection goes on, a broken request is refused, and the server's
sweep enforces the header and idle timeouts (see http1_conn for the layers)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from meshdev.sidecar.http.body import BodyError
from meshdev.sidecar.http.connection import LINGER, ConnCore
from meshdev.sidecar.http.writer import send_plain

if TYPE_CHECKING:
    from meshdev.common.sidecar_config import Limits
    from meshdev.sidecar.http.writer import ResponseWriter

# The engine logs under its public module's name, as before it was split into modules.
log = logging.getLogger("meshdev.sidecar.http")


class ConnLifecycle(ConnCore):
    """The request lifecycle of a client connection (see the module doc)."""

    __slots__ = ()

    async def _worker(self) -> None:
        """Runs the connection's requests one after another (one task per connection, not
        per request: a task costs more than the wake-up of one that waits)."""
        handler = self._handler
        queue = self._queue
        while not self._closed and not self._linger_since:
            if not queue:
                wakeup = self._loop.create_future()
                self._wakeup = wakeup
                await wakeup
                continue
            req, writer = queue.popleft()
            if self._rpaused:
                self._maybe_resume()
            self._active = writer
            try:
                await handler(req, writer)
            except asyncio.CancelledError:
                # We cancelled it: the client left, the request broke, or the server stops.
                if not writer.ended:
                    writer.abort()
                elif not self._closed and not self._linger_since:
                    # A stray cancellation: the connection cannot go on without its worker.
                    self._abort()
                return
            except Exception:
                log.exception("handler failed on %s %s", req.method, req.target)
                if not writer.started:
                    await send_plain(writer, 500, b"Internal Server Error")
                elif not writer.ended:
                    writer.abort()
                continue
            if not writer.ended:
                if writer.started:
                    await writer.end()
                else:
                    log.error(
                        "handler returned without a response to %s %s", req.method, req.target
                    )
                    await send_plain(writer, 500, b"Internal Server Error")

    def _response_done(self, writer: ResponseWriter) -> None:
        if writer is not self._active:
            return
        self._active = None
        if self._closed:
            return
        if writer._close or self._server._draining or not writer._req.body._done:
            self._linger_close()
            return
        if self._queue:
            return  # the worker goes on with it
        if self._error_status:
            self._send_error(self._error_status)
        else:
            self._idle_since = self._loop.time()

    def _protocol_error(self, status: int) -> None:
        """Refuse the request being parsed: answer `status` in turn and close."""
        self._ignore = True
        self._in_head = False
        body = self._pbody
        self._pbody = None
        if body is not None:
            body._finish(BodyError("malformed request body"))
            if self._queue and self._queue[-1][0].body is body:
                self._queue.pop()
            else:
                active = self._active
                if active is not None and active._req.body is body:
                    # The request being answered is broken: Envoy answers 400 and resets it.
                    self._active = None
                    if active.started:
                        self._abort()
                        return
                    active.ended = True
                    if self._task is not None:
                        self._task.cancel()
        self._error_status = status
        if self._active is None and not self._queue:
            self._send_error(status)

    def _check_timers(self, now: float, limits: Limits) -> None:
        if self._closed:
            return
        if self._linger_since:
            if now - self._linger_since > LINGER:
                self._transport.abort()
            return
        if self._in_head:
            if now - self._head_start > limits.header_timeout:
                self._protocol_error(408)
        elif (
            self._active is None
            and not self._queue
            and self._pbody is None
            and now - self._idle_since > limits.idle_timeout
        ):
            self._transport.close()
