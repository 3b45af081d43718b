"""One keep-alive HTTP/1.1 client connection: write a ready request, parse the response.

A plain `asyncio.Protocol` with httptools' (llhttp) response parser, driven by callbacks rather
than a coroutine per request: the engine hands a request over, the parser reports the complete
response, and the engine hands over the next one from inside that callback. No future, task
or timer is made per request, which is what lets one core send thousands per second.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol, cast

import httptools

# (intended send time on time.monotonic's clock, index of the path in the plan)
Job = tuple[float, int]

INF = math.inf


class Sink(Protocol):
    """Who hears how each request ended (the engine)."""

    def on_response(
        self, conn: Connection, job: Job, status: int, flags: set[str] | None, keep_alive: bool
    ) -> None: ...

    def on_failure(self, conn: Connection, job: Job, kind: str, stale: bool) -> None: ...

    def on_closed(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    __slots__ = (
        "_flags",
        "_framed",
        "_head_only",
        "_headers_done",
        "_parser",
        "_received",
        "_sink",
        "_transport",
        "deadline",
        "job",
        "sent_at",
        "used",
    )

    def __init__(self, sink: Sink, head_only: bool) -> None:
        self._sink = sink
        self._head_only = head_only
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._flags: set[str] | None = None
        self._framed = False
        self._headers_done = False
        self._received = False
        self.job: Job | None = None
        self.sent_at = 0.0
        self.deadline = INF
        self.used = 0  # responses completed on this connection

    # -- driven by the engine

    def send(self, job: Job, data: bytes, now: float, timeout: float) -> None:
        assert self._transport is not None
        self.job = job
        self.sent_at = now
        self.deadline = now + timeout
        self._flags = None
        self._framed = self._headers_done = self._received = False
        self._transport.write(data)

    def expire(self) -> None:
        """The response did not come within the timeout: fail the request, drop the socket."""
        self._fail("timeout")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.job is None:
            # Bytes nobody asked for: the stream is out of step, so it cannot be reused.
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("protocol")

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        job = self.job
        if job is None:
            self._sink.on_closed(self)
        elif self._headers_done and not self._framed and exc is None:
            # A body delimited by the end of the connection (no Content-Length, not chunked).
            self._complete(keep_alive=False)
        else:
            self.job = None
            kind = "reset" if isinstance(exc, ConnectionError) else "closed"
            # Sent on a reused connection that the server had already closed: it never saw it.
            stale = self.used > 0 and not self._received
            self._sink.on_failure(self, job, kind, stale)

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n.startswith(b"x-envoy-"):
            if n == b"x-envoy-response-flags":
                for raw in value.decode("latin-1").split(","):
                    flag = raw.strip()
                    if flag and flag != "-":
                        self._add_flag(flag)
            elif n == b"x-envoy-overloaded":
                if value.strip().lower() == b"true":
                    self._add_flag("UO")
            elif n == b"x-envoy-ratelimited":
                self._add_flag("RL")
        elif n in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._head_only:
            # llhttp cannot be told the request was HEAD, so it would wait for a body.
            self._complete(self._parser.should_keep_alive())
            self._parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        if self._head_only:
            return
        if 100 <= self._parser.get_status_code() < 200:
            # An interim answer (103 Early Hints, 100 Continue): the real one follows.
            self._flags = None
            self._framed = self._headers_done = False
            return
        self._complete(self._parser.should_keep_alive())

    # --

    def _add_flag(self, flag: str) -> None:
        if self._flags is None:
            self._flags = {flag}
        else:
            self._flags.add(flag)

    def _complete(self, keep_alive: bool) -> None:
        job = self.job
        if job is None:
            return
        self.job = None
        self.deadline = INF
        self.used += 1
        self._sink.on_response(self, job, self._parser.get_status_code(), self._flags, keep_alive)

    def _fail(self, kind: str) -> None:
        job = self.job
        self.job = None
        self.deadline = INF
        if self._transport is not None:
            self._transport.abort()
        if job is not None:
            self._sink.on_failure(self, job, kind, False)
