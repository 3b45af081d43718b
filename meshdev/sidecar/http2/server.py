"""One downstream HTTP/2 connection (h2c with prior knowledge): frames in and out through the
sans-IO ``h2`` codec, one task per stream running the same handler as HTTP/1.1 requests, flow
control both ways, the server's timers and drain, and Envoy's defences (see the package doc).

The HTTP/1.1 connection hands a new connection over when its first bytes are the HTTP/2
preface (``sidecar.http.connection``); from then on this object is the transport's protocol
and sits in the server's set of connections like any."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Final

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import DenialOfServiceError, FlowControlError, ProtocolError, StreamClosedError

from meshdev.sidecar.http.body import EMPTY_BODY, BodyError, BodyStream
from meshdev.sidecar.http.connection import LINGER, ServerSide
from meshdev.sidecar.http.request import Request
from meshdev.sidecar.http.writer import send_plain
from meshdev.sidecar.http2.codec import (
    MAX_OUTBOUND_CONTROL_FRAMES,
    PREMATURE_RESET_LIFETIME,
    PREMATURE_RESET_TOTAL,
    Codec,
    StreamRefused,
    server_codec,
)
from meshdev.sidecar.http2.stream import H2Body, H2StreamWriter

if TYPE_CHECKING:
    from meshdev.common.sidecar_config import Limits
    from meshdev.sidecar.http.tally import ConnTally
    from meshdev.sidecar.stats.http2 import Http2StatSet

log = logging.getLogger("meshdev.sidecar.http2")

_PSEUDO: Final = 58  # ord(":")


class H2Request(Request):
    """A request on an HTTP/2 stream: ``grpc`` is its own (see ``Request.grpc``)."""

    __slots__ = ("grpc",)


class _Stream:
    """One request stream: its request, answer, task, and when it opened."""

    __slots__ = ("body", "opened", "req", "task", "writer")

    def __init__(self, req: Request, writer: H2StreamWriter, body: BodyStream, opened: float):
        self.req = req
        self.writer = writer
        self.body = body
        self.opened = opened
        self.task: asyncio.Task[None] | None = None


class H2ServerConnection(asyncio.Protocol):
    """One HTTP/2 client connection (see the module doc)."""

    def __init__(
        self,
        server: ServerSide,
        transport: asyncio.Transport,
        client: tuple[str, int],
        stats: Http2StatSet,
        cx: ConnTally,
    ) -> None:
        self._server = server
        self._handler = server._handler
        self._loop = server._loop
        self._transport = transport
        self._client = client
        self._stats = stats
        # The listener's connection stats, counted open by the HTTP/1.1 side that handed the
        # connection over; its bytes both ways, and whether we closed it.
        self._cx = cx
        self._rx = cx.rx_bytes
        self._tx = cx.tx_bytes
        self._local = False
        self._h2: Codec = server_codec(server._limits.max_header_bytes)
        self._streams: dict[int, _Stream] = {}
        self._closed = False
        self._rpaused = False
        self._wpaused = False
        self._active = None
        # The server's drain reads these (``Served``): no task of the connection's own.
        self._task: asyncio.Task[None] | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        # Writers waiting for a flow control window: stream id -> future.
        self._window_waiters: dict[int, asyncio.Future[None]] = {}
        self._idle_since = self._loop.time()
        self._linger_since = 0.0
        self._goaway = False
        self._streams_total = 0
        self._premature_resets = 0
        self._control_queued = 0
        self._flush_due = False

    # -- handover and transport events ------------------------------------------------------

    def start(self, data: bytes) -> None:
        """Take over the transport, the preface (and whatever followed it) in `data`."""
        self._server._conns.add(self)
        self._stats.downstream_cx_http2_total.value += 1
        self._stats.downstream_cx_http2_active.value += 1
        self._flush_now()
        self._rx.value -= len(data)  # counted as they arrived, on the HTTP/1.1 side
        self.data_received(data)

    def data_received(self, data: bytes) -> None:
        self._rx.value += len(data)
        if self._closed or self._linger_since:
            return
        h2 = self._h2
        try:
            events = h2.receive_data(data)
        except DenialOfServiceError:
            # A header list over SETTINGS_MAX_HEADER_LIST_SIZE: HPACK state is lost with it,
            # so the connection goes (GOAWAY queued by h2).
            self._stats.header_overflow.value += 1
            self._cx.protocol_error.value += 1
            self._fail()
            return
        except (ProtocolError, FlowControlError):
            self._stats.rx_messaging_error.value += 1
            self._cx.protocol_error.value += 1
            self._fail()
            return
        for event in events:
            self._event(event)
            if self._linger_since or self._closed:
                return
        if self._control_queued > MAX_OUTBOUND_CONTROL_FRAMES:
            self._control_flood()
            return
        self._flush_now()
        if self._transport.get_write_buffer_size() == 0:
            # What was queued reached the socket: none of it is outstanding any more.
            self._control_queued = 0

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._stats.downstream_cx_http2_active.value -= 1
        self._server._conn_lost(self)
        busy = sum(1 for stream in self._streams.values() if not stream.writer.ended)
        cx = self._cx
        if not self._local:
            # Each stream in flight is reset by the client's leaving.
            cx.rq_rx_reset.value += busy
        cx.closed(local=self._local, active_rq=busy > 0, http1=False)
        gone = BodyError("client connection closed")
        for stream in self._streams.values():
            stream.body._finish(gone)
            task = stream.task
            if task is not None and not stream.writer.ended:
                task.cancel()
        self._streams.clear()
        for fut in (*self._window_waiters.values(), *self._drain_waiters):
            if not fut.done():
                fut.set_result(None)
        self._window_waiters.clear()
        self._drain_waiters.clear()

    # -- events ------------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            sid = event.stream_id
            stream = self._streams.get(sid)
            size = event.flow_controlled_length or 0
            data = event.data or b""
            if stream is None or stream.body._done:
                # Nobody will read it: give the window back at once.
                self._ack(sid, size)
                return
            if size > len(data):
                self._ack(sid, size - len(data))  # padding
            if data:
                stream.body._feed(data)
        elif isinstance(event, RequestReceived):
            self._request(event)
        elif isinstance(event, StreamEnded):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None:
                stream.body._finish()
                self._maybe_forget(event.stream_id or 0, stream)
        elif isinstance(event, TrailersReceived):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None and isinstance(stream.body, H2Body):
                stream.body.trailers = _decode(event.headers or [])
        elif isinstance(event, WindowUpdated):
            self._window_opened(event.stream_id or 0)
        elif isinstance(event, StreamReset):
            self._stream_reset(event)
        elif isinstance(event, StreamRefused):
            self._stats.too_many_streams.value += 1
            self._control_queued += 1
        elif isinstance(event, PingReceived | RemoteSettingsChanged):
            # h2 queues the ACK: an outbound control frame until the socket takes it.
            self._control_queued += 1
            if isinstance(event, RemoteSettingsChanged):
                self._window_opened(0)
        elif isinstance(event, ConnectionTerminated):
            self._goaway = True
            if not self._streams:
                self._close()

    def _request(self, event: RequestReceived) -> None:
        sid = event.stream_id or 0
        if self._goaway:
            self._h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        method = target = authority = ""
        headers: list[tuple[str, str]] = []
        host: str | None = None
        length: int | None = None
        grpc = False
        for raw_name, raw_value in event.headers or []:
            name = raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
            if raw_name[0] == _PSEUDO or name[:1] == ":":
                if name == ":method":
                    method = value
                elif name == ":path":
                    target = value
                elif name == ":authority":
                    authority = value
                continue
            if name == "host":
                host = value
            elif name == "content-length" and value.isdigit():
                length = int(value)
            elif name == "content-type" and value.startswith("application/grpc"):
                grpc = True
            headers.append((name, value))
        # :authority for routing as Host (RFC 9113 section 8.3.1: it wins over a host header).
        authority = authority or host or ""
        path, _, query = target.partition("?")
        now = self._loop.time()
        ended = event.stream_ended is not None
        body: BodyStream = EMPTY_BODY if ended else H2Body(length, self, sid)
        req = H2Request(
            method, target, path, query, authority, headers, True, body, self._client, now, "2"
        )
        req.grpc = grpc
        writer = H2StreamWriter(self, req, sid)
        stream = _Stream(req, writer, body, now)
        self._streams[sid] = stream
        self._streams_total += 1
        stream.task = self._loop.create_task(self._run(sid, stream))

    async def _run(self, sid: int, stream: _Stream) -> None:
        """The handler on one stream, with HTTP/1.1's worker guarantees (a handler that
        raises gets a 500 or a reset; one that returns without an answer gets a 500)."""
        req, writer = stream.req, stream.writer
        try:
            await self._handler(req, writer)
        except asyncio.CancelledError:
            if not writer.ended:
                writer.abort()
            return
        except Exception:
            log.exception("handler failed on %s %s", req.method, req.target)
            if not writer.started:
                await send_plain(writer, 500, b"Internal Server Error")
            elif not writer.ended:
                writer.abort()
            return
        if not writer.ended:
            if writer.started:
                await writer.end()
            else:
                log.error("handler returned without a response to %s %s", req.method, req.target)
                await send_plain(writer, 500, b"Internal Server Error")

    def _stream_reset(self, event: StreamReset) -> None:
        sid = event.stream_id or 0
        self._stats.rx_reset.value += 1
        stream = self._streams.pop(sid, None)
        if stream is None:
            return
        if not stream.writer.ended:
            self._cx.rq_rx_reset.value += 1
        stream.body._finish(BodyError("stream reset by the client"))
        self._drop_body(stream)
        waiter = self._window_waiters.pop(sid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not stream.writer.ended:
            # As a client leaving: the handler is cancelled (Envoy resets the upstream).
            stream.writer.ended = True
            if stream.task is not None:
                stream.task.cancel()
            if self._loop.time() - stream.opened < PREMATURE_RESET_LIFETIME:
                self._premature_resets += 1
                self._check_premature()
        self._idle_check()

    def _check_premature(self) -> None:
        """CVE-2023-44487 (rapid reset), as Envoy: once PREMATURE_RESET_TOTAL streams were
        opened, more than half of them reset prematurely closes the connection; before that,
        half of PREMATURE_RESET_TOTAL premature resets already do."""
        premature = self._premature_resets
        total = self._streams_total
        if (total >= PREMATURE_RESET_TOTAL and premature * 2 > total) or (
            premature * 2 >= PREMATURE_RESET_TOTAL
        ):
            self._stats.downstream_rq_too_many_premature_resets.value += 1
            self._goaway_close(ErrorCodes.ENHANCE_YOUR_CALM)

    # -- what streams ask of the connection (stream.StreamOwner) -----------------------------

    def _consumed(self, stream_id: int, size: int) -> None:
        """The pipeline read `size` bytes of a stream's body: open the windows again."""
        if not self._closed and size:
            self._ack(stream_id, size)
            self._flush()

    def _ack(self, stream_id: int, size: int) -> None:
        if size <= 0:
            return
        # h2 opens the connection's window even when the stream has gone meanwhile.
        self._h2.acknowledge_received_data(size, stream_id)

    def _send_headers(self, stream_id: int, headers: list[tuple[str, str]], end: bool) -> None:
        if self._closed or stream_id not in self._streams:
            return
        self._h2.send_headers(stream_id, headers, end_stream=end)
        self._flush()

    async def _send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        h2 = self._h2
        view = memoryview(data)
        while True:
            if self._closed or stream_id not in self._streams:
                return
            window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            if window <= 0:
                await self._wait_window(stream_id)
                continue
            piece = view[:window]
            view = view[window:]
            last = not view
            h2.send_data(stream_id, piece.tobytes(), end_stream=end_stream and last)
            self._flush()
            if last:
                break
        if self._wpaused:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _end_stream(self, stream_id: int) -> None:
        if self._closed or stream_id not in self._streams:
            return
        self._h2.end_stream(stream_id)
        self._flush()

    def _reset(self, stream_id: int) -> None:
        if self._closed or stream_id not in self._streams:
            return
        self._stats.tx_reset.value += 1
        self._cx.rq_tx_reset.value += 1
        self._h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
        self._flush()

    def _response_ended(self, writer: H2StreamWriter) -> None:
        sid = writer._sid
        stream = self._streams.get(sid)
        if stream is None or stream.writer is not writer:
            return
        if not stream.body._done and not self._closed:
            # The answer ended before the request's body: the rest is not wanted (RFC 9113
            # section 8.1: RST_STREAM NO_ERROR after a complete response).
            with contextlib.suppress(StreamClosedError):
                self._h2.reset_stream(sid, ErrorCodes.NO_ERROR)
            stream.body._finish(BodyError("request body abandoned"))
            self._drop_body(stream)
            self._flush()
        self._maybe_forget(sid, stream)

    def _drop_body(self, stream: _Stream) -> None:
        """A body nobody will read: what waits of it is acknowledged and let go, or the
        connection's window would stay that much smaller for good."""
        body = stream.body
        if body._size and isinstance(body, H2Body):
            self._ack(body._sid, body._size)
            body._chunks.clear()
            body._size = 0

    def _maybe_forget(self, sid: int, stream: _Stream) -> None:
        if stream.writer.ended and stream.body._done:
            self._streams.pop(sid, None)
            self._window_waiters.pop(sid, None)
            self._idle_check()

    def _idle_check(self) -> None:
        if not self._streams:
            self._idle_since = self._loop.time()
            if self._goaway or self._server._draining:
                self._close()

    # BodyStream's owner protocol: HTTP/2 never pauses the socket for one stream's body.
    def _maybe_resume(self) -> None:
        return

    def _pause_reading(self) -> None:
        return

    # -- flow control: the peer's windows, and the socket ------------------------------------

    async def _wait_window(self, stream_id: int) -> None:
        waiter = self._loop.create_future()
        self._window_waiters[stream_id] = waiter
        try:
            await waiter
        finally:
            if self._window_waiters.get(stream_id) is waiter:
                del self._window_waiters[stream_id]

    def _window_opened(self, stream_id: int) -> None:
        if stream_id == 0:
            waiters = list(self._window_waiters.values())
            self._window_waiters.clear()
        else:
            one = self._window_waiters.pop(stream_id, None)
            waiters = [one] if one is not None else []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pause_writing(self) -> None:
        self._wpaused = True

    def resume_writing(self) -> None:
        self._wpaused = False
        waiters = self._drain_waiters
        self._drain_waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _flush(self) -> None:
        """Send what the codec queued, once per loop turn: a stream's head, body and trailers
        (and every other stream's frames meanwhile) leave in one write, not one each."""
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        data = self._h2.data_to_send()
        # Once closing (our FIN sent), nothing more may be written.
        if data and not self._closed and not self._linger_since:
            self._transport.write(data)
            self._tx.value += len(data)

    # -- timers and closing (the server's ``Served`` protocol) -------------------------------

    def _check_timers(self, now: float, limits: Limits) -> None:
        if self._closed:
            return
        if self._linger_since:
            if now - self._linger_since > LINGER:
                self._local = True
                self._transport.abort()
            return
        if not self._streams and now - self._idle_since > limits.idle_timeout:
            self._cx.idle_timeout.value += 1
            self._goaway_close(ErrorCodes.NO_ERROR)

    def _close_idle(self) -> None:
        """The server drains: GOAWAY now; close once the streams in flight have ended."""
        if self._closed or self._linger_since:
            return
        self._goaway = True
        self._h2.close_connection(ErrorCodes.NO_ERROR)
        self._flush_now()
        if not self._streams:
            self._cx.drain_close.value += 1
            self._close()

    def _abort(self) -> None:
        if not self._closed:
            self._local = True
            self._transport.abort()

    def _buffered(self) -> tuple[int, int]:
        rx = sum(s.body._size for s in self._streams.values())
        tx = 0 if self._closed else self._transport.get_write_buffer_size()
        return rx, tx

    def _control_flood(self) -> None:
        """More control frames (PING and SETTINGS ACKs, refusals) queued than the peer
        reads: Envoy's outbound control flood. The queued ACKs are dropped for a GOAWAY."""
        self._stats.outbound_control_flood.value += 1
        self._h2.data_to_send()
        self._goaway_close(ErrorCodes.ENHANCE_YOUR_CALM)

    def _goaway_close(self, code: ErrorCodes) -> None:
        if self._closed or self._linger_since:
            return
        self._stats.goaway_sent.value += 1
        with contextlib.suppress(ProtocolError):
            self._h2.close_connection(code)
        self._flush_now()
        self._close()

    def _fail(self) -> None:
        """A connection error: h2 has queued its GOAWAY; send it and close."""
        self._stats.goaway_sent.value += 1
        self._flush_now()
        self._close()

    def _close(self) -> None:
        """Close after what was written, reading and discarding meanwhile (so the peer reads
        our GOAWAY rather than a reset); the sweep aborts it after LINGER."""
        if self._closed or self._linger_since:
            return
        # What streams queued this turn (the last answer's trailers, a GOAWAY) goes first.
        self._flush_now()
        self._local = True
        self._linger_since = self._loop.time()
        for stream in list(self._streams.values()):
            if stream.task is not None and not stream.writer.ended:
                stream.writer.ended = True
                stream.task.cancel()
        transport = self._transport
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:
            # The peer has gone already (its close not yet delivered to us).
            transport.abort()


def _decode(headers: list[tuple[bytes, bytes]] | list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in headers:
        n = name.decode("latin-1") if isinstance(name, bytes) else name
        v = value.decode("latin-1") if isinstance(value, bytes) else value
        out.append((n, v))
    return out
