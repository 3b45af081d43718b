"""One HTTP/2 stream as the request pipeline sees it: a request body acknowledged to the peer
as it is read, and a response writer with HTTP/1.1's interface (``sidecar.http``'s
``BodyStream`` and ``ResponseWriter``, subclassed so the pipeline cannot tell them apart).

Both sit below the connection in the import graph and ask of it only what ``StreamOwner``
describes."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, Protocol

from meshdev.sidecar.http.body import BodyOwner, BodyStream
from meshdev.sidecar.http.writer import ResponseWriter

if TYPE_CHECKING:
    from meshdev.sidecar.http.raw import RawEnd
    from meshdev.sidecar.http.request import Request

# Connection-specific headers have no place in HTTP/2 (RFC 9113 section 8.2.2).
_DROP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)


class StreamOwner(BodyOwner, Protocol):
    """What a stream needs of its connection (``server.H2ServerConnection``): a body's owner
    (``http.body.BodyOwner``; only ``_loop`` is read for HTTP/2), plus HTTP/2's own."""

    # HTTP/2's own.
    def _consumed(self, stream_id: int, size: int) -> None: ...
    def _send_headers(
        self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool
    ) -> None: ...
    async def _send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None: ...
    def _end_stream(self, stream_id: int) -> None: ...
    def _reset(self, stream_id: int) -> None: ...
    def _response_ended(self, writer: H2StreamWriter) -> None: ...


class H2Body(BodyStream):
    """A request body arriving on one stream. Its buffer is bounded by the stream's flow
    control window, not by pausing the socket (which would stall every stream): each chunk
    read is acknowledged to the peer (WINDOW_UPDATE), so the peer sends more only as the
    pipeline consumes. ``trailers`` are the request's, if it sent any (else None)."""

    __slots__ = ("_owner", "_sid", "trailers")

    def __init__(self, length: int | None, owner: StreamOwner, stream_id: int) -> None:
        self.length = length
        self._conn = owner
        self._owner = owner
        self._sid = stream_id
        self._chunks = deque()
        self._size = 0
        self._done = False
        self._exc = None
        self._waiter = None
        self._continue = False
        self.trailers: list[tuple[str, str]] | None = None

    def _pop(self) -> bytes:
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self._owner._consumed(self._sid, len(chunk))
        return chunk

    def _pause(self) -> None:
        # The peer's window bounds what waits: nothing to pause.
        return


class H2StreamWriter(ResponseWriter):
    """The response on one stream, with ``ResponseWriter``'s interface and guarantees
    (``write`` waits for the stream's and the connection's flow control windows and for the
    socket; ``end(trailers)`` sends trailers as a closing HEADERS frame; ``abort`` resets
    the stream, not the connection)."""

    __slots__ = ("_h2", "_pending", "_sid", "grpc_status")

    def __init__(self, owner: StreamOwner, req: Request, stream_id: int) -> None:
        # ResponseWriter's fields that the pipeline reads; the rest are HTTP/1.1 framing.
        self._req = req
        self.started = False
        self.ended = False
        self._close = False
        self._head_only = False
        self._h2 = owner
        self._sid = stream_id
        # The response head, until sent (with the first data, or at end).
        self._pending: list[tuple[str, str]] | None = None
        # The grpc-status this answer carried (head or trailers), for the proxy's stats.
        self.grpc_status: str | None = None

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Set the status and headers (sent with the first data, at ``flush`` or ``end``);
        a ``content-length`` passes, connection-specific headers are dropped."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        out = [(":status", str(status))]
        drop = _DROP
        for name, value in headers:
            if name not in drop:
                out.append((name, value))
                if name == "grpc-status":
                    self.grpc_status = value
        if self._req.method == "HEAD" or status < 200 or status in {204, 304}:
            self._head_only = True
        self._pending = out

    async def write(self, chunk: bytes) -> None:
        if not self.started:
            raise RuntimeError("write() before start()")
        owner = self._h2
        if self.ended or owner._closed or not chunk:
            return
        head = self._pending
        if head is not None:
            self._pending = None
            owner._send_headers(self._sid, head, False)
        if self._head_only:
            return
        await owner._send_data(self._sid, chunk, False)

    async def flush(self) -> None:
        head = self._pending
        if head is not None and not self._h2._closed:
            self._pending = None
            self._h2._send_headers(self._sid, head, False)

    async def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """Finish the response, with `trailers` as its last HEADERS frame if given."""
        if self.ended:
            return
        if not self.started:
            raise RuntimeError("end() before start()")
        self.ended = True
        owner = self._h2
        if not owner._closed:
            head = self._pending
            self._pending = None
            if head is not None:
                owner._send_headers(self._sid, head, not trailers)
            if trailers:
                for name, value in trailers:
                    if name == "grpc-status":
                        self.grpc_status = value
                owner._send_headers(self._sid, trailers, True)
            elif head is None:
                owner._end_stream(self._sid)
        owner._response_ended(self)

    def abort(self) -> None:
        """Reset the stream (RST_STREAM INTERNAL_ERROR); the connection goes on."""
        if self.ended:
            return
        self.ended = True
        self._h2._reset(self._sid)
        self._h2._response_ended(self)

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> RawEnd:
        # HTTP/2 has no Upgrade (RFC 9113 section 8.6): Request.upgrade is never set.
        raise RuntimeError("switch_protocols() on an HTTP/2 stream")
