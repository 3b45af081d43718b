"""One relayed connection: Envoy's tcp_proxy filter for the life of a downstream connection.

    accept (reading paused) -> pick a cluster (weights) -> max_connections -> pick a host
    (balancer, outlier ejections) -> connect (connect_timeout) -> relay both ways -> close

As Envoy does:
- the downstream is not read until the upstream is connected, so nothing is buffered for a
  connection that may never be made;
- over `max_connections` the connection is closed at once and `upstream_cx_overflow` counts
  it (no pending queue: a TCP pool would wait for a connection that is never released); no
  healthy host closes it too (`upstream_cx_none_healthy`);
- to a cluster with `tls` the connection is mutual TLS (no ALPN), and an endpoint that fails
  the handshake or names no accepted SPIFFE ID is a failed connect (sidecar/tls/upstream);
- a failed connect is charged to the host's outlier detection as a 503 and a connect timeout
  as a 504 (Envoy's LocalOriginConnectFailed / LocalOriginTimeout, which without
  split_external_local_origin_errors count as 5xx and gateway failures), a connect as a 200
  (LocalOriginConnectSuccessFinal), which ends a streak; then the downstream is closed (one
  connect attempt: Envoy's max_connect_attempts default);
- bytes are relayed as they come, with back-pressure both ways: a side whose writes back up
  (the transport's high-water mark) pauses reading the other side until they drain;
- a half-close (FIN) is passed on and the other direction keeps flowing; the session ends when
  both directions have ended, or when either side closes or resets (the other side is closed
  after what was already read for it has been written: Envoy's FlushWrite). A client that left
  with bytes still queued for the upstream is `upstream_flush_total`;
- `idle_timeout` (default 1 h) closes both sides when no byte has moved either way for that
  long (`idle_timeout`).

Each relayed connection also counts as a request on its host (`rq_active`, `rq_total`), as
Envoy's TCP pool counts its streams, so least_request balances connections. It is not an
`upstream_rq_*` of the cluster: a connection is not a request to the dashboard.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from meshdev.sidecar.compiled import ClusterEntry, TcpProxyEntry, TcpTarget
from meshdev.sidecar.stats.sets import TcpStatSet
from meshdev.sidecar.tls.peer import peer_principal
from meshdev.sidecar.tls.upstream import open_connection
from meshdev.sidecar.upstream.host import Host

# The outlier detector's status for a connect's outcome (see the module doc).
CONNECT_FAILED = 503
CONNECT_TIMEOUT = 504
CONNECTED = 200


class Listening(Protocol):
    """What a session needs of its listener (server.TcpProxyServer), said here so that the
    session does not import the server that imports it."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def sessions(self) -> set[TcpSession]: ...

    @property
    def last_stats(self) -> TcpStatSet | None: ...

    def entry(self) -> TcpProxyEntry | None: ...

    def session_ended(self, session: TcpSession) -> None: ...


class _UpstreamSide(asyncio.Protocol):
    """The upstream connection's protocol: hands every event to its session."""

    __slots__ = ("_session",)

    def __init__(self, session: TcpSession) -> None:
        self._session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._session._up = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._session._from_upstream(data)

    def eof_received(self) -> bool:
        return self._session._upstream_eof()

    def pause_writing(self) -> None:
        self._session._pause(downstream=True)

    def resume_writing(self) -> None:
        self._session._resume(downstream=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._upstream_lost()


class TcpSession(asyncio.Protocol):
    """The downstream connection's protocol, and the session that relays it (module doc)."""

    def __init__(self, server: Listening) -> None:
        self._server = server
        self._loop = server.loop
        self._down: asyncio.Transport | None = None
        self._up: asyncio.Transport | None = None
        self._stats: TcpStatSet | None = None
        self._target: TcpTarget | None = None
        self._host: Host | None = None
        self._connecting: asyncio.Task[None] | None = None
        # Bytes the client sent before the upstream was connected (uvloop starts reading an
        # accepted connection after connection_made, so the pause there may come too early).
        self._early: list[bytes] = []
        # Holding a budget slot and the host's counts (from the pick until the upstream closes).
        self._held = False
        self._down_eof = False
        self._up_eof = False
        self._down_closed = False
        self._up_closed = False
        # We closed the upstream first (its close is then `upstream_cx_destroy_local`).
        self._closed_here = False
        self._flushing = False
        # Reading paused because the other side's writes backed up.
        self._down_paused = False
        self._up_paused = False
        self._idle_timeout = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._active_at = 0.0
        # Set once connected: only then is an upstream close an `upstream_cx_destroy`.
        self._relayed = False

    @property
    def buffered(self) -> int:
        """Bytes queued in this session's two transports, waiting to be written."""
        return sum(t.get_write_buffer_size() for t in (self._down, self._up) if t is not None)

    # -- downstream events ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        down = self._down = cast(asyncio.Transport, transport)
        server = self._server
        server.sessions.add(self)
        # Nothing is read until the upstream is there to take it.
        down.pause_reading()
        entry = server.entry()
        if entry is None:
            # The listener left the config and drains: no route for new connections.
            if server.last_stats is not None:
                server.last_stats.downstream_cx_total.value += 1
                server.last_stats.downstream_cx_no_route.value += 1
            down.close()
            return
        stats = self._stats = entry.stats
        stats.downstream_cx_total.value += 1
        rbac = entry.rbac
        if rbac is not None:
            # Envoy's network RBAC filter: one decision per connection, by the peer's
            # identity (its certificate; a plaintext peer has none); a denied one is closed
            # before any upstream is picked.
            principal = peer_principal(down) if rbac.engine.reads_principal else None
            if rbac.engine.check_connection(principal) is not None:
                rbac.stats.denied.value += 1
                down.close()
                return
            rbac.stats.allowed.value += 1
        self._idle_timeout = entry.idle_timeout
        target = self._target = entry.clusters.pick()
        cluster = target.cluster
        budget = cluster.state.budget
        if not budget.try_open():
            # Over max_connections (budget.cx_overflow -> upstream_cx_overflow): closed at once.
            down.close()
            return
        host = cluster.balancer.pick(self._hash_key(cluster, down))
        if host is None:
            budget.release()
            cluster.stats.upstream_cx_none_healthy.value += 1
            down.close()
            return
        self._host = host
        self._held = True
        host.tcp_cx_active += 1
        host.rq_active += 1
        host.rq_total += 1
        self._connecting = self._loop.create_task(
            self._connect(cluster, host), name=f"meshdev-tcp-connect-{host.key}"
        )

    @staticmethod
    def _hash_key(cluster: ClusterEntry, down: asyncio.Transport) -> str | None:
        # ring_hash on a tcp_proxy hashes the client's address (Envoy's hash_policy
        # source_ip); other policies ignore the key.
        if cluster.state.config.lb != "ring_hash":
            return None
        peer = down.get_extra_info("peername")
        return str(peer[0]) if isinstance(peer, tuple) and peer else None

    def data_received(self, data: bytes) -> None:
        up = self._up
        if up is None:
            if self._connecting is not None:
                self._early.append(data)
                if self._down is not None:
                    self._down.pause_reading()
            return
        if up.is_closing():
            return
        n = len(data)
        assert self._stats is not None and self._target is not None
        self._stats.downstream_cx_rx_bytes_total.value += n
        self._target.stats.upstream_cx_tx_bytes_total.value += n
        self._active_at = self._loop.time()
        up.write(data)

    def eof_received(self) -> bool:
        self._down_eof = True
        up = self._up
        if up is not None and not up.is_closing() and up.can_write_eof():
            # The client is done sending; the upstream's answer may still flow back.
            up.write_eof()
        if self._up_eof:
            self._finish()
        return True

    def pause_writing(self) -> None:
        self._pause(downstream=False)

    def resume_writing(self) -> None:
        self._resume(downstream=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._down_closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        up = self._up
        if up is not None and not up.is_closing():
            if up.get_write_buffer_size() > 0:
                assert self._stats is not None
                self._stats.upstream_flush_total.value += 1
                self._stats.upstream_flush_active.value += 1
                self._flushing = True
            self._closed_here = True
            # What the client sent still goes out before the close (Envoy's FlushWrite).
            up.close()
        self._ended()

    # -- connecting -----------------------------------------------------------------------

    async def _connect(self, cluster: ClusterEntry, host: Host) -> None:
        assert self._target is not None
        outcome = CONNECTED
        try:
            async with asyncio.timeout(cluster.connect_timeout):
                await open_connection(
                    self._loop,
                    lambda: _UpstreamSide(self),
                    host.address,
                    host.port,
                    cluster.state.tls_origin(None),
                )
        except TimeoutError:
            self._target.stats.upstream_cx_connect_timeout.value += 1
            outcome = CONNECT_TIMEOUT
        except OSError:
            outcome = CONNECT_FAILED
        except asyncio.CancelledError:
            # The client left (or the listener was shut) while we connected.
            self._connecting = None
            self._release()
            self._ended()
            raise
        finally:
            if self._connecting is asyncio.current_task(self._loop):
                self._connecting = None
        detector = cluster.detector
        if detector is not None:
            detector.report(host, outcome)
        if outcome != CONNECTED:
            cluster.stats.upstream_cx_connect_fail.value += 1
            self._release()
            if self._down is not None and not self._down.is_closing():
                self._down.close()
            return
        self._connected(cluster)

    def _connected(self, cluster: ClusterEntry) -> None:
        cluster.stats.upstream_cx_total.value += 1
        self._relayed = True
        down, up = self._down, self._up
        assert down is not None and up is not None
        if down.is_closing() or self._down_closed:
            self._closed_here = True
            up.close()
            return
        self._active_at = self._loop.time()
        if self._idle_timeout > 0:
            self._idle = self._loop.call_later(self._idle_timeout, self._idle_check)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._down_eof:
            # The client sent all it had (and its FIN) before we connected.
            if up.can_write_eof():
                up.write_eof()
            return
        if not self._down_paused:  # (the early bytes may have filled the upstream already)
            down.resume_reading()

    # -- upstream events (from _UpstreamSide) ---------------------------------------------

    def _from_upstream(self, data: bytes) -> None:
        down = self._down
        if down is None or down.is_closing():
            return
        n = len(data)
        assert self._stats is not None and self._target is not None
        self._target.stats.upstream_cx_rx_bytes_total.value += n
        self._stats.downstream_cx_tx_bytes_total.value += n
        self._active_at = self._loop.time()
        down.write(data)

    def _upstream_eof(self) -> bool:
        self._up_eof = True
        down = self._down
        if down is not None and not down.is_closing() and down.can_write_eof():
            down.write_eof()
        if self._down_eof:
            self._finish()
        return True

    def _upstream_lost(self) -> None:
        self._up_closed = True
        target = self._target
        assert target is not None
        if self._relayed:
            ts = target.stats
            ts.upstream_cx_destroy.value += 1
            if self._closed_here:
                ts.upstream_cx_destroy_local.value += 1
            else:
                ts.upstream_cx_destroy_remote.value += 1
        if self._flushing:
            self._flushing = False
            assert self._stats is not None
            self._stats.upstream_flush_active.value -= 1
        self._release()
        down = self._down
        if down is not None and not down.is_closing():
            # What the upstream sent still reaches the client before the close.
            down.close()
        self._ended()

    # -- both ---------------------------------------------------------------------------

    def _pause(self, *, downstream: bool) -> None:
        """Writes to one side backed up: stop reading the other until they drain."""
        if downstream:
            t = self._down
            if t is None or t.is_closing() or self._down_paused:
                return
            self._down_paused = True
            assert self._stats is not None
            self._stats.downstream_flow_control_paused_reading_total.value += 1
        else:
            t = self._up
            if t is None or t.is_closing() or self._up_paused:
                return
            self._up_paused = True
            assert self._target is not None
            self._target.stats.upstream_flow_control_paused_reading_total.value += 1
        t.pause_reading()

    def _resume(self, *, downstream: bool) -> None:
        if downstream:
            t = self._down
            if not self._down_paused:
                return
            self._down_paused = False
            assert self._stats is not None
            self._stats.downstream_flow_control_resumed_reading_total.value += 1
        else:
            t = self._up
            if not self._up_paused:
                return
            self._up_paused = False
            assert self._target is not None
            self._target.stats.upstream_flow_control_resumed_reading_total.value += 1
        if t is not None and not t.is_closing():
            t.resume_reading()

    def _finish(self) -> None:
        """Both sides half-closed: close both once what is queued has been written."""
        self._closed_here = True
        for t in (self._up, self._down):
            if t is not None and not t.is_closing():
                t.close()

    def _idle_check(self) -> None:
        self._idle = None
        left = self._active_at + self._idle_timeout - self._loop.time()
        if left > 0:
            self._idle = self._loop.call_later(left, self._idle_check)
            return
        assert self._stats is not None
        self._stats.idle_timeout.value += 1
        # As Envoy (NoFlush): a connection idle this long has nothing worth waiting for.
        self.abort()

    def abort(self) -> None:
        """Close both sides now, without flushing (idle timeout, end of a drain)."""
        if self._connecting is not None:
            self._connecting.cancel()
        if self._up is not None and not self._up_closed:
            self._closed_here = True
            self._up.abort()
        if self._down is not None and not self._down_closed:
            self._down.abort()

    def _release(self) -> None:
        if not self._held:
            return
        self._held = False
        host = self._host
        target = self._target
        assert host is not None and target is not None
        host.tcp_cx_active -= 1
        host.rq_active -= 1
        target.cluster.state.budget.release()

    def _ended(self) -> None:
        """Forget the session once neither side is open (nor being connected)."""
        if self._connecting is not None:
            return
        up_done = self._up is None or self._up_closed
        if self._down_closed and up_done:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            self._server.session_ended(self)
