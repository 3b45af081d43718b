"""Keep-alive connections to one endpoint: reuse, the wait for budget as a pending request,
connecting, release (see the package doc). The top of the client: it imports the budget, the
connection and the response, none of which imports it."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from meshdev.sidecar.tls.upstream import open_connection
from meshdev.sidecar.upstream.connection import _UpstreamConn
from meshdev.sidecar.upstream.errors import ConnectFailure, PendingOverflow, UpstreamReset
from meshdev.sidecar.upstream.request import encode_request
from meshdev.sidecar.upstream.response import UpgradedResponse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from meshdev.sidecar.tls.upstream import TlsOrigin
    from meshdev.sidecar.upstream.budget import ConnectionBudget
    from meshdev.sidecar.upstream.response import UpstreamResponse

# A pooled connection idle this long may have been closed by the upstream's keep-alive
# timeout with the close not yet seen: one loop turn before reusing it lets that land.
STALE_AFTER = 1.0


class UpstreamPool:
    """Keep-alive connections to one endpoint (see the package doc); reusable across config
    swaps. The counters are plain ints, read by the stats."""

    __slots__ = (
        "_closed",
        "_idle",
        "_live",
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
        "tls",
    )

    def __init__(
        self, address: str, port: int, budget: ConnectionBudget, *, tls: TlsOrigin | None = None
    ) -> None:
        self.address = address
        self.port = port
        # Set: every connection is mutual TLS, to an endpoint of an accepted identity.
        self.tls = tls
        self.authority = f"{address}:{port}"
        self.budget = budget
        self.cx_active = 0
        self.cx_total = 0
        self.cx_connect_fail = 0
        self.rq_active = 0
        self.rq_total = 0
        self._idle: list[_UpstreamConn] = []
        # Every connection open (idle or in use), for what they hold unsent (`buffered`).
        self._live: set[_UpstreamConn] = set()
        # Pending requests: each gets a released connection, or None meaning "a budget slot
        # is reserved for you, connect".
        self._waiters: deque[asyncio.Future[_UpstreamConn | None]] = deque()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def cx_idle(self) -> int:
        """Idle keep-alive connections waiting for reuse."""
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
        """Send one request; returns its response once the head has arrived.

        The framing is ours (see the package doc); a streamed ``body`` goes on being sent, with
        back-pressure, while the response is read. Raises ``ConnectFailure`` (refused,
        unreachable, or over ``connect_timeout``), ``PendingOverflow`` (the cluster's pending
        queue is full), ``UpstreamReset`` (the connection closed before a complete head, the
        head was malformed, or the request body broke), and ``UnicodeEncodeError`` for a
        header that is not latin-1 (before any connection is taken). Cancelled at any point (a
        route timeout), it restores the active and pending counts and leaves no connection half
        used: one mid-exchange is closed, one taken but not yet written to goes back."""
        head, payload, stream, chunked = encode_request(
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

    async def upgrade(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        connect_timeout: float,
    ) -> UpstreamResponse:
        """Send an upgrade request (its ``upgrade`` header among `headers`; we add
        ``connection: upgrade``) without a body, on a connection of its own; returns its
        response once the head has arrived.

        A ``101`` comes as an ``UpgradedResponse`` whose ``tunnel`` is the connection's raw
        byte stream: the connection stays counted against the cluster's budget until that
        stream closes. Any other answer is an ordinary response, after which the connection
        closes. Either way the connection never goes back to the pool, and none is taken from
        it: the connection is new, or one handed over by a finishing request while this one
        waited as pending. Raises as ``request`` does, and ``UpstreamReset`` for a 101 that
        cannot be switched (no ``upgrade`` header)."""
        head = encode_request(method, target, headers, None, self.authority, upgrade=True)[0]
        self.rq_active += 1
        self.rq_total += 1
        try:
            conn = await self._acquire(connect_timeout)
            conn._upgrade = True
            waiter = conn.send(head, None, None, False, False)
            try:
                resp = await waiter
            except asyncio.CancelledError:
                conn._discard()
                raise
            finally:
                if conn._waiter is waiter:
                    conn._waiter = None
            if isinstance(resp, UpgradedResponse) and resp.tunnel is None:
                raise UpstreamReset(f"{self.authority}: malformed 101 Switching Protocols")
        except BaseException:
            self.rq_active -= 1
            raise
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
        """Close the idle connections; those in use close when released, and so do the ones
        of requests made afterwards (they still work). Never waits."""
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
                _, conn = await open_connection(
                    loop, lambda: _UpstreamConn(self, loop), self.address, self.port, self.tls
                )
        except (OSError, TimeoutError) as exc:
            self._unreserve()
            self.cx_connect_fail += 1
            if isinstance(exc, TimeoutError):
                self.budget.traffic.connect_timeout += 1
            reason = "connect timeout" if isinstance(exc, TimeoutError) else str(exc)
            raise ConnectFailure(f"{self.authority}: {reason}") from exc
        except BaseException:
            self._unreserve()
            raise
        self.cx_total += 1
        self._live.add(conn)
        return conn

    def buffered(self) -> tuple[int, int]:
        """Bytes its connections hold now: (read and not yet taken by the caller, written
        and not yet taken by the socket). Walks the connections: for stats reads."""
        rx = tx = 0
        for conn in self._live:
            resp = conn.resp
            if resp is not None:
                rx += resp.pending_bytes
            if not conn.closed:
                tx += conn.transport.get_write_buffer_size()
        return rx, tx

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
        self._live.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._unreserve()
