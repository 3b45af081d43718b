"""Upstream HTTP/2 (h2c with prior knowledge) for clusters of `protocol: http2 | grpc` services,
after Envoy's http2 connection pool (source/common/http/http2/conn_pool.cc).

``H2Pool`` is an ``upstream.UpstreamPool`` (the same ``request`` and counters, so hosts,
balancers and the forwarding loop use it unchanged): requests are streams multiplexed on one
connection per endpoint; a second connection opens only when the first is full (the peer's
SETTINGS_MAX_CONCURRENT_STREAMS), within the cluster's connection budget; beyond both, a
request waits as pending (``max_pending_requests``, overflow as for HTTP/1.1). The circuit
breaker's ``max_requests`` is counted per stream by the forwarding loop, as Envoy's http2 pools
do. While a connection is being opened, requests wait for it rather than each opening their
own. A response is an ``H2Response`` (an ``UpstreamResponse``): its body is acknowledged to
the upstream as it is read (bounded by the stream window), its ``trailers`` are the upstream's
(gRPC's ``grpc-status`` lives there), and closing it resets only its stream. ``upgrade`` is
refused (HTTP/2 has no Upgrade; WebSocket over HTTP/2 is not supported upstream). A cluster
with `tls` gets HTTP/2 over mutual TLS instead of h2c, offering ALPN h2 (sidecar/tls/upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Final

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import FlowControlError, ProtocolError, StreamClosedError

from meshdev.sidecar.http2.codec import Codec, client_codec
from meshdev.sidecar.tls.upstream import TlsOrigin, open_connection
from meshdev.sidecar.upstream.budget import ConnectionBudget
from meshdev.sidecar.upstream.errors import ConnectFailure, PendingOverflow, UpstreamReset
from meshdev.sidecar.upstream.pool import UpstreamPool
from meshdev.sidecar.upstream.response import UpstreamResponse

# Connection-specific headers (RFC 9113 section 8.2.2) and those HTTP/2 carries as pseudo
# headers: never sent as regular fields.
_DROP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host", "te"}
)


def _text(headers: object) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in headers or []:  # type: ignore[attr-defined]
        n = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        v = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        out.append((n, v))
    return out


class H2Response(UpstreamResponse):
    """An upstream answer on one stream (see the module doc)."""

    __slots__ = ("_h2", "_sid", "trailers")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        conn: H2ClientConnection,
        stream_id: int,
    ) -> None:
        self.status = status
        self.headers = headers
        self.trailers = None
        self._conn = None
        self._chunks = deque()
        self._size = 0
        self._done = False
        self._exc = None
        self._waiter = None
        self._pool = conn.pool
        self._open = False
        self._h2 = conn
        self._sid = stream_id

    def _pop(self) -> bytes:
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self._h2._consumed(self._sid, len(chunk))
        return chunk

    async def _wait(self) -> None:
        waiter = self._h2.loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        except asyncio.CancelledError:
            self.close()
            raise
        finally:
            self._waiter = None

    def _pause(self) -> None:
        # The stream window bounds what waits unread.
        return

    def buffered(self) -> bytes | None:
        """As ``UpstreamResponse.buffered``, the bytes taken acknowledged to the upstream:
        every byte received must be, or the connection's window closes for good."""
        size = self._size
        body = super().buffered()
        if body is not None and size:
            self._h2._consumed(self._sid, size)
        return body

    def close(self) -> None:
        """Drop the answer (acknowledging what it dropped unread); an unfinished stream is
        reset (the connection goes on)."""
        if self._size:
            self._h2._consumed(self._sid, self._size)
        self._chunks.clear()
        self._size = 0
        if self._done:
            return
        self._done = True
        self._exc = UpstreamReset("response closed by the caller")
        self._h2._cancel(self._sid)
        self._end_rq()


class _Exchange:
    """One stream in flight: the future of its answer's head, then the answer."""

    __slots__ = ("head", "pump", "resp")

    def __init__(self, head: asyncio.Future[H2Response]) -> None:
        self.head = head
        self.resp: H2Response | None = None
        self.pump: asyncio.Task[None] | None = None


class H2ClientConnection(asyncio.Protocol):
    """One h2c connection to an endpoint, streams multiplexed on it."""

    def __init__(self, pool: H2Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.codec: Codec = client_codec()
        self.closed = False
        # No new streams: the peer sent GOAWAY, or the pool closes this connection.
        self.draining = False
        self.streams: dict[int, _Exchange] = {}
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        self._wpaused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._flush_due = False
        # The cluster's traffic counts (bytes both ways, the close), and whether we closed.
        self._traffic = pool.budget.traffic
        self._local = False

    # -- capacity ---------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Streams it may still open now."""
        if self.closed or self.draining:
            return 0
        return self.codec.remote_settings.max_concurrent_streams - len(self.streams)

    # -- transport events -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._flush_now()

    def data_received(self, data: bytes) -> None:
        self._traffic.rx_bytes += len(data)
        if self.closed:
            return
        try:
            events = self.codec.receive_data(data)
        except (ProtocolError, FlowControlError):
            self._flush_now()
            self._local = True
            self.transport.abort()
            return
        for event in events:
            self._event(event)
        self._flush_now()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._traffic.closed(local=self._local, active_rq=bool(self.streams))
        gone = UpstreamReset(f"{self.pool.authority}: connection closed")
        for exchange in list(self.streams.values()):
            self._fail(exchange, gone)
        self.streams.clear()
        for fut in (*self._window_waiters.values(), *self._drain_waiters):
            if not fut.done():
                fut.set_result(None)
        self.pool._lost_h2(self)

    def pause_writing(self) -> None:
        self._wpaused = True

    def resume_writing(self) -> None:
        self._wpaused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    # -- events -----------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            sid = event.stream_id or 0
            exchange = self.streams.get(sid)
            size = event.flow_controlled_length or 0
            data = event.data or b""
            resp = exchange.resp if exchange is not None else None
            if resp is None or resp._done:
                self._ack(sid, size)
                return
            if size > len(data):
                self._ack(sid, size - len(data))
            if data:
                resp._feed(data)
        elif isinstance(event, ResponseReceived):
            sid = event.stream_id or 0
            exchange = self.streams.get(sid)
            if exchange is None:
                return
            status = 0
            headers: list[tuple[str, str]] = []
            for name, value in _text(event.headers):
                if name == ":status":
                    status = int(value)
                elif name[:1] != ":":
                    headers.append((name, value))
            resp = H2Response(status, headers, self, sid)
            exchange.resp = resp
            if event.stream_ended is not None:
                # Trailers-only (gRPC's way of answering an error at once).
                resp._done = True
            if not exchange.head.done():
                exchange.head.set_result(resp)
        elif isinstance(event, TrailersReceived):
            exchange = self.streams.get(event.stream_id or 0)
            if exchange is not None and exchange.resp is not None:
                exchange.resp.trailers = _text(event.headers)
        elif isinstance(event, StreamEnded):
            sid = event.stream_id or 0
            exchange = self.streams.get(sid)
            if exchange is not None and exchange.resp is not None:
                exchange.resp._finish()
                self._forget(sid)
        elif isinstance(event, StreamReset):
            sid = event.stream_id or 0
            exchange = self.streams.get(sid)
            if exchange is not None:
                reason = ErrorCodes(event.error_code or 0).name if event.error_code else "0"
                self._fail(exchange, UpstreamReset(f"stream reset by the upstream: {reason}"))
                self._forget(sid)
        elif isinstance(event, WindowUpdated):
            self._window_opened(event.stream_id or 0)
        elif isinstance(event, RemoteSettingsChanged):
            self._window_opened(0)
            self.pool._capacity_changed()
        elif isinstance(event, ConnectionTerminated):
            self.draining = True
            last = event.last_stream_id or 0
            for sid in [s for s in self.streams if s > last]:
                # Never processed by the upstream: safe to retry (as a reset).
                self._fail(self.streams[sid], UpstreamReset("refused by the upstream's GOAWAY"))
                self._forget(sid)
            if not self.streams:
                self._flush_now()
                self.transport.close()

    def _fail(self, exchange: _Exchange, exc: UpstreamReset) -> None:
        if not exchange.head.done():
            exchange.head.set_exception(exc)
            # Read by the caller, unless it has gone; keep asyncio quiet either way.
            exchange.head.exception()
        elif exchange.resp is not None:
            exchange.resp._finish(exc)
        if exchange.pump is not None and not exchange.pump.done():
            exchange.pump.cancel()

    def _forget(self, sid: int) -> None:
        exchange = self.streams.pop(sid, None)
        self._window_waiters.pop(sid, None)
        if exchange is not None and exchange.pump is not None and not exchange.pump.done():
            exchange.pump.cancel()
        self.pool._stream_done(self)

    # -- one exchange -----------------------------------------------------------------------

    async def exchange(
        self,
        method: str,
        target: str,
        authority: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> H2Response:
        """Send a request on a new stream; its answer once the head arrived."""
        codec = self.codec
        sid = codec.get_next_available_stream_id()
        out = [(":method", method), (":scheme", "http"), (":path", target)]
        out.append((":authority", authority))
        drop = _DROP
        for name, value in headers:
            if name not in drop:
                out.append((name, value))
        # gRPC servers want it, and it is the one TE value HTTP/2 allows.
        out.append(("te", "trailers"))
        empty = body is None or body == b""
        head: asyncio.Future[H2Response] = self.loop.create_future()
        exchange = _Exchange(head)
        try:
            codec.send_headers(sid, out, end_stream=empty)
        except ProtocolError as exc:
            # The connection is closing (a GOAWAY crossed us): the request never left.
            self.draining = True
            raise UpstreamReset(f"{self.pool.authority}: {exc}") from exc
        self.streams[sid] = exchange
        self._flush()
        if not empty:
            exchange.pump = self.loop.create_task(self._pump(sid, body))  # type: ignore[arg-type]
        try:
            return await head
        except asyncio.CancelledError:
            self._cancel(sid)
            raise

    async def _pump(self, sid: int, body: bytes | AsyncIterator[bytes]) -> None:
        """Send a request body (and its trailers, if the downstream sent any) while the answer
        is awaited, with the stream's window as back-pressure."""
        try:
            if isinstance(body, bytes):
                await self._send_data(sid, body)
            else:
                async for chunk in body:
                    await self._send_data(sid, chunk)
            if self.closed or sid not in self.streams:
                return
            trailers: list[tuple[str, str]] | None = getattr(body, "trailers", None)
            if trailers:
                self.codec.send_headers(sid, trailers, end_stream=True)
            else:
                self.codec.end_stream(sid)
            self._flush()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The downstream body broke (client gone, stream reset): reset ours.
            exchange = self.streams.get(sid)
            if exchange is not None:
                self._fail(exchange, UpstreamReset(f"request body broke: {exc}"))
                self._cancel(sid)

    async def _send_data(self, sid: int, data: bytes) -> None:
        codec = self.codec
        view = memoryview(data)
        while view:
            if self.closed or sid not in self.streams:
                return
            window = min(codec.local_flow_control_window(sid), codec.max_outbound_frame_size)
            if window <= 0:
                waiter = self.loop.create_future()
                self._window_waiters[sid] = waiter
                await waiter
                continue
            codec.send_data(sid, view[:window].tobytes())
            view = view[window:]
            self._flush()
        if self._wpaused and not self.closed:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _cancel(self, sid: int) -> None:
        """The caller gave up on a stream: reset it (RST_STREAM CANCEL), as Envoy does."""
        if sid not in self.streams:
            return
        if not self.closed:
            with contextlib.suppress(StreamClosedError, ProtocolError):
                self.codec.reset_stream(sid, ErrorCodes.CANCEL)
            self._flush()
        self._forget(sid)

    def _consumed(self, sid: int, size: int) -> None:
        if not self.closed and size:
            self._ack(sid, size)
            self._flush()

    def _ack(self, sid: int, size: int) -> None:
        if size > 0 and not self.closed:
            self.codec.acknowledge_received_data(size, sid)

    def _window_opened(self, sid: int) -> None:
        if sid == 0:
            waiters = list(self._window_waiters.values())
            self._window_waiters.clear()
        else:
            one = self._window_waiters.pop(sid, None)
            waiters = [one] if one is not None else []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _flush(self) -> None:
        """Send what the codec queued, once per loop turn (see the server's)."""
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        data = self.codec.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)
            self._traffic.tx_bytes += len(data)

    def close(self) -> None:
        """GOAWAY, then close once the streams in flight have ended."""
        if self.closed:
            return
        if not self.draining:
            self.draining = True
            with contextlib.suppress(ProtocolError):
                self.codec.close_connection()
        self._flush_now()
        if not self.streams:
            self._local = True
            self.transport.close()


class H2Pool(UpstreamPool):
    """h2c connections to one endpoint, streams multiplexed (see the module doc)."""

    __slots__ = ("_connecting", "_conns", "_stream_waiters", "cx_http2_total")

    def __init__(
        self, address: str, port: int, budget: ConnectionBudget, *, tls: TlsOrigin | None = None
    ) -> None:
        super().__init__(address, port, budget, tls=tls)
        self._conns: list[H2ClientConnection] = []
        self._connecting: asyncio.Future[H2ClientConnection] | None = None
        self._stream_waiters: deque[asyncio.Future[None]] = deque()
        # Envoy's upstream_cx_http2_total (copied to the cluster's stats like cx_total).
        self.cx_http2_total = 0

    @property
    def cx_idle(self) -> int:
        return sum(1 for c in self._conns if not c.streams and not c.closed)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        *,
        connect_timeout: float,
    ) -> UpstreamResponse:
        authority = self.authority
        for name, value in headers:
            if name == "host":
                authority = value
                break
        self.rq_active += 1
        self.rq_total += 1
        try:
            conn = await self._stream_slot(connect_timeout)
            resp = await conn.exchange(method, target, authority, headers, body)
        except BaseException:
            self.rq_active -= 1
            raise
        if resp._done:
            self.rq_active -= 1
        else:
            resp._open = True
        return resp

    async def upgrade(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        connect_timeout: float,
    ) -> UpstreamResponse:
        raise UpstreamReset(f"{self.authority}: no upgrade over HTTP/2")

    async def close(self) -> None:
        self._closed = True
        for conn in list(self._conns):
            conn.close()

    # -- streams and connections ------------------------------------------------------------

    async def _stream_slot(self, connect_timeout: float) -> H2ClientConnection:
        """A connection with room for one more stream: one open, the one being opened, a new
        one within the budget, or (all full) the first to free a stream, as a pending
        request."""
        budget = self.budget
        while True:
            for conn in self._conns:
                if conn.capacity > 0:
                    return conn
            connecting = self._connecting
            if connecting is not None:
                await asyncio.shield(connecting)
                continue
            if budget.cx_active < budget.max_connections or self.cx_active == 0:
                if budget.cx_active >= budget.max_connections:
                    budget.cx_overflow += 1
                self._reserve()
                await self._open(connect_timeout)
                continue
            budget.cx_overflow += 1
            if budget.rq_pending_active >= budget.max_pending_requests:
                budget.rq_pending_overflow += 1
                raise PendingOverflow(f"{self.authority}: pending request queue full")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._stream_waiters.append(waiter)
            budget.rq_pending_active += 1
            budget.rq_pending_total += 1
            try:
                await waiter
            finally:
                budget.rq_pending_active -= 1
                with contextlib.suppress(ValueError):
                    self._stream_waiters.remove(waiter)

    async def _open(self, connect_timeout: float) -> None:
        """Open a connection for a budget slot already reserved; requests meanwhile wait."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[H2ClientConnection] = loop.create_future()
        self._connecting = fut
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await open_connection(
                    loop, lambda: H2ClientConnection(self, loop), self.address, self.port, self.tls
                )
        except (OSError, TimeoutError) as exc:
            self._unreserve()
            self.cx_connect_fail += 1
            if isinstance(exc, TimeoutError):
                self.budget.traffic.connect_timeout += 1
            reason = "connect timeout" if isinstance(exc, TimeoutError) else str(exc)
            failure = ConnectFailure(f"{self.authority}: {reason}")
            fut.set_exception(failure)
            fut.exception()
            raise failure from exc
        except BaseException as exc:
            self._unreserve()
            fut.set_exception(ConnectFailure(f"{self.authority}: {exc!r}"))
            fut.exception()
            raise
        finally:
            self._connecting = None
        self.cx_total += 1
        self.cx_http2_total += 1
        self._conns.append(conn)
        fut.set_result(conn)

    def _stream_done(self, conn: H2ClientConnection) -> None:
        if conn.draining and not conn.streams and not conn.closed:
            conn._flush_now()
            conn._local = True
            conn.transport.close()
        elif self._closed and not conn.streams:
            conn.close()
        self._wake_one()

    def _capacity_changed(self) -> None:
        self._wake_one()

    def _wake_one(self) -> None:
        waiters = self._stream_waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def buffered(self) -> tuple[int, int]:
        rx = tx = 0
        for conn in self._conns:
            rx += sum(ex.resp.pending_bytes for ex in conn.streams.values() if ex.resp)
            if not conn.closed:
                tx += conn.transport.get_write_buffer_size()
        return rx, tx

    def _lost_h2(self, conn: H2ClientConnection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
            self._unreserve()
        self._wake_one()
