"""A listening HTTP/1.1 server: accepts connections, sweeps their timers, drains on close
(see the package doc). The top of the engine: nothing else in it imports this module."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from meshdev.common.sidecar_config import Limits
from meshdev.sidecar.http.connection import LINGER, ClientConnection, H2Handoff, Handler, Served
from meshdev.sidecar.http.tally import ConnTally


class HttpServer:
    """A listening HTTP/1.1 server (see the package doc); made by ``start_server``."""

    def __init__(self, handler: Handler, limits: Limits, loop: asyncio.AbstractEventLoop) -> None:
        self._handler = handler
        self._limits = limits
        self._loop = loop
        self._conns: set[Served] = set()
        # Installed by sidecar.http2 (enable_h2c): who takes a connection that opens with
        # HTTP/2's preface. None: HTTP/1.1 only, and no first-read check at all.
        self._h2c: H2Handoff | None = None
        # Asked once per accepted connection: the stats it counts in (sidecar.http.tally).
        # None: its connections are counted nowhere (the admin API's).
        self.tallies: Callable[[], ConnTally] | None = None
        self._server: asyncio.Server | None = None
        self._draining = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None
        self._port = 0

    @property
    def limits(self) -> Limits:
        """The hardening limits; assigning new ones applies them to open connections too."""
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        # Connections read the limits at each check, so the swap applies at once.
        self._limits = limits

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets; empty before listening and after ``close``."""
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The bound port (kept after close)."""
        return self._port

    @property
    def connections(self) -> int:
        """Open client connections, idle ones included."""
        return len(self._conns)

    def buffered(self) -> tuple[int, int]:
        """Bytes its open connections hold now: (read and not yet taken by a handler,
        written and not yet taken by the socket). Walks the connections: for stats reads."""
        rx = tx = 0
        for conn in self._conns:
            got, owed = conn._buffered()
            rx += got
            tx += owed
        return rx, tx

    def _protocol(self) -> ClientConnection:
        return ClientConnection(self)

    def adopt(self, transport: asyncio.Transport) -> None:
        """Serve a connection accepted elsewhere (a captured one, handed over by the
        original_dst listener) as if this server had accepted it."""
        conn = self._protocol()
        transport.set_protocol(conn)
        conn.connection_made(transport)

    def _conn_lost(self, conn: Served) -> None:
        self._conns.discard(conn)
        if not self._conns and self._all_closed is not None:
            self._all_closed.set()

    def _sweep(self) -> None:
        limits = self._limits
        now = self._loop.time()
        for conn in list(self._conns):
            conn._check_timers(now, limits)
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        lim = self._limits
        every = min(lim.header_timeout, lim.idle_timeout, LINGER) / 4
        self._sweeper = self._loop.call_later(min(max(every, 0.01), 1.0), self._sweep)

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish (up to grace).

        Responses started while draining carry ``connection: close``, and every connection
        closes once its response in flight has ended. After ``grace`` seconds
        the connections left are reset and their handlers cancelled; returns once they are
        all closed and their handlers have unwound (waiting up to ``grace`` more). Cancelled,
        it stops where it is: the server no longer accepts, and what is still open finishes
        or times out on its own."""
        self._draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn._close_idle()
        stragglers: list[asyncio.Task[None]] = []
        if self._conns:
            self._all_closed = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for conn in list(self._conns):
                    if conn._task is not None:
                        stragglers.append(conn._task)
                    conn._abort()
        # Let connection_lost callbacks of the last aborts run, and their handlers unwind.
        while self._conns:
            await asyncio.sleep(0.01)
        if stragglers:
            await asyncio.wait(stragglers, timeout=grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            await self._server.wait_closed()


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    limits: Limits,
    accept: Callable[[], asyncio.Protocol] | None = None,
) -> HttpServer:
    """Listen on host:port (0 picks a free port) and serve `handler`; raises ``OSError``
    when the address cannot be bound. See the package doc for how handlers are called.
    `accept`: the protocol of each accepted connection instead of the server's own (one that
    hands connections on, `adopt` taking back those that are this server's)."""
    loop = asyncio.get_running_loop()
    server = HttpServer(handler, limits, loop)
    server._server = await loop.create_server(
        accept or server._protocol, host, port, backlog=2048, reuse_address=True
    )
    server._port = int(server._server.sockets[0].getsockname()[1])
    server._schedule_sweep()
    return server


def unbound_server(handler: Handler, limits: Limits) -> HttpServer:
    """A server with no socket of its own (Envoy's bind_to_port: false): it serves only the
    connections handed to its `adopt`."""
    server = HttpServer(handler, limits, asyncio.get_running_loop())
    server._schedule_sweep()
    return server


def set_limits(server: HttpServer, limits: Limits) -> None:
    """Hot-swap the hardening limits of a running server (same as `server.limits = ...`)."""
    server.limits = limits
