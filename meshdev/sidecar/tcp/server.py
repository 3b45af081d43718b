"""A listening tcp_proxy: accepts connections and relays each in a `TcpSession`; drains on
close. Like the HTTP server's `Proxy`, it serves whatever config the data plane holds now: a
new connection reads its listener's entry from the current compiled config, and a swap that
keeps the listener where it is changes nothing else (connections in flight keep their cluster
and host until they end)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from meshdev.sidecar.compiled import Compiled, TcpProxyEntry
from meshdev.sidecar.dataplane import DataPlane
from meshdev.sidecar.stats.sets import TcpStatSet
from meshdev.sidecar.tcp.session import TcpSession


class TcpProxyServer:
    """One tcp_proxy listener; made by `start_tcp_proxy`."""

    def __init__(self, plane: DataPlane, listener: str, loop: asyncio.AbstractEventLoop) -> None:
        self.plane = plane
        # The listener's name in the config; a swap that renames it sets this.
        self.listener = listener
        self.loop = loop
        self.sessions: set[TcpSession] = set()
        # The stats of the entry last served, for connections that find no entry any more.
        self.last_stats: TcpStatSet | None = None
        self._compiled: Compiled | None = None
        self._entry: TcpProxyEntry | None = None
        self._server: asyncio.Server | None = None
        self._port = 0
        self._all_closed: asyncio.Event | None = None

    @property
    def port(self) -> int:
        """The bound port (kept after close)."""
        return self._port

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def connections(self) -> int:
        """Sessions not yet ended (connecting, relaying or flushing)."""
        return len(self.sessions)

    def buffered(self) -> int:
        """Bytes read from one side and not yet written to the other, over every session:
        back-pressure keeps it near two transports' high-water marks per session."""
        return sum(s.buffered for s in self.sessions)

    def entry(self) -> TcpProxyEntry | None:
        """This listener in the config serving now (None once it left the config)."""
        compiled = self.plane.current
        if compiled is not self._compiled:
            self._compiled = compiled
            self._entry = compiled.tcp_listeners.get(self.listener)
            if self._entry is not None:
                self.last_stats = self._entry.stats
        return self._entry

    def adopt(self, transport: asyncio.Transport) -> None:
        """Relay a connection accepted elsewhere (a captured one, handed over by the
        original_dst listener) as if this listener had accepted it."""
        session = TcpSession(self)
        transport.set_protocol(session)
        session.connection_made(transport)

    def session_ended(self, session: TcpSession) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._all_closed is not None:
            self._all_closed.set()

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting; let the connections in flight end on their own for up to `grace`
        seconds (a relayed connection has no request boundary to stop at, so it is not cut
        earlier), then close the rest. Returns once every session has ended."""
        if self._server is not None:
            self._server.close()
        if self.sessions:
            self._all_closed = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for session in list(self.sessions):
                    session.abort()
        while self.sessions:
            await asyncio.sleep(0.01)
        if self._server is not None:
            await self._server.wait_closed()


async def start_tcp_proxy(
    plane: DataPlane,
    listener: str,
    host: str,
    port: int,
    accept: Callable[[], asyncio.Protocol] | None = None,
) -> TcpProxyServer:
    """Listen on host:port (0 picks a free port) as the tcp_proxy listener `listener`; raises
    ``OSError`` when the address cannot be bound. `accept`: the protocol of each accepted
    connection instead of a session (one that hands connections on to `adopt`, as inbound
    TLS does once the handshake is done)."""
    loop = asyncio.get_running_loop()
    server = TcpProxyServer(plane, listener, loop)

    def session() -> asyncio.Protocol:
        return TcpSession(server)

    server._server = await loop.create_server(
        accept or session, host, port, backlog=2048, reuse_address=True
    )
    server._port = int(server._server.sockets[0].getsockname()[1])
    return server


def unbound_tcp_proxy(plane: DataPlane, listener: str) -> TcpProxyServer:
    """A tcp_proxy listener with no socket of its own (Envoy's bind_to_port: false): it
    relays only the connections handed to its `adopt`."""
    return TcpProxyServer(plane, listener, asyncio.get_running_loop())
