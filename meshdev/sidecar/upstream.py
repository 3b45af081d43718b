"""Pooled HTTP/1.1 client to upstream endpoints, with Envoy's per-cluster connection budget.

Interface (the request pipeline builds on exactly this):

- ``ConnectionBudget(max_connections, max_pending_requests)``: one per cluster, shared by the
  pools of the cluster's endpoints. ``cx_active`` counts the cluster's open (and opening)
  connections. A request that needs a new connection while ``cx_active >= max_connections``
  counts ``cx_overflow`` (Envoy's ``upstream_cx_overflow``) and waits as pending
  (``rq_pending_active``, ``rq_pending_total``) for a connection of its endpoint to be released
  or for budget to free up; when ``rq_pending_active >= max_pending_requests`` it raises
  ``PendingOverflow`` at once and counts ``rq_pending_overflow``. As in Envoy, an endpoint with
  no connection at all may open one even over the limit (so it cannot starve), counting the
  overflow. ``update(max_connections, max_pending_requests)`` changes the limits in place
  (config hot swap keeps the object and its counts). ``cx_open`` / ``rq_pending_open`` are
  Envoy's ``circuit_breakers.default.{cx_open,rq_pending_open}``. Counters are plain ints.
- ``UpstreamPool(address, port, budget)``: one per endpoint, reusable across config swaps.
  Readable ints: ``cx_active``, ``cx_total``, ``cx_connect_fail``, ``rq_active``, ``rq_total``,
  ``cx_idle``; ``authority`` is ``address:port``.
  ``await request(method, target, headers, body, *, connect_timeout)`` sends one request and
  returns an ``UpstreamResponse`` once its head has arrived. ``target`` goes on the request line
  as given (origin-form). Hop-by-hop headers are the caller's to strip, but framing is ours: a
  caller's ``transfer-encoding`` / ``connection`` are dropped; a ``bytes`` body gets its
  Content-Length; an async-iterator body is sent with the caller's ``content-length`` if given,
  else chunked, streamed with back-pressure while the response is awaited; ``None`` sends no
  body. A ``host`` header is added when missing. Idle keep-alive connections are reused (most
  recent first); one found closed (or closing) when taken is replaced before anything is sent,
  and one idle for over ``STALE_AFTER`` seconds first waits two loop turns so that a close the
  upstream sent meanwhile (its keep-alive timeout) is seen before the request is written. A
  close still in flight as the request goes out surfaces as ``UpstreamReset`` (as in Envoy).
  Cancelling the caller (a route timeout) while it awaits the head or the next body chunk
  closes the connection and restores every count; a caller cancelled elsewhere while relaying
  a response (say, writing to a slow client) must ``close()`` it. ``close()`` closes idle
  connections; connections in use close when released.
- Errors: ``ConnectFailure`` (refused, unreachable, or ``connect_timeout`` exceeded);
  ``UpstreamReset`` (the connection closed or reset before a complete response head; iterating
  the body raises it too when the connection dies mid-body); ``PendingOverflow``.
- ``UpstreamResponse``: ``status``, ``headers`` (names lower-cased). ``async for chunk in resp``
  streams the body with flow control (reading pauses while ``HIGH_WATER`` bytes wait unread);
  ``buffered()`` returns the whole body without awaiting when it has already arrived complete
  (the fast path for small responses), else ``None``; ``read_all(limit)`` reads it all (raises
  ``ResponseTooLarge``, closing the connection, past ``limit``); ``close()`` discards the
  connection unless the response already arrived complete. The connection goes back to the
  pool as soon as the response has been received whole and may be reused (its body then sits
  in the response's buffer), so a caller that drops a complete response loses nothing.
  ``complete`` tells whether the body has fully arrived; ``pending_bytes`` what waits unread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final, cast

import httptools

from meshdev.sidecar.http1 import header_name

HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024
_JOIN_MAX: Final = 16 * 1024
# A pooled connection idle this long may have been closed by the upstream's keep-alive
# timeout with the close not yet seen: one loop turn before reusing it lets that land.
STALE_AFTER = 1.0
_LAST_CHUNK: Final = b"0\r\n\r\n"
# Methods whose requests carry a body by convention: sent with content-length 0 when empty.
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


class ConnectFailure(Exception):
    """The upstream could not be connected: refused, unreachable, or connect_timeout."""


class UpstreamReset(Exception):
    """The upstream connection closed or reset before the response was complete."""


class PendingOverflow(Exception):
    """The cluster's pending-request queue is full (Envoy's upstream_rq_pending_overflow)."""


class ResponseTooLarge(Exception):
    """read_all(limit) met a body longer than limit."""


class ConnectionBudget:
    """One cluster's connection limits and counts (see the module doc)."""

    __slots__ = (
        "_waiting",
        "cx_active",
        "cx_overflow",
        "max_connections",
        "max_pending_requests",
        "rq_pending_active",
        "rq_pending_overflow",
        "rq_pending_total",
    )

    def __init__(self, max_connections: int = 1024, max_pending_requests: int = 1024) -> None:
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self.cx_active = 0
        self.cx_overflow = 0
        self.rq_pending_active = 0
        self.rq_pending_total = 0
        self.rq_pending_overflow = 0
        # Pools with pending requests, in the order they started waiting (an ordered set).
        self._waiting: dict[UpstreamPool, None] = {}

    @property
    def cx_open(self) -> bool:
        return self.cx_active >= self.max_connections

    @property
    def rq_pending_open(self) -> bool:
        return self.rq_pending_active >= self.max_pending_requests

    def update(self, max_connections: int, max_pending_requests: int) -> None:
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self._freed()

    def _others_waiting(self, pool: UpstreamPool) -> bool:
        """Whether another pool has live pending requests (dropping stale entries)."""
        for other in list(self._waiting):
            if any(not w.done() for w in other._waiters):
                if other is not pool:
                    return True
            else:
                del self._waiting[other]
        return False

    def _freed(self) -> None:
        """Budget may be free: let waiting pools open connections while it lasts."""
        while self._waiting and self.cx_active < self.max_connections:
            pool = next(iter(self._waiting))
            if not pool._grant_slot():
                del self._waiting[pool]


class UpstreamPool:
    """Keep-alive connections to one endpoint (see the module doc)."""

    __slots__ = (
        "_closed",
        "_idle",
        "_loop",
        "_waiters",
        "address",
        "authority",
        "budget",
        "cx_active",
        "cx_connect_fail",
        "cx_total",
        "port",
        "rq_active",
        "rq_total",
    )

    def __init__(self, address: str, port: int, budget: ConnectionBudget) -> None:
        self.address = address
        self.port = port
        self.authority = f"{address}:{port}"
        self.budget = budget
        self.cx_active = 0
        self.cx_total = 0
        self.cx_connect_fail = 0
        self.rq_active = 0
        self.rq_total = 0
        self._idle: list[_UpstreamConn] = []
        # Pending requests: each gets a released connection, or None meaning "a budget slot
        # is reserved for you, connect".
        self._waiters: deque[asyncio.Future[_UpstreamConn | None]] = deque()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def cx_idle(self) -> int:
        return len(self._idle)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        *,
        connect_timeout: float,
    ) -> UpstreamResponse:
        head, payload, stream, chunked = _encode_request(
            method, target, headers, body, self.authority
        )
        self.rq_active += 1
        self.rq_total += 1
        try:
            while True:
                conn = self._take_idle()
                if conn is None:
                    conn = await self._acquire(connect_timeout)
                    break
                if conn.loop.time() - conn.idle_since < STALE_AFTER or await self._still_open(conn):
                    break
            waiter = conn.send(head, payload, stream, chunked, method == "HEAD")
            try:
                resp = await waiter
            except asyncio.CancelledError:
                # The caller gave up (route timeout): the exchange cannot be finished.
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # The head arrived as we were cancelled; closing it keeps a complete
                    # (already pooled) connection and discards an unfinished one.
                    waiter.result().close()
                else:
                    conn._discard()
                raise
            finally:
                # The connection may already serve the next exchange (it was released when
                # the response completed): only clear what is ours.
                if conn._waiter is waiter:
                    conn._waiter = None
        except BaseException:
            self.rq_active -= 1
            raise
        # From here the response owns the rq_active count.
        if resp._done:
            self.rq_active -= 1
        else:
            resp._open = True
        return resp

    async def _still_open(self, conn: _UpstreamConn) -> bool:
        """Give a long-idle connection's pending close a chance to land; False if it did."""
        try:
            # Two turns: I/O events are handled after the callbacks already queued.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not conn.closed:
                self._idle.append(conn)
            raise
        return not conn.closed and not conn.transport.is_closing()

    async def close(self) -> None:
        self._closed = True
        idle = self._idle
        self._idle = []
        for conn in idle:
            conn._discard(graceful=True)

    # -- connections ------------------------------------------------------------------------

    def _take_idle(self) -> _UpstreamConn | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn
            # Closed while pooled (the upstream's keep-alive timeout): replace it.
            conn._discard()
        return None

    async def _acquire(self, connect_timeout: float) -> _UpstreamConn:
        budget = self.budget
        if budget.cx_active < budget.max_connections or self.cx_active == 0:
            if budget.cx_active >= budget.max_connections:
                budget.cx_overflow += 1
            self._reserve()
            return await self._connect(connect_timeout)
        budget.cx_overflow += 1
        if budget.rq_pending_active >= budget.max_pending_requests:
            budget.rq_pending_overflow += 1
            raise PendingOverflow(f"{self.authority}: pending request queue full")
        while True:
            got = await self._wait_pending()
            if got is None:
                return await self._connect(connect_timeout)
            if not got.closed:
                return got
            # Handed a connection that died before we ran: look again.
            got = self._take_idle()
            if got is not None:
                return got
            if budget.cx_active < budget.max_connections or self.cx_active == 0:
                self._reserve()
                return await self._connect(connect_timeout)

    async def _wait_pending(self) -> _UpstreamConn | None:
        """Wait as a pending request: for a released connection, or None and a slot."""
        budget = self.budget
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        waiter: asyncio.Future[_UpstreamConn | None] = loop.create_future()
        self._waiters.append(waiter)
        budget._waiting[self] = None
        budget.rq_pending_active += 1
        budget.rq_pending_total += 1
        try:
            got = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted just as we were cancelled: hand it on.
                given = waiter.result()
                if given is None:
                    self._unreserve()
                else:
                    self._release(given)
            raise
        finally:
            budget.rq_pending_active -= 1
        return got

    def _reserve(self) -> None:
        self.cx_active += 1
        self.budget.cx_active += 1

    def _unreserve(self) -> None:
        self.cx_active -= 1
        budget = self.budget
        budget.cx_active -= 1
        if self.cx_active == 0 and self._waiters:
            # No connection left to hand over: one waiter may connect even over budget.
            self._grant_slot()
        if budget._waiting:
            budget._freed()

    def _grant_slot(self) -> bool:
        """Wake one pending request of this pool with a reserved budget slot."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self._reserve()
                waiter.set_result(None)
                return True
        return False

    async def _connect(self, connect_timeout: float) -> _UpstreamConn:
        """Open a connection for a slot already reserved by the caller."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _UpstreamConn(self, loop), self.address, self.port
                )
        except (OSError, TimeoutError) as exc:
            self._unreserve()
            self.cx_connect_fail += 1
            reason = "connect timeout" if isinstance(exc, TimeoutError) else str(exc)
            raise ConnectFailure(f"{self.authority}: {reason}") from exc
        except BaseException:
            self._unreserve()
            raise
        self.cx_total += 1
        return conn

    def _release(self, conn: _UpstreamConn) -> None:
        """A connection finished its exchange and may be reused."""
        waiters = self._waiters
        budget = self.budget
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if (
            self._closed
            or budget.cx_active > budget.max_connections
            or (
                budget._waiting
                and budget.cx_active >= budget.max_connections
                and budget._others_waiting(self)
            )
        ):
            # Over a lowered limit, or other endpoints wait for budget: give the slot back.
            conn._discard(graceful=True)
            return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)

    def _lost(self, conn: _UpstreamConn) -> None:
        """Accounting for a connection that closed (called once per connection)."""
        if conn in self._idle:
            self._idle.remove(conn)
        self._unreserve()


class UpstreamResponse:
    """An upstream response: head now, body streamed (see the module doc)."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_exc",
        "_open",
        "_pool",
        "_size",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, status: int, headers: list[tuple[str, str]], conn: _UpstreamConn) -> None:
        self.status = status
        self.headers = headers
        self._conn: _UpstreamConn | None = conn
        # A list, not a deque: most bodies are one chunk, and a list is cheaper to make.
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pool = conn.pool
        # Counted in the pool's rq_active (set by UpstreamPool.request once handed over).
        self._open = False

    @property
    def complete(self) -> bool:
        return self._done and self._exc is None

    @property
    def pending_bytes(self) -> int:
        """Body bytes received and not yet read (bounded by flow control)."""
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
        chunk = self._chunks.pop(0)
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

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._size > HIGH_WATER:
            conn = self._conn
            if conn is not None and not conn.rpaused:
                conn.rpaused = True
                conn.transport.pause_reading()

    def _finish(self, exc: BaseException | None) -> None:
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


class _UpstreamConn(asyncio.Protocol):
    """One keep-alive connection to an upstream; one exchange at a time."""

    __slots__ = (
        "_drain",
        "_head_only",
        "_headers",
        "_pump",
        "_sent_all",
        "_skip",
        "_waiter",
        "closed",
        "idle_since",
        "loop",
        "parser",
        "pool",
        "resp",
        "rpaused",
        "transport",
        "wpaused",
    )

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser: Any = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.resp: UpstreamResponse | None = None
        self.rpaused = False
        self.wpaused = False
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._headers: list[tuple[str, str]] = []
        self._head_only = False
        self._skip = False
        self._sent_all = True
        self._pump: asyncio.Task[None] | None = None

    # -- the exchange -----------------------------------------------------------------------

    def send(
        self,
        head: bytes,
        payload: bytes | bytearray | memoryview | None,
        stream: AsyncIterator[bytes] | None,
        chunked: bool,
        head_only: bool,
    ) -> asyncio.Future[UpstreamResponse]:
        """Write an encoded request; the returned future gets the response head."""
        self._head_only = head_only
        waiter: asyncio.Future[UpstreamResponse] = self.loop.create_future()
        self._waiter = waiter
        transport = self.transport
        if stream is not None:
            self._sent_all = False
            transport.write(head)
            self._pump = self.loop.create_task(self._send_body(stream, chunked))
        else:
            self._sent_all = True
            if not payload:
                transport.write(head)
            elif len(payload) <= _JOIN_MAX:
                transport.write(head + payload)
            else:
                transport.writelines((head, payload))
        return waiter

    async def _send_body(self, stream: AsyncIterator[bytes], chunked: bool) -> None:
        transport = self.transport
        try:
            async for chunk in stream:
                if self.closed:
                    return
                if not chunk:
                    continue
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self.wpaused:
                    await self._wait_drain()
                    if self.closed:
                        return
            if chunked and not self.closed:
                transport.write(_LAST_CHUNK)
            self._sent_all = True
        except asyncio.CancelledError:
            return
        except Exception as exc:
            # The downstream body broke (client left, bad chunking): the upstream request
            # cannot be completed, so the connection goes.
            self._discard()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(UpstreamReset(f"request body failed: {exc}"))
        finally:
            self._pump = None

    async def _wait_drain(self) -> None:
        waiter = self.loop.create_future()
        self._drain = waiter
        try:
            await waiter
        finally:
            self._drain = None

    def _done(self, reusable: bool) -> None:
        """The response arrived whole."""
        resp = self.resp
        self.resp = None
        if resp is not None:
            resp._finish(None)
        if reusable and self._sent_all and not self.closed:
            self.pool._release(self)
        else:
            self._discard(graceful=True)

    def _discard(self, graceful: bool = False) -> None:
        """Close the connection and give its budget back; idempotent."""
        if self.closed:
            return
        self.closed = True
        if graceful:
            self.transport.close()
        else:
            self.transport.abort()
        pump = self._pump
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
        resp = self.resp
        if resp is not None:
            self.resp = None
            resp._finish(UpstreamReset("upstream connection closed mid-body"))
        self.pool._lost(self)

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._waiter is None and self.resp is None:
            # Nothing asked for: an idle connection the upstream is giving up on.
            self._discard()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            waiter = self._waiter
            self._discard()
            if waiter is not None and not waiter.done():
                waiter.set_exception(UpstreamReset(f"malformed upstream response: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        resp = self.resp
        if resp is not None and not _has_framing(resp.headers):
            # A response without Content-Length or chunking ends with the connection.
            self.resp = None
            resp._finish(None)
        waiter = self._waiter
        was_closed = self.closed
        if not was_closed:
            self._discard()
        if waiter is not None and not waiter.done():
            waiter.set_exception(UpstreamReset(f"upstream closed the connection: {exc or 'eof'}"))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self.wpaused = True

    def resume_writing(self) -> None:
        self.wpaused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((header_name(name), value.rstrip(b" \t").decode("latin-1")))

    def on_headers_complete(self) -> None:
        status: int = self.parser.get_status_code()
        if status < 200 and status != 101:
            # 100 Continue and friends: the real response follows.
            self._skip = True
            return
        resp = UpstreamResponse(status, self._headers, self)
        self.resp = resp
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)
        if self._head_only:
            # llhttp cannot be told the request was HEAD: end here, parse the next fresh.
            keep = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self._done(reusable=keep)

    def on_body(self, data: bytes) -> None:
        resp = self.resp
        if resp is not None:
            resp._feed(data)

    def on_message_complete(self) -> None:
        if self._skip:
            self._skip = False
            return
        if self.resp is None:
            return
        self._done(reusable=self.parser.should_keep_alive())


def _has_framing(headers: list[tuple[str, str]]) -> bool:
    return any(k in {"content-length", "transfer-encoding"} for k, _ in headers)


def _encode_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | AsyncIterator[bytes] | None,
    authority: str,
) -> tuple[bytes, bytes | bytearray | memoryview | None, AsyncIterator[bytes] | None, bool]:
    """The request head with our framing, and how the body goes: (head, payload, stream,
    chunked). Done before a connection is taken, so a bad header costs no connection."""
    parts = [f"{method} {target} HTTP/1.1\r\n"]
    has_host = False
    length: str | None = None
    for name, value in headers:
        if name == "host":
            has_host = True
        elif name == "content-length":
            length = value
            continue
        elif name in {"transfer-encoding", "connection"}:
            continue
        parts += (name, ": ", value, "\r\n")
    if not has_host:
        parts.append(f"host: {authority}\r\n")
    stream: AsyncIterator[bytes] | None = None
    payload: bytes | bytearray | memoryview | None = None
    chunked = False
    if body is None:
        if method in _BODY_METHODS:
            parts.append("content-length: 0\r\n")
    elif isinstance(body, bytes | bytearray | memoryview):
        payload = body
        parts.append(f"content-length: {len(body)}\r\n")
    else:
        stream = body
        if length is not None:
            parts.append(f"content-length: {length}\r\n")
        else:
            chunked = True
            parts.append("transfer-encoding: chunked\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1"), payload, stream, chunked
