"""TLS over a TCP transport, as a protocol below and a transport above.

`TlsLayer` becomes the TCP transport's protocol; it runs an `ssl.SSLObject` over memory BIOs
and, once the handshake is done and its owner has accepted the peer, hands the decrypted
stream to an ordinary protocol through `TlsTransport`, an `asyncio.Transport` like any other.
So the HTTP/1.1 engine, its h2c hand-off, upgraded (WebSocket) streams, the tcp_proxy and the
upstream clients run on it unchanged; `get_extra_info("ssl_object")` and `("peercert")` give
the peer's verified identity (tls/peer.py).

Why not the loop's `start_tls`: a listener must look at a connection's first bytes before it
knows whether to speak TLS (PERMISSIVE, Envoy's tls_inspector), and uvloop starts reading an
accepted connection after `connection_made` whatever the protocol asks, so those bytes are
read; `start_tls` cannot be given them back. Owning the layer also lets a failed handshake
say exactly why (the stats tell a bad certificate from a reset), lets the client side offer a
session to resume, and lets a half-close travel as TLS's close_notify.

The handshake is bounded by a timer; its outcome goes to the owner's `done` callback once:
None (done: call `start(protocol)` to let bytes through, or `transport.abort()`) or the
exception that ended it (the TCP connection is then aborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Final

# One read from the TLS object: a read returns one record's plaintext (16 KiB at most), and
# each read allocates this much before shrinking to what it got.
READ_SIZE: Final = 64 * 1024

_HANDSHAKE: Final = 0
_OPEN: Final = 1
_CLOSED: Final = 2

Done = Callable[[BaseException | None], None]


class TlsLayer(asyncio.Protocol):
    """The TCP transport's protocol while TLS runs over it (see the module doc)."""

    __slots__ = (
        "_app",
        "_closing",
        "_done",
        "_eof_seen",
        "_eof_sent",
        "_error",
        "_in",
        "_loop",
        "_out",
        "_paused",
        "_peercert",
        "_raw",
        "_reported",
        "_ssl",
        "_state",
        "_timeout",
        "_timer",
        "transport",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        timeout: float,
        done: Done,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self._loop = loop
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._in, self._out, server_side=server_side, session=session)
        self._timeout = timeout
        self._done: Done | None = done
        self._raw: asyncio.Transport | None = None
        self._app: asyncio.Protocol | None = None
        self._state = _HANDSHAKE
        self._timer: asyncio.TimerHandle | None = None
        self._reported = False
        self._paused = False
        self._closing = False
        self._eof_seen = False
        self._eof_sent = False
        self._error: BaseException | None = None
        self._peercert: dict[str, Any] | None = None
        self.transport = TlsTransport(self)

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._ssl

    # -- the TCP side ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A client's connection: its ClientHello goes out now.
        self.attach(transport, b"")

    def attach(self, transport: asyncio.BaseTransport, head: bytes) -> None:
        """Run over `transport` (already connected; this layer is made its protocol by the
        caller), `head` being what was already read from it."""
        raw = self._raw = transport  # type: ignore[assignment]
        self._timer = self._loop.call_later(self._timeout, self._timed_out)
        if raw.is_closing():
            self._report(ConnectionResetError("the connection closed before the TLS handshake"))
            return
        if head:
            self._in.write(head)
        self._handshake()

    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        if self._state == _HANDSHAKE:
            self._handshake()
        elif self._state == _OPEN:
            self._read()

    def eof_received(self) -> bool:
        self._in.write_eof()
        if self._state == _HANDSHAKE:
            self._report(ConnectionResetError("the peer closed the connection mid-handshake"))
            return False
        # The rest of the plaintext, then its end (told when the app reads it: it may be
        # paused); the TCP connection stays open for our side's last words.
        self._read()
        return True

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        self._state = _CLOSED
        self._cancel_timer()
        if state == _HANDSHAKE or not self._reported:
            self._report(exc or ConnectionResetError("the connection closed mid-handshake"))
            return
        app = self._app
        if app is not None:
            self._app = None
            app.connection_lost(exc if exc is not None else self._exception())

    def _exception(self) -> Exception | None:
        err = self._error
        return err if isinstance(err, Exception) else None

    # -- the handshake --------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            # Our alert (a bad certificate, ...) goes out before the connection is cut.
            self._flush()
            self._report(exc)
            return
        self._flush()
        self._state = _OPEN
        self._cancel_timer()
        self._report(None)

    def _timed_out(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            self._report(TimeoutError(f"TLS handshake not done in {self._timeout:g}s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _report(self, exc: BaseException | None) -> None:
        if self._reported:
            return
        self._reported = True
        done, self._done = self._done, None
        if exc is not None:
            self._state = _CLOSED
            self._cancel_timer()
            self._error = exc
            raw = self._raw
            if raw is not None and not raw.is_closing():
                raw.abort()
        if done is not None:
            done(exc)

    def start(self, app: asyncio.Protocol) -> None:
        """After a handshake reported done: `app` gets the decrypted stream from now on (its
        connection_made first), bytes that came meanwhile included."""
        self._app = app
        app.connection_made(self.transport)
        self._read()

    def pump(self) -> None:
        """Hand over the bytes that came while no protocol was there to take them (call it
        after making the protocol the transport's by other means, as a listener's adopt)."""
        self._read()

    @property
    def closed(self) -> bool:
        """The TCP connection is gone or going: nothing can be started on it."""
        raw = self._raw
        return self._state == _CLOSED or raw is None or raw.is_closing()

    @property
    def peercert(self) -> dict[str, Any]:
        """The peer's verified certificate, decoded ({} if it sent none); read once."""
        cert = self._peercert
        if cert is None:
            cert = self._peercert = self._ssl.getpeercert() or {}
        return cert

    # -- the decrypted stream -------------------------------------------------------------

    def _read(self) -> None:
        if self._paused or self._state != _OPEN or self._eof_seen:
            return
        ssl_object = self._ssl
        while True:
            # Read again each time: a protocol may hand the stream on (h2c, an upgrade).
            app = self._app
            if app is None:
                break
            try:
                data = ssl_object.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            except (ssl.SSLError, OSError) as exc:
                self._flush()
                self._error = exc
                self._abort()
                return
            if not data:
                # close_notify (b'' or SSLZeroReturnError) or a TCP EOF without it.
                self._flush()
                self._peer_done(app)
                return
            app.data_received(data)
            if self._paused or self._closing:
                break
        # Reading may have made output (a TLS 1.3 KeyUpdate's answer).
        self._flush()

    def _peer_done(self, app: asyncio.Protocol) -> None:
        self._eof_seen = True
        if not app.eof_received():
            self._close()

    def _resume(self) -> None:
        # Plaintext already decrypted, and a close_notify already read, wait in the TLS object,
        # not in the socket: no new read would bring them.
        if not self._paused:
            self._read()

    def _flush(self) -> None:
        data = self._out.read()
        raw = self._raw
        if data and raw is not None and not raw.is_closing():
            raw.write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or self._closing or self._eof_sent:
            return
        view = memoryview(data)
        try:
            while view:
                n = self._ssl.write(view)
                view = view[n:]
        except (ssl.SSLError, OSError) as exc:
            self._error = exc
            self._abort()
            return
        self._flush()

    def _write_eof(self) -> None:
        """Our half-close: TLS's close_notify, then the TCP FIN; reading goes on."""
        if self._state != _OPEN or self._closing or self._eof_sent:
            return
        self._eof_sent = True
        self._shutdown()
        raw = self._raw
        if raw is not None and not raw.is_closing() and raw.can_write_eof():
            raw.write_eof()

    def _shutdown(self) -> None:
        # SSLWantReadError is the expected outcome: the peer's close_notify has not come (and
        # need not: we do not wait for it).
        with contextlib.suppress(ssl.SSLError, OSError):
            self._ssl.unwrap()
        self._flush()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._state == _OPEN and not self._eof_sent:
            self._eof_sent = True
            self._shutdown()
        raw = self._raw
        if raw is not None:
            raw.close()

    def _abort(self) -> None:
        self._closing = True
        raw = self._raw
        if raw is not None:
            raw.abort()

    def _pause_reading(self) -> None:
        if self._paused:
            return
        self._paused = True
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.pause_reading()

    def _resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.resume_reading()
        # Not at once: this is often called from the app's own data_received.
        self._loop.call_soon(self._resume)


class TlsTransport(asyncio.Transport):
    """The decrypted stream of a `TlsLayer`, for the protocol above it."""

    __slots__ = ("_layer",)

    def __init__(self, layer: TlsLayer) -> None:
        super().__init__()
        self._layer = layer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        layer = self._layer
        if name == "ssl_object":
            return layer._ssl
        if name == "peercert":
            return layer.peercert
        if name == "cipher":
            return layer._ssl.cipher()
        if name == "sslcontext":
            return layer._ssl.context
        raw = layer._raw
        return default if raw is None else raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._layer._write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._layer._write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._layer._write_eof()

    def close(self) -> None:
        self._layer._close()

    def abort(self) -> None:
        self._layer._abort()

    def is_closing(self) -> bool:
        layer = self._layer
        raw = layer._raw
        return layer._closing or layer._state == _CLOSED or raw is None or raw.is_closing()

    def pause_reading(self) -> None:
        self._layer._pause_reading()

    def resume_reading(self) -> None:
        self._layer._resume_reading()

    def is_reading(self) -> bool:
        return not self._layer._paused

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._layer._app = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        app = self._layer._app
        assert app is not None
        return app

    def get_write_buffer_size(self) -> int:
        raw = self._layer._raw
        return 0 if raw is None else raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        raw = self._layer._raw
        return (0, 0) if raw is None else raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        raw = self._layer._raw
        if raw is not None:
            raw.set_write_buffer_limits(high, low)
