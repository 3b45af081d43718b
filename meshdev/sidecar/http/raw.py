"""A connection's raw byte stream once it has left HTTP (after a ``101 Switching Protocols``),
and the splice of two such streams: what one end reads, the other writes.

Both sides of an upgraded stream hand their transport over as a ``RawEnd``: the server engine
(a client connection after its 101, ``ResponseWriter.switch_protocols``) and the upstream
client (an upstream connection that answered 101, ``UpgradedResponse.tunnel``). The end
becomes the transport's protocol (``set_protocol``), so neither HTTP path checks for a tunnel
on its own hot path. An end is made with its transport's reading paused, holding the bytes
that arrived after the HTTP head (``early``); ``Splice`` joins two ends, sends each one's early
bytes across, and starts reading.

Back-pressure: when one end's socket buffer passes its high-water mark (asyncio's
``pause_writing``), the other end stops reading until it drains, so a slow reader holds back a
fast writer instead of growing a buffer without bound.

Closing is Envoy's for an upgraded HTTP/1.1 stream: a half-close is not propagated. When
either side ends (its FIN, a reset, or our close), the other side is closed once what was
already written to it has gone out. No byte either way for ``idle_timeout`` seconds (Envoy's
``stream_idle_timeout``) resets both at once.

This module sits at the bottom of the engine: it imports nothing of meshdev, and the upstream
client builds on it as it builds on ``flowbuffer``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class RawEnd(asyncio.Protocol):
    """One side of an upgraded stream: its connection's bytes, without HTTP."""

    __slots__ = (
        "_early",
        "_held",
        "_on_lost",
        "_peer",
        "_splice",
        "_wpaused",
        "closed",
        "received",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        early: bytes,
        on_lost: Callable[[Exception | None], None] | None = None,
    ) -> None:
        """`transport`: its reading already paused by the caller (it resumes at the splice);
        `early`: what it read past the HTTP head; `on_lost`: told when the connection closes
        (the HTTP side that handed it over still has accounting to settle)."""
        self.transport = transport
        self._early = early
        self._on_lost = on_lost
        self._peer: RawEnd | None = None
        self._splice: Splice | None = None
        # Reading is paused: until the splice, and while the peer's socket buffer is full.
        self._held = True
        # This end's socket buffer is full: the peer must not read more for it.
        self._wpaused = False
        self.closed = transport.is_closing()
        # Bytes read from this end's connection (its early bytes included), i.e. sent across.
        self.received = len(early)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        peer = self._peer
        if peer is None:
            # Only before the splice, and only if the caller did not pause reading: keep it.
            self._early += data
            self.received += len(data)
            return
        self.received += len(data)
        splice = self._splice
        if splice is not None:
            splice.touch()
        if not peer.closed:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        # No half-close (Envoy's rule for upgrades): returning False closes this side, and
        # its connection_lost closes the other.
        return False

    def pause_writing(self) -> None:
        self._wpaused = True
        peer = self._peer
        if peer is not None:
            peer._hold()

    def resume_writing(self) -> None:
        self._wpaused = False
        peer = self._peer
        if peer is not None:
            peer._release()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        on_lost = self._on_lost
        self._on_lost = None
        if on_lost is not None:
            on_lost(exc)
        peer = self._peer
        if peer is not None and not peer.closed:
            # What this side sent has been written to the peer's transport: close() sends it
            # before closing, so the last frames (a WebSocket close frame) are not lost.
            peer.transport.close()
        splice = self._splice
        if splice is not None:
            splice._lost()

    # -- flow control -----------------------------------------------------------------------

    def _hold(self) -> None:
        if not self._held and not self.closed:
            self._held = True
            self.transport.pause_reading()

    def _release(self) -> None:
        if self._held and not self.closed and (self._peer is None or not self._peer._wpaused):
            self._held = False
            self.transport.resume_reading()


class Splice:
    """Two ends joined: bytes cross both ways until both connections are closed.

    ``await wait()`` returns then. ``idle`` tells whether the idle timeout ended it;
    ``close()`` resets both ends at once (the handler was cancelled, say). One timer per
    splice rather than a sweep: a splice lives for seconds to hours, not microseconds."""

    __slots__ = ("_a", "_b", "_done", "_idle_timeout", "_last", "_loop", "_timer", "idle")

    def __init__(self, a: RawEnd, b: RawEnd, idle_timeout: float) -> None:
        """Join `a` and `b` and start relaying; `idle_timeout` 0 disables the idle timer."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._a = a
        self._b = b
        self._done: asyncio.Future[None] = loop.create_future()
        self._idle_timeout = idle_timeout
        self._last = loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self.idle = False
        a._peer, b._peer = b, a
        a._splice = b._splice = self
        for end, peer in ((a, b), (b, a)):
            early = end._early
            end._early = b""
            if early and not peer.closed:
                peer.transport.write(early)
        if a.closed or b.closed:
            # One side left before the splice: the other follows, after its early bytes.
            for end in (a, b):
                if not end.closed:
                    end.transport.close()
            self._lost()
            return
        a._release()
        b._release()
        if idle_timeout > 0:
            self._timer = loop.call_at(self._last + idle_timeout, self._check_idle)

    async def wait(self) -> None:
        """Until both connections have closed."""
        await asyncio.shield(self._done)

    def touch(self) -> None:
        """A byte moved (called by the ends as they read)."""
        self._last = self._loop.time()

    def close(self) -> None:
        """Reset both connections now; nothing happens once both are closed."""
        for end in (self._a, self._b):
            if not end.closed:
                end.transport.abort()

    def _check_idle(self) -> None:
        self._timer = None
        if self._done.done():
            return
        due = self._last + self._idle_timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_idle)
            return
        self.idle = True
        self.close()

    def _lost(self) -> None:
        if self._a.closed and self._b.closed and not self._done.done():
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._done.set_result(None)
