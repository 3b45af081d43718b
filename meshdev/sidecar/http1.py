"""The sidecar's HTTP/1.1 server: an asyncio.Protocol on httptools (llhttp), built for a lean
per-request path. The caller installs uvloop when present; nothing here depends on it.

Interface (the request pipeline builds on exactly this):

- ``start_server(handler, host, port, limits) -> HttpServer`` listens and calls
  ``handler(request, writer)`` once per request, in the connection's task. Requests pipelined
  on one connection are handled one after another (the next when the handler returns) and
  answered in order.
- ``Request`` (a slots dataclass): ``method``, ``target`` (raw request-target: origin-form
  ``/a?b`` or absolute-form ``http://backend/items``), ``path`` and ``query`` (split at the first
  ``?``, ``query`` is ``''`` when there is none; for absolute-form the URL's path, ``/`` when
  empty), ``authority`` (host[:port] of an absolute-form target, else the Host header, ``''`` if
  none), ``headers`` (arrival order, names lower-cased, values latin-1 decoded with trailing
  whitespace stripped; trailers are dropped), ``keep_alive``, ``body`` (a ``BodyStream``),
  ``client`` (peer address), ``received_at`` (``loop.time()`` at the request's first byte),
  ``version`` (``"1.1"`` / ``"1.0"``), the property ``origin_form`` (``path?query``, what an
  upstream wants) and ``header(name)`` (first value or ``None``).
- ``BodyStream``: the request body, streamed with flow control (reading from the client pauses
  while more than ``HIGH_WATER`` bytes wait unread), never buffered whole. ``length`` is the
  Content-Length or ``None`` (chunked or absent); ``has_body`` tells whether one was declared;
  ``pending_bytes`` is what waits unread; ``complete`` whether it has all arrived.
  ``async for chunk in body`` yields it; a broken body (bad chunking, client gone) raises
  ``BodyError``. ``read_all(limit)`` returns the whole body, or ``None`` when it is longer
  than ``limit``: then nothing is lost, iterating afterwards yields the body again from its
  first byte (what was read stays buffered, at most ``limit`` plus one chunk). After a
  successful ``read_all`` the stream is consumed. ``Expect: 100-continue`` is answered on the
  first read.
- ``ResponseWriter``: ``start(status, headers)`` (framing is the writer's: it keeps a given
  ``content-length``, otherwise sends ``transfer-encoding: chunked`` to HTTP/1.1 clients and
  closes after the body for HTTP/1.0 ones; it drops any ``transfer-encoding`` / ``connection``
  the caller passed, adds ``connection: close`` when the connection will close, and sends no
  body for HEAD, 1xx, 204 and 304). The head goes out with the first ``write`` or at ``end``
  (one send for a small response); ``flush()`` sends it at once. ``write(chunk)`` waits while
  the client's socket buffer is full. ``end()`` finishes the response; ``abort()`` resets the
  connection (e.g. the upstream died mid-body). Header names and values must be latin-1 and
  free of CR/LF (values taken from parsed messages are). ``started`` / ``ended`` tell the state.
- A handler that raises before ``start`` gets a 500; after ``start`` the connection is reset.
  When the client goes away (a FIN counts, as in Envoy) before the response ended, the
  handler is cancelled (as Envoy resets the upstream stream): it sees ``CancelledError`` and
  must clean up, e.g. close an ``UpstreamResponse`` it was relaying.
  A response that ends while its request body is still unread closes the connection.
- ``HttpServer``: ``sockets``, ``port``, ``connections`` (open count), ``limits`` (assignable:
  hot swap at config reload; ``set_limits(server, limits)`` does the same), and
  ``close(grace)``: stop accepting, close idle keep-alive connections, let requests in flight
  finish (their responses get ``connection: close``) for up to ``grace`` seconds, then reset.

Hardening (``schema.Limits``): llhttp rejects smuggling-prone framing (Content-Length with
Transfer-Encoding, duplicate Content-Length, bad chunk sizes, unknown transfer codings,
CR/LF/NUL in values, obsolete line folding); this module adds the header count, header line
and total header size limits (431), a second Host header (400), a header timeout measured
from the request's first byte (408), and the keep-alive idle timeout. Errors are answered and
the connection is closed after a short lingering read, so the client sees the answer instead
of a reset. Timers are one sweep per server, not one timer per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, cast

import httptools

from meshdev.sidecar.schema import Limits

log = logging.getLogger(__name__)

# Request body flow control: stop reading from the client above HIGH_WATER buffered bytes,
# resume below LOW_WATER.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024
# Pipelined requests parsed ahead of the one being answered before reading pauses.
PIPELINE_DEPTH: Final = 8
# After an error answer, how long we keep reading (and discarding) so the client can read the
# answer before the close; closing with unread input would send a reset instead.
LINGER: Final = 2.0
# Writes up to this size are joined with the head into one send.
_JOIN_MAX: Final = 16 * 1024


class BodyError(Exception):
    """The request body cannot be read to its end: malformed chunking or the client left."""


class _Reject(Exception):
    """Raised inside parser callbacks to refuse a request with `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX: Final = 2048


def header_name(raw: bytes) -> str:
    """Lower-cased header name, cached so the common names cost one dict look-up."""
    name = _NAME_CACHE.get(raw)
    if name is None:
        name = raw.decode("latin-1").lower()
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[raw] = name
    return name


_METHODS: dict[bytes, str] = {
    m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
}

_STATUS_LINES: dict[int, str] = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}


def status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} \r\n"


def _error_response(status: int) -> bytes:
    phrase = HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(phrase)}\r\nconnection: close\r\n\r\n{phrase}"
    ).encode("latin-1")


_ERRORS: dict[int, bytes] = {s: _error_response(s) for s in (400, 408, 431, 500)}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


class BodyStream:
    """A request body, streamed from the client with flow control (see the module doc)."""

    __slots__ = ("_chunks", "_conn", "_continue", "_done", "_exc", "_size", "_waiter", "length")

    def __init__(self, length: int | None, conn: _Conn | None, expect_continue: bool) -> None:
        self.length = length
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = conn is None
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._continue = expect_continue

    @property
    def has_body(self) -> bool:
        """True when the request declared a body (Content-Length > 0 or chunked)."""
        return self._conn is not None

    @property
    def complete(self) -> bool:
        """True once the whole body has arrived (it may still sit unread in the buffer)."""
        return self._done

    @property
    def pending_bytes(self) -> int:
        """Bytes received from the client and not yet read (bounded by flow control)."""
        return self._size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                return self._pop()
            if self._exc is not None:
                raise self._exc
            if self._done:
                raise StopAsyncIteration
            await self._wait()

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
                conn._transport.write(_CONTINUE)
        waiter = conn._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._size > HIGH_WATER:
            conn = self._conn
            if conn is not None and not conn._rpaused:
                conn._pause_reading()

    def _finish(self, exc: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._exc = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# Requests without a body share one finished stream.
EMPTY_BODY: Final = BodyStream(None, None, False)


@dataclass(slots=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    authority: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    body: BodyStream
    client: tuple[str, int]
    received_at: float
    version: str = "1.1"

    @property
    def origin_form(self) -> str:
        """The target as an upstream wants it: path and query, without scheme and host."""
        if self.target[:1] == "/":
            return self.target
        return f"{self.path}?{self.query}" if self.query else self.path

    def header(self, name: str) -> str | None:
        """First value of header `name` (lower-case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


class ResponseWriter:
    """Writes one response on the request's connection (see the module doc)."""

    __slots__ = (
        "_chunked",
        "_close",
        "_conn",
        "_head",
        "_head_only",
        "_remaining",
        "_req",
        "ended",
        "started",
    )

    def __init__(self, conn: _Conn, req: Request) -> None:
        self._conn = conn
        self._req = req
        self.started = False
        self.ended = False
        self._head: bytes | None = None
        self._chunked = False
        self._head_only = False
        # Bytes still owed under a Content-Length; None when not length-framed.
        self._remaining: int | None = None
        self._close = False

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        conn = self._conn
        req = self._req
        parts = [_STATUS_LINES.get(status) or status_line(status)]
        length = -1
        for name, value in headers:
            if name == "content-length":
                length = int(value)
                continue
            if name in {"transfer-encoding", "connection"}:
                continue
            parts += (name, ": ", value, "\r\n")
        close = (
            self._close
            or not req.keep_alive
            or conn._server._draining
            # An unfinished request body cannot be skipped to reach the next request.
            or not req.body._done
        )
        if req.method == "HEAD" or status < 200 or status in {204, 304}:
            self._head_only = True
            if length >= 0 and (status == 304 or req.method == "HEAD"):
                parts.append(f"content-length: {length}\r\n")
        elif length >= 0:
            self._remaining = length
            parts.append(f"content-length: {length}\r\n")
        elif req.version == "1.1":
            self._chunked = True
            parts.append("transfer-encoding: chunked\r\n")
        else:
            # An HTTP/1.0 client learns where the body ends from the close.
            close = True
        if close:
            self._close = True
            parts.append("connection: close\r\n\r\n")
        elif req.version != "1.1":
            parts.append("connection: keep-alive\r\n\r\n")
        else:
            parts.append("\r\n")
        self._head = "".join(parts).encode("latin-1")

    async def write(self, chunk: bytes) -> None:
        if not self.started:
            raise RuntimeError("write() before start()")
        conn = self._conn
        if self.ended or conn._closed or not chunk:
            return
        head = self._head
        self._head = None
        transport = conn._transport
        if self._head_only:
            if head is not None:
                transport.write(head)
            return
        if self._chunked:
            size = b"%x\r\n" % len(chunk)
            if head is not None:
                if len(chunk) <= _JOIN_MAX:
                    transport.write(b"".join((head, size, chunk, b"\r\n")))
                else:
                    transport.writelines((head, size, chunk, b"\r\n"))
            else:
                transport.writelines((size, chunk, b"\r\n"))
        else:
            remaining = self._remaining
            if remaining is not None:
                if len(chunk) > remaining:
                    # More than announced: send what was promised, then close.
                    chunk = chunk[:remaining]
                    self._close = True
                self._remaining = remaining - len(chunk)
            if head is None:
                transport.write(chunk)
            elif len(chunk) <= _JOIN_MAX:
                transport.write(head + chunk)
            else:
                transport.writelines((head, chunk))
        if conn._wpaused:
            await conn._drain()

    async def flush(self) -> None:
        """Send the head now instead of with the first body chunk."""
        head = self._head
        if head is not None and not self._conn._closed:
            self._head = None
            self._conn._transport.write(head)

    async def end(self) -> None:
        if self.ended:
            return
        if not self.started:
            raise RuntimeError("end() before start()")
        self.ended = True
        conn = self._conn
        if conn._closed:
            conn._response_done(self)
            return
        head = self._head
        self._head = None
        if self._chunked:
            conn._transport.write(_LAST_CHUNK if head is None else head + _LAST_CHUNK)
        elif head is not None:
            conn._transport.write(head)
        if self._remaining:
            # Fewer bytes than the Content-Length promised: the framing is broken.
            log.warning("response ended %d bytes short of its content-length", self._remaining)
            conn._abort()
        conn._response_done(self)

    def abort(self) -> None:
        if self.ended:
            return
        # ended first: connection_lost then leaves the handler that asked for this running.
        self.ended = True
        self._conn._abort()
        self._conn._response_done(self)


Handler = Callable[[Request, ResponseWriter], Awaitable[None]]


class _Conn(asyncio.Protocol):
    """One client connection: parses requests, runs handlers in order, enforces the limits."""

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

    async def _drain(self) -> None:
        if not self._wpaused or self._closed:
            return
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        try:
            await waiter
        finally:
            self._drain_waiter = None

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
        method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
        target = self._url.decode("latin-1")
        if target[:1] == "/":
            path, _, query = target.partition("?")
            authority = self._host or ""
        else:
            path, query, authority = _split_target(target, self._host)
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

    # -- request lifecycle ------------------------------------------------------------------

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
                    await _plain(writer, 500, b"Internal Server Error")
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
                    await _plain(writer, 500, b"Internal Server Error")

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

    def _send_error(self, status: int) -> None:
        if self._closed:
            return
        self._transport.write(_ERRORS.get(status) or _error_response(status))
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

    def _close_idle(self) -> None:
        if self._active is None and not self._queue and not self._in_head and self._pbody is None:
            self._transport.close()


def _split_target(target: str, host: str | None) -> tuple[str, str, str]:
    """path, query, authority of an absolute-form (or authority-/asterisk-form) target."""
    scheme_end = target.find("://")
    if scheme_end < 0:
        # authority-form (CONNECT host:port) or asterisk-form (OPTIONS *).
        if target == "*":
            return "*", "", host or ""
        return "", "", target
    rest = target[scheme_end + 3 :]
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority = rest[:cut].rpartition("@")[2]
    path, _, query = rest[cut:].partition("?")
    if not path:
        path = "/"
    return path, query.partition("#")[0], authority


async def _plain(writer: ResponseWriter, status: int, text: bytes) -> None:
    writer._close = True
    await writer.start(status, [("content-type", "text/plain"), ("content-length", str(len(text)))])
    await writer.write(text)
    await writer.end()


class HttpServer:
    """A listening HTTP/1.1 server (see the module doc)."""

    def __init__(self, handler: Handler, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self._handler = handler
        self._limits = limits
        self._loop = loop
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._draining = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None
        self._port = 0

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        # Connections read the limits at each check, so the swap applies at once.
        self._limits = limits

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The bound port (kept after close)."""
        return self._port

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _protocol(self) -> _Conn:
        return _Conn(self)

    def _conn_lost(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        if not self._conns and self._all_closed is not None:
            self._all_closed.set()

    def _sweep(self) -> None:
        limits = self._limits
        now = self._loop.time()
        for conn in list(self._conns):
            conn._check_timers(now, limits)
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        lim = self._limits
        every = min(lim.header_timeout, lim.idle_timeout, LINGER) / 4
        self._sweeper = self._loop.call_later(min(max(every, 0.01), 1.0), self._sweep)

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish (up to grace)."""
        self._draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn._close_idle()
        stragglers: list[asyncio.Task[None]] = []
        if self._conns:
            self._all_closed = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for conn in list(self._conns):
                    if conn._task is not None:
                        stragglers.append(conn._task)
                    conn._abort()
        # Let connection_lost callbacks of the last aborts run, and their handlers unwind.
        while self._conns:
            await asyncio.sleep(0.01)
        if stragglers:
            await asyncio.wait(stragglers, timeout=grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            await self._server.wait_closed()


async def start_server(handler: Handler, host: str, port: int, limits: Limits) -> HttpServer:
    """Listen on host:port (0 picks a free port) and serve `handler`."""
    loop = asyncio.get_running_loop()
    server = HttpServer(handler, limits, loop)
    server._server = await loop.create_server(
        server._protocol, host, port, backlog=2048, reuse_address=True
    )
    server._port = int(server._server.sockets[0].getsockname()[1])
    server._schedule_sweep()
    return server


def set_limits(server: HttpServer, limits: Limits) -> None:
    """Hot-swap the hardening limits of a running server (same as `server.limits = ...`)."""
    server.limits = limits
