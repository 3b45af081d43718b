"""Writes one response on the request's connection: framing, head batching, back-pressure
(see the package doc).

The writer sits below the connection in the import graph: it asks of the connection it writes
on only what ``WriterOwner`` describes."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from meshdev.sidecar.http.wire import JOIN_MAX, LAST_CHUNK, STATUS_LINES, status_line

if TYPE_CHECKING:
    from meshdev.sidecar.http.raw import RawEnd
    from meshdev.sidecar.http.request import Request
    from meshdev.sidecar.http.tally import ConnTally, Tally

# One logger for the whole engine, named after its public package.
log = logging.getLogger("meshdev.sidecar.http")


class _Draining(Protocol):
    """The server, as far as a response cares: a draining server closes after it."""

    @property
    def _draining(self) -> bool: ...


class WriterOwner(Protocol):
    """What a writer needs of its client connection (``connection.ClientConnection``)."""

    @property
    def _server(self) -> _Draining: ...
    @property
    def _transport(self) -> asyncio.Transport: ...
    @property
    def _closed(self) -> bool: ...
    # The connection's stats, and its bytes written (every write adds to it).
    @property
    def _cx(self) -> ConnTally: ...
    @property
    def _tx(self) -> Tally: ...
    # The client's socket buffer is full: wait in `_drain` before writing more.
    @property
    def _wpaused(self) -> bool: ...
    async def _drain(self) -> None: ...
    def _response_done(self, writer: ResponseWriter) -> None: ...
    def _abort(self) -> None: ...
    # Send a 101's head and hand over the raw byte stream (see `switch_protocols`).
    def _switch(self, head: bytes) -> RawEnd: ...


class ResponseWriter:
    """Writes one response on the request's connection (see the package doc).

    ``started`` turns true with ``start``, ``ended`` with ``end`` or ``abort``. Only ``write``
    ever waits (for the client's socket buffer); the other methods are coroutines for a
    uniform interface but never suspend, so a cancellation cannot cut them in half.
    """

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

    def __init__(self, conn: WriterOwner, req: Request) -> None:
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
        """Set the status and headers; nothing is sent yet (see ``write`` and ``flush``).

        The framing is the writer's: a ``content-length`` is kept, any ``transfer-encoding``
        or ``connection`` dropped (see the package doc). Raises ``RuntimeError`` when already
        started, ``ValueError`` for a ``content-length`` that is not an integer, and
        ``UnicodeEncodeError`` for a name or value that is not latin-1."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        conn = self._conn
        req = self._req
        parts = [STATUS_LINES.get(status) or status_line(status)]
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
        """Send a chunk of the body (with the head, if not sent yet).

        Does nothing once the response ended, the connection closed, or for an empty chunk; a
        response without a body (HEAD, 1xx, 204, 304) sends only its head. Bytes beyond the
        ``content-length`` are dropped and the connection closes after the response. Then waits
        while the client's socket buffer is full, until it drains or the connection closes.
        Cancelled in that wait, the chunk has already gone to the transport and the response
        stays unfinished. Raises ``RuntimeError`` before ``start``."""
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
                conn._tx.value += len(head)
            return
        sent = 0 if head is None else len(head)
        if self._chunked:
            size = b"%x\r\n" % len(chunk)
            if head is not None:
                if len(chunk) <= JOIN_MAX:
                    transport.write(b"".join((head, size, chunk, b"\r\n")))
                else:
                    transport.writelines((head, size, chunk, b"\r\n"))
            else:
                transport.writelines((size, chunk, b"\r\n"))
            sent += len(size) + len(chunk) + 2
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
            elif len(chunk) <= JOIN_MAX:
                transport.write(head + chunk)
            else:
                transport.writelines((head, chunk))
            sent += len(chunk)
        conn._tx.value += sent
        if conn._wpaused:
            await conn._drain()

    async def flush(self) -> None:
        """Send the head now instead of with the first body chunk (e.g. before a slow body);
        does nothing once it went out or the connection closed."""
        head = self._head
        if head is not None and not self._conn._closed:
            self._head = None
            self._conn._transport.write(head)
            self._conn._tx.value += len(head)

    async def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """Finish the response: send what is left of the head and framing; idempotent.

        `trailers` (an HTTP/2 or gRPC upstream's) go out in the last chunk of a chunked
        response; a response framed by its content-length (or by the close) has no place for
        them, so they are dropped, as Envoy does for an HTTP/1.1 client. A response short of
        its ``content-length`` is logged and the connection reset (its
        framing is broken). Afterwards the connection goes on with the next request, or closes
        (see ``start``). Raises ``RuntimeError`` before ``start``."""
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
            last = LAST_CHUNK if not trailers else _last_chunk(trailers)
            out = last if head is None else head + last
            conn._transport.write(out)
            conn._tx.value += len(out)
        elif head is not None:
            conn._transport.write(head)
            conn._tx.value += len(head)
        if self._remaining:
            # Fewer bytes than the Content-Length promised: the framing is broken.
            log.warning("response ended %d bytes short of its content-length", self._remaining)
            conn._cx.rq_tx_reset.value += 1
            conn._abort()
        conn._response_done(self)

    def abort(self) -> None:
        """Reset the connection (e.g. the upstream died mid-body) and end the response;
        idempotent. The handler that calls it is not cancelled."""
        if self.ended:
            return
        # ended first: connection_lost then leaves the handler that asked for this running.
        self.ended = True
        conn = self._conn
        if not conn._closed:
            # A reset we send (the client's leaving is its own reset, counted as it closes).
            conn._cx.rq_tx_reset.value += 1
        conn._abort()
        self._conn._response_done(self)

    async def switch_protocols(self, headers: list[tuple[str, str]]) -> RawEnd:
        """Answer ``101 Switching Protocols`` to an upgrade request (``Request.upgrade``) and
        hand over the connection's raw byte stream, as a ``RawEnd`` whose reading is paused
        until it is spliced (see ``raw``).

        `headers` go out as given, with ``connection: upgrade`` (any ``connection``,
        ``transfer-encoding`` or ``content-length`` passed is dropped; the caller gives the
        ``upgrade`` header). The response is then ended: the connection leaves HTTP for good,
        and closes when the stream ends. Never waits. Raises ``RuntimeError`` when started or
        for a request that is no upgrade, ``ConnectionResetError`` when the client has gone."""
        if self.started:
            raise RuntimeError("response already started")
        if self._req.upgrade is None:
            raise RuntimeError("switch_protocols() on a request that is no upgrade")
        conn = self._conn
        if conn._closed:
            raise ConnectionResetError("client connection closed")
        parts = [STATUS_LINES[101]]
        for name, value in headers:
            if name in {"transfer-encoding", "connection", "content-length"}:
                continue
            parts += (name, ": ", value, "\r\n")
        parts.append("connection: upgrade\r\n\r\n")
        head = "".join(parts).encode("latin-1")
        self.started = True
        self.ended = True
        return conn._switch(head)


def _last_chunk(trailers: list[tuple[str, str]]) -> bytes:
    """The chunked body's last chunk carrying `trailers` (RFC 9112 section 7.1.2)."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in trailers)
    return f"0\r\n{lines}\r\n".encode("latin-1")


async def send_plain(writer: ResponseWriter, status: int, text: bytes) -> None:
    """Answer with a short text body and close: the server's own error answers."""
    writer._close = True
    await writer.start(status, [("content-type", "text/plain"), ("content-length", str(len(text)))])
    await writer.write(text)
    await writer.end()
