"""What asyncio and httptools call on a client connection: transport events, and the parser
callbacks that turn bytes into queued Requests while enforcing the header limits (see
http1_conn for the layers)."""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from meshdev.sidecar.http.body import EMPTY_BODY, BodyError, BodyStream
from meshdev.sidecar.http.connection import PIPELINE_DEPTH
from meshdev.sidecar.http.lifecycle import ConnLifecycle
from meshdev.sidecar.http.request import Request, split_target
from meshdev.sidecar.http.wire import METHODS, header_name
from meshdev.sidecar.http.writer import ResponseWriter


class _Reject(Exception):
    """Raised inside parser callbacks to refuse a request with `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Conn(ConnLifecycle):
    """One client connection: parses requests, runs handlers in order, enforces the limits."""

    __slots__ = ()

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._client = (str(peer[0]), int(peer[1]))
        self._idle_since = self._loop.time()
        self._server._conns.add(self)

    def data_received(self, data: bytes) -> None:
        if self._ignore:
            return
        was_in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, CONNECT) are not proxied: answer the request, then close.
            self._ignore = True
            last = self._queue[-1][0] if self._queue else None
            if last is None and self._active is not None:
                last = self._active._req
            if last is not None:
                last.keep_alive = False
            return
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            self._protocol_error(ctx.status if isinstance(ctx, _Reject) else 400)
            return
        except httptools.HttpParserError:
            self._protocol_error(400)
            return
        if self._in_head and was_in_head:
            # The whole read was header bytes: this bounds what llhttp/httptools accumulate
            # inside one unfinished header line, which the callbacks cannot see.
            self._head_fed += len(data)
            if self._head_fed > self._server._limits.max_header_bytes:
                self._protocol_error(431)

    def eof_received(self) -> bool:
        # As Envoy and nginx do, a client's FIN aborts its requests in flight (a half-closed
        # HTTP/1.1 client is indistinguishable from one that left): close at once.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server._conn_lost(self)
        gone = BodyError("client connection closed")
        body = self._pbody
        if body is not None:
            body._finish(gone)
            self._pbody = None
        for req, _ in self._queue:
            req.body._finish(gone)
        self._queue.clear()
        active = self._active
        if active is not None:
            active._req.body._finish(gone)
            if self._task is not None and not active.ended:
                self._task.cancel()
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._wpaused = True

    def resume_writing(self) -> None:
        self._wpaused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_start = self._loop.time()
        self._head_fed = 0
        self._url = b""
        self._headers = []
        self._hcount = 0
        self._hbytes = 0
        self._cl = -1
        self._te = False
        self._host = None
        self._expect = False
        self._in_trailers = False

    def on_url(self, url: bytes) -> None:
        if self._url:
            url = self._url + url
        self._url = url
        # The request line counts toward the header bytes, as in Envoy.
        self._hbytes = len(url)
        if len(url) > self._server._limits.max_header_bytes:
            raise _Reject(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        lim = self._server._limits
        line = len(name) + len(value) + 2
        if line > lim.max_header_line:
            raise _Reject(431)
        self._hbytes += line + 2
        self._hcount += 1
        if self._hcount > lim.max_headers or self._hbytes > lim.max_header_bytes:
            raise _Reject(431)
        if self._in_trailers:
            return
        key = header_name(name)
        val = value.rstrip(b" \t").decode("latin-1")
        if key == "content-length":
            self._cl = int(val)
        elif key == "transfer-encoding":
            self._te = True
        elif key == "host":
            if self._host is not None:
                raise _Reject(400)
            self._host = val
        elif key == "expect":
            self._expect = val.lower() == "100-continue"
        self._headers.append((key, val))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_trailers = True
        parser = self._parser
        raw_method = parser.get_method()
        method = METHODS.get(raw_method) or raw_method.decode("latin-1")
        target = self._url.decode("latin-1")
        if target[:1] == "/":
            path, _, query = target.partition("?")
            authority = self._host or ""
        else:
            path, query, authority = split_target(target, self._host)
        if self._te:
            body = BodyStream(None, self, self._expect)
            self._pbody = body
        elif self._cl > 0:
            body = BodyStream(self._cl, self, self._expect)
            self._pbody = body
        elif self._cl == 0:
            body = BodyStream(0, None, False)
        else:
            body = EMPTY_BODY
        req = Request(
            method,
            target,
            path,
            query,
            authority,
            self._headers,
            parser.should_keep_alive(),
            body,
            self._client,
            self._head_start,
            parser.get_http_version(),
        )
        queue = self._queue
        queue.append((req, ResponseWriter(self, req)))
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set_result(None)
        elif self._task is None:
            self._task = self._loop.create_task(self._worker())
        elif len(queue) >= PIPELINE_DEPTH and not self._rpaused:
            self._pause_reading()

    def on_body(self, data: bytes) -> None:
        body = self._pbody
        if body is not None:
            body._feed(data)

    def on_message_complete(self) -> None:
        body = self._pbody
        if body is not None:
            self._pbody = None
            body._finish()
