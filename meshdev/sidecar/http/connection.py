"""One client connection: what asyncio and httptools call on it, the worker task that runs its
requests in order, flow control both ways, the server's timers, and closing (at once, or after
a lingering read so that an error answer is read rather than reset).

The connection sits below the server in the import graph: it asks of its server only what
``ServerSide`` describes, and the request body and the response writer ask of it only what
their own protocols (``body.BodyOwner``, ``writer.WriterOwner``) describe."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import httptools

from meshdev.sidecar.http.body import EMPTY_BODY, BodyError, BodyStream
from meshdev.sidecar.http.flowbuffer import HIGH_WATER, LOW_WATER
from meshdev.sidecar.http.raw import RawEnd
from meshdev.sidecar.http.request import Request, split_target
from meshdev.sidecar.http.tally import UNCOUNTED, ConnTally
from meshdev.sidecar.http.wire import ERRORS, METHODS, error_response, header_name
from meshdev.sidecar.http.writer import ResponseWriter, send_plain

if TYPE_CHECKING:
    from meshdev.common.sidecar_config import Limits

# Pipelined requests parsed ahead of the one being answered before reading pauses.
PIPELINE_DEPTH: Final = 8
# After an error answer, how long we keep reading (and discarding) so the client can read the
# answer before the close; closing with unread input would send a reset instead.
LINGER: Final = 2.0

# One logger for the whole engine, named after its public package.
log = logging.getLogger("meshdev.sidecar.http")

Handler = Callable[[Request, ResponseWriter], Awaitable[None]]

# HTTP/2's connection preface (RFC 9113 section 3.4): a client with prior knowledge of h2c
# opens with it, where an HTTP/1.1 client sends a request line.
H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Takes a new connection over when it opened with H2_PREFACE: the transport, the client's
# address, the bytes read so far (preface included, already counted) and the connection's
# stats (counted open: the HTTP/2 connection counts its close). Installed by
# ``sidecar.http2``, which this engine does not import.
H2Handoff = Callable[[asyncio.Transport, tuple[str, int], bytes, ConnTally], None]


class Served(Protocol):
    """A connection as the server sweeps, drains and closes it: this module's
    ``ClientConnection``, or an HTTP/2 connection it handed over."""

    @property
    def _task(self) -> asyncio.Task[None] | None: ...
    def _check_timers(self, now: float, limits: Limits) -> None: ...
    def _close_idle(self) -> None: ...
    def _abort(self) -> None: ...
    # (bytes read and waiting for a handler, bytes written and waiting for the socket)
    def _buffered(self) -> tuple[int, int]: ...


class ServerSide(Protocol):
    """What a connection needs of the server that accepted it (``server.HttpServer``)."""

    @property
    def _handler(self) -> Handler: ...
    @property
    def _loop(self) -> asyncio.AbstractEventLoop: ...
    # Read at each check, so that a hot swap of the limits applies to open connections.
    @property
    def _limits(self) -> Limits: ...
    @property
    def _draining(self) -> bool: ...
    @property
    def _conns(self) -> set[Served]: ...
    # Set: a connection opening with HTTP/2's preface is handed over to it.
    @property
    def _h2c(self) -> H2Handoff | None: ...
    # Asked once per connection: the stats it counts in (None: counted nowhere).
    @property
    def tallies(self) -> Callable[[], ConnTally] | None: ...
    def _conn_lost(self, conn: Served) -> None: ...


class _Reject(Exception):
    """Raised inside parser callbacks to refuse a request with `status`."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, runs handlers in order, enforces the limits."""

    __slots__ = (
        "_active",
        "_cl",
        "_client",
        "_closed",
        "_cx",
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
        "_http1",
        "_idle_since",
        "_ignore",
        "_in_head",
        "_in_trailers",
        "_linger_since",
        "_local",
        "_loop",
        "_parser",
        "_pbody",
        "_queue",
        "_raw",
        "_rpaused",
        "_rx",
        "_server",
        "_sniffed",
        "_task",
        "_te",
        "_transport",
        "_tx",
        "_upgrade_buf",
        "_url",
        "_wakeup",
        "_wpaused",
    )

    def __init__(self, server: ServerSide) -> None:
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
        # While an upgrade request waits for its answer: the bytes after its head.
        self._upgrade_buf: bytearray | None = None
        # Until the first bytes tell HTTP/1.1 from HTTP/2 (when the server speaks both), what
        # arrived so far; the check rides on the `_ignore` branch, so once decided the
        # HTTP/1.1 path pays nothing per read.
        self._sniffed: bytes | None = None
        if server._h2c is not None:
            self._sniffed = b""
            self._ignore = True
        tallies = server.tallies
        cx = tallies() if tallies is not None else UNCOUNTED
        self._cx = cx
        # Bumped on every read and write: the tallies themselves, one attribute away.
        self._rx = cx.rx_bytes
        self._tx = cx.tx_bytes
        # Closed by us (a timeout, an error answer, a drain, a reset), not by the client.
        self._local = False
        self._http1 = False
        # After a 101: the raw stream it became (its bytes are counted as it closes).
        self._raw: RawEnd | None = None

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._client = (str(peer[0]), int(peer[1]))
        self._idle_since = self._loop.time()
        self._server._conns.add(self)
        cx = self._cx
        cx.opened()
        if self._sniffed is None:
            self._http1 = True
            cx.http1()

    def data_received(self, data: bytes) -> None:
        self._rx.value += len(data)
        if self._ignore:
            if self._sniffed is not None:
                self._sniff(data)
                return
            buf = self._upgrade_buf
            if buf is not None:
                # A WebSocket client waiting for its 101 should send nothing; what it does
                # send is the upgraded stream's, held (with flow control) until the answer.
                buf += data
                if len(buf) > HIGH_WATER and not self._rpaused:
                    self._pause_reading()
            return
        was_in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops after the head of a request that may switch protocols; what
            # follows it in this read begins at the offset it gives.
            self._upgrade(data[exc.args[0] :])
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

    def _sniff(self, data: bytes) -> None:
        """The connection's first bytes: HTTP/2's preface hands it over, anything else is
        HTTP/1.1 (a preface still partial waits for more)."""
        seen = self._sniffed + data if self._sniffed else data
        if len(seen) < len(H2_PREFACE) and H2_PREFACE.startswith(seen):
            self._sniffed = seen
            return
        self._sniffed = None
        self._ignore = False
        handoff = self._server._h2c
        if handoff is not None and seen.startswith(H2_PREFACE):
            # This object leaves the server's books without counting as closed traffic; the
            # HTTP/2 connection takes the transport and enters them itself.
            self._closed = True
            self._server._conn_lost(self)
            handoff(self._transport, self._client, seen, self._cx)
            return
        self._http1 = True
        self._cx.http1()
        self._rx.value -= len(seen)  # counted as they arrived: fed again, not read again
        self.data_received(seen)

    def eof_received(self) -> bool:
        # As Envoy and nginx do, a client's FIN aborts its requests in flight (a half-closed
        # HTTP/1.1 client is indistinguishable from one that left): close at once.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return  # handed over to HTTP/2, whose connection counts its own close
        self._closed = True
        self._server._conn_lost(self)
        active = self._active
        busy = (
            (active is not None and not active.ended)
            or bool(self._queue)
            or self._in_head
            or self._pbody is not None
        )
        cx = self._cx
        if busy and not self._local:
            cx.rq_rx_reset.value += 1
        cx.closed(local=self._local, active_rq=busy, http1=self._http1)
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

    # -- parser callbacks: bytes become queued requests, within the header limits -----------

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

    # -- upgrades: the request that may switch protocols, and the switch ------------------

    def _upgrade(self, rest: bytes) -> None:
        """llhttp stopped after the head of a CONNECT or an upgrade request (`Connection:
        upgrade` with `Upgrade`); `rest` is what followed it in the same read.

        A WebSocket upgrade (Istio enables it on every HTTP route) stops HTTP parsing here:
        later bytes belong to the upgraded stream if the answer is a 101, and a different
        answer closes the connection after it (as Envoy does). Any other protocol (h2c, ...)
        is not upgraded: the request goes on as an ordinary one (the proxy strips its upgrade
        headers as hop-by-hop), and so does the connection. CONNECT is not proxied: it is
        answered, then the connection closes."""
        queue = self._queue
        if not queue:
            # Not reached: the request was queued by on_headers_complete in this very read.
            self._protocol_error(400)
            return
        req = queue[-1][0]
        upgrade = req.header("upgrade")
        if req.method != "CONNECT" and upgrade is not None and upgrade.lower() == "websocket":
            req.upgrade = "websocket"
            req.keep_alive = False
            self._ignore = True
            self._upgrade_buf = bytearray()
            if rest:
                self._rx.value -= len(rest)  # counted in the read that held it
                self.data_received(rest)
            return
        if req.method == "CONNECT":
            self._ignore = True
            req.keep_alive = False
            return
        body = req.body
        if body.has_body:
            # llhttp skipped the body (httptools asks it to for any upgrade) and ended the
            # message: reopen the body and let a fresh parser read it, then what follows.
            body._done = False
            self._pbody = body
            self._parser = httptools.HttpRequestParser(_BodyAfterUpgrade(self))
            chunked = req.header("transfer-encoding") is not None
            framing = "transfer-encoding: chunked" if chunked else f"content-length: {body.length}"
            self._parser.feed_data(f"PUT / HTTP/1.1\r\n{framing}\r\n\r\n".encode("latin-1"))
        if rest:
            self._rx.value -= len(rest)  # counted in the read that held it
            self.data_received(rest)

    def _switch(self, head: bytes) -> RawEnd:
        """Send the 101's `head` and hand the connection's raw byte stream over (reading
        paused until it is spliced; see ``raw``). Its connection_lost reaches this connection
        still, which ends its accounting as for any connection."""
        transport = self._transport
        transport.write(head)
        self._tx.value += len(head)
        early = bytes(self._upgrade_buf or b"")
        self._upgrade_buf = None
        if not self._rpaused:
            self._rpaused = True
            transport.pause_reading()
        end = RawEnd(transport, early, self._raw_lost)
        transport.set_protocol(end)
        self._raw = end
        # The raw stream counts what it reads from here on, these early bytes included.
        self._rx.value -= len(early)
        return end

    def _raw_lost(self, exc: Exception | None) -> None:
        """The upgraded stream closed: what crossed it is counted (read from the client;
        written to it, what the upstream's end read), then the connection's close."""
        end = self._raw
        if end is not None:
            self._rx.value += end.received
            peer = end._peer
            if peer is not None:
                self._tx.value += peer.received
        self.connection_lost(exc)

    # -- the worker: requests answered in order ---------------------------------------------

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
        """A response ended (or was aborted): decide whether the connection goes on."""
        if writer is not self._active:
            return
        self._active = None
        if self._closed:
            return
        if writer._close or self._server._draining or not writer._req.body._done:
            if self._server._draining:
                self._cx.drain_close.value += 1
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
        if status == 408:
            self._cx.header_timeout.value += 1
        else:
            self._cx.protocol_error.value += 1
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

    # -- flow control: the client's socket buffer, and what waits unread --------------------

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

    def _pause_reading(self) -> None:
        self._rpaused = True
        self._transport.pause_reading()

    def _maybe_resume(self) -> None:
        if not self._rpaused or self._closed:
            return
        body = self._pbody
        if body is not None and body._size >= LOW_WATER:
            return
        buf = self._upgrade_buf
        if buf is not None and len(buf) >= LOW_WATER:
            return
        if len(self._queue) >= PIPELINE_DEPTH:
            return
        self._rpaused = False
        self._transport.resume_reading()

    # -- timers: checked by the server's sweep, not one timer per request ------------------

    def _check_timers(self, now: float, limits: Limits) -> None:
        if self._closed:
            return
        if self._linger_since:
            if now - self._linger_since > LINGER:
                self._local = True
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
            self._local = True
            self._cx.idle_timeout.value += 1
            self._transport.close()

    def _buffered(self) -> tuple[int, int]:
        body = self._pbody
        held = self._upgrade_buf
        rx = (body._size if body is not None else 0) + (len(held) if held is not None else 0)
        transport = self._transport
        tx = 0 if self._closed or transport is None else transport.get_write_buffer_size()
        return rx, tx

    # -- closing ----------------------------------------------------------------------------

    def _send_error(self, status: int) -> None:
        if self._closed:
            return
        answer = ERRORS.get(status) or error_response(status)
        self._transport.write(answer)
        self._tx.value += len(answer)
        self._linger_close()

    def _linger_close(self) -> None:
        """Close after the written data, reading and discarding input meanwhile."""
        if self._closed or self._linger_since:
            return
        self._local = True
        self._ignore = True
        # An upgrade that got no 101: its held bytes are discarded with the rest.
        self._upgrade_buf = None
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
        self._local = True
        self._ignore = True
        self._transport.abort()

    def _close_idle(self) -> None:
        if self._active is None and not self._queue and not self._in_head and self._pbody is None:
            if not self._closed:
                self._local = True
                self._cx.drain_close.value += 1
            self._transport.close()


class _BodyAfterUpgrade:
    """The parser callbacks for the body of a request llhttp treated as an upgrade that was
    not made (see ``ClientConnection._upgrade``): a stand-in head (fed first, giving the
    body's framing) is skipped, the body and its trailers go to the request, and every later
    message is the connection's, as before."""

    __slots__ = ("_conn", "_state")

    # _state: in the stand-in head, in the body, then passing everything on.
    _HEAD: Final = 0
    _BODY: Final = 1
    _PASS: Final = 2

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._state = self._HEAD

    def on_message_begin(self) -> None:
        if self._state == self._PASS:
            self._conn.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._state == self._PASS:
            self._conn.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # In the body: its trailers, which the connection counts and drops as such.
        if self._state != self._HEAD:
            self._conn.on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._state == self._HEAD:
            self._state = self._BODY
        else:
            self._conn.on_headers_complete()

    def on_body(self, data: bytes) -> None:
        self._conn.on_body(data)

    def on_message_complete(self) -> None:
        self._state = self._PASS
        self._conn.on_message_complete()
