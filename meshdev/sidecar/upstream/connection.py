"""One keep-alive connection to an upstream endpoint: sends an encoded request (streaming
its body with back-pressure), parses the response into an UpstreamResponse, and goes back to
its pool or closes (see the package doc).

The connection sits below the pool in the import graph: it asks of its pool only what
``PoolSide`` describes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from meshdev.sidecar.http.raw import RawEnd
from meshdev.sidecar.http.wire import JOIN_MAX, LAST_CHUNK, header_name
from meshdev.sidecar.upstream.errors import UpstreamReset
from meshdev.sidecar.upstream.response import UpgradedResponse, UpstreamResponse

if TYPE_CHECKING:
    from meshdev.sidecar.upstream.budget import ConnectionBudget


class PoolSide(Protocol):
    """What a connection needs of its pool (``pool.UpstreamPool``)."""

    # The pool's requests in flight: a response that ends counts itself off.
    rq_active: int

    # The cluster's budget, whose `traffic` a connection counts its bytes and close in.
    @property
    def budget(self) -> ConnectionBudget: ...

    def _release(self, conn: _UpstreamConn) -> None: ...
    def _lost(self, conn: _UpstreamConn) -> None: ...


class _UpstreamConn(asyncio.Protocol):
    """One keep-alive connection to an upstream; one exchange at a time."""

    __slots__ = (
        "_drain",
        "_head_only",
        "_headers",
        "_local",
        "_pump",
        "_sent_all",
        "_skip",
        "_traffic",
        "_tunnel",
        "_upgrade",
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

    def __init__(self, pool: PoolSide, loop: asyncio.AbstractEventLoop) -> None:
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
        # Its exchange is an upgrade request (UpstreamPool.upgrade): a 101 switches it to a
        # raw stream, any other answer closes it after; it never goes back to the pool.
        self._upgrade = False
        self._traffic = pool.budget.traffic
        # After a 101: the raw stream it became (its bytes are counted as it closes).
        self._tunnel: RawEnd | None = None

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
            self._traffic.tx_bytes += len(head)
            self._pump = self.loop.create_task(self._send_body(stream, chunked))
        else:
            self._sent_all = True
            self._traffic.tx_bytes += len(head) + (len(payload) if payload else 0)
            if not payload:
                transport.write(head)
            elif len(payload) <= JOIN_MAX:
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
                    size = b"%x\r\n" % len(chunk)
                    transport.writelines((size, chunk, b"\r\n"))
                    self._traffic.tx_bytes += len(size) + len(chunk) + 2
                else:
                    transport.write(chunk)
                    self._traffic.tx_bytes += len(chunk)
                if self.wpaused:
                    await self._wait_drain()
                    if self.closed:
                        return
            if chunked and not self.closed:
                transport.write(LAST_CHUNK)
                self._traffic.tx_bytes += len(LAST_CHUNK)
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
        if reusable and self._sent_all and not self.closed and not self._upgrade:
            self.pool._release(self)
        else:
            self._discard(graceful=True)

    def _discard(self, graceful: bool = False, *, remote: bool = False) -> None:
        """Close the connection and give its budget back; idempotent. `remote`: the upstream
        closed it (else we do)."""
        if self.closed:
            return
        self.closed = True
        self._traffic.closed(
            local=not remote, active_rq=self._waiter is not None or self.resp is not None
        )
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
        self._traffic.rx_bytes += len(data)
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
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops after a 101's head; what follows it in this read starts there.
            self._switched(data[exc.args[0] :])

    def _switched(self, rest: bytes) -> None:
        """The upstream answered 101: the connection leaves HTTP. Its transport is handed to
        a ``RawEnd`` (reading paused until it is spliced), which the response carries."""
        resp = self.resp
        self.resp = None
        if not isinstance(resp, UpgradedResponse):
            # A 101 to a request that asked for no upgrade: nothing can be made of the rest.
            waiter = self._waiter
            self._discard()
            if waiter is not None and not waiter.done():
                waiter.set_exception(UpstreamReset("upstream switched protocols unasked"))
            return
        transport = self.transport
        self.rpaused = True
        transport.pause_reading()
        end = RawEnd(transport, rest, self._tunnel_lost)
        transport.set_protocol(end)
        resp.tunnel = end
        self._tunnel = end
        # The raw stream counts what it reads from here on, these early bytes included.
        self._traffic.rx_bytes -= len(rest)
        # No body: the response is complete, and its request no longer in flight.
        resp._finish(None)

    def _tunnel_lost(self, exc: Exception | None) -> None:
        """The switched connection closed: its budget goes back as for any connection, and
        what crossed it is counted (read from the upstream; written to it, what the client's
        end read). Who closed it first is not known here: it counts as the upstream's close."""
        end = self._tunnel
        if end is not None:
            traffic = self._traffic
            traffic.rx_bytes += end.received
            peer = end._peer
            if peer is not None:
                traffic.tx_bytes += peer.received
        if not self.closed:
            self.closed = True
            self._traffic.closed(local=False, active_rq=False)
            self.pool._lost(self)

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
            self._discard(remote=True)
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
        if status < 200:
            if status != 101 or not self._upgrade:
                # 100 Continue and friends: the real response follows. (A 101 nobody asked
                # for makes llhttp stop after it: data_received resets the connection.)
                self._skip = True
                return
            # The switch happens as llhttp stops after this head (data_received); skipping
            # its message end keeps `_done` from ending the exchange as an HTTP one.
            self._skip = True
            resp: UpstreamResponse = UpgradedResponse(status, self._headers, self)
        else:
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
