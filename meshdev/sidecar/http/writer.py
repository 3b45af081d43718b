"""Writes one response on the request's connection: framing, head batching, back-pressure
(see the http1 module doc)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from meshdev.sidecar.http.wire import JOIN_MAX, LAST_CHUNK, STATUS_LINES, status_line

if TYPE_CHECKING:
    from meshdev.sidecar.http.lifecycle import ConnLifecycle
    from meshdev.sidecar.http.request import Request

# The engine logs under its public module's name, as before it was split into modules.
log = logging.getLogger("meshdev.sidecar.http")


class ResponseWriter:
    """Writes one response on the request's connection (see the http1 module doc)."""

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

    def __init__(self, conn: ConnLifecycle, req: Request) -> None:
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
                if len(chunk) <= JOIN_MAX:
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
            elif len(chunk) <= JOIN_MAX:
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
            conn._transport.write(LAST_CHUNK if head is None else head + LAST_CHUNK)
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


async def send_plain(writer: ResponseWriter, status: int, text: bytes) -> None:
    """Answer with a short text body and close: the server's own error answers."""
    writer._close = True
    await writer.start(status, [("content-type", "text/plain"), ("content-length", str(len(text)))])
    await writer.write(text)
    await writer.end()
