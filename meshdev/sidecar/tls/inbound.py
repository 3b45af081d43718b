"""Inbound mutual TLS (Istio's PeerAuthentication on an inbound listener).

Every connection an inbound listener accepts first meets a `TlsAccept`, which looks at its
mode in the config serving now (so a swap changes it for new connections without re-binding):

- DISABLE: handed to the listener at once, as before TLS existed;
- STRICT or PERMISSIVE: its first bytes tell TLS from plaintext, as Envoy's tls_inspector
  does (a TLS record starts 0x16 0x03: a handshake record, TLS major version 3; no HTTP
  request, h2c preface or text protocol starts with 0x16). TLS goes through the handshake
  with the workload certificate's server context (the one in force as it starts) and, once
  the client's certificate has verified, to the listener over a `TlsTransport`. Plaintext is
  handed to the listener under PERMISSIVE and refused (closed) under STRICT.

The handshake, and the wait for the first bytes, are bounded by Limits.tls_handshake_timeout.
Under PERMISSIVE a client that says nothing for that long is handed over as plaintext (Istio
sets continue_on_listener_filters_timeout for server-first protocols); under STRICT it is
closed. The client's certificate must lead to the mesh's CA (ssl checks it) and name a SPIFFE
ID of this workload's trust domain (Envoy's SPIFFE validator); which SPIFFE ID is authorization's
question (peer.py, the RBAC filter). Stats: see stats.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, cast

from meshdev.common.sidecar_config import MtlsMode
from meshdev.sidecar.tls.identity import WorkloadIdentity
from meshdev.sidecar.tls.layer import TlsLayer
from meshdev.sidecar.tls.peer import SPIFFE, uri_sans
from meshdev.sidecar.tls.stats import ListenerTlsStats, count_failure

log = logging.getLogger(__name__)

# A TLS record's first bytes: ContentType handshake (22), then ProtocolVersion major 3.
TLS_RECORD: tuple[int, int] = (0x16, 0x03)


class Adopter(Protocol):
    """The listener a connection is handed to: makes its protocol the transport's."""

    def adopt(self, transport: asyncio.Transport) -> None: ...


def looks_like_tls(head: bytes) -> bool | None:
    """Whether a connection's first bytes open a TLS record; None until enough have come."""
    if not head:
        return None
    if head[0] != TLS_RECORD[0]:
        return False
    if len(head) < 2:
        return None
    return head[1] == TLS_RECORD[1]


class InboundTls:
    """One inbound listener's TLS front: the protocol factory its socket accepts with."""

    def __init__(
        self,
        identity: WorkloadIdentity,
        stats: Callable[[], ListenerTlsStats],
        mode: Callable[[], MtlsMode],
        adopter: Callable[[], Adopter],
    ) -> None:
        self.identity = identity
        self._make_stats = stats
        self._stats: ListenerTlsStats | None = None
        # Asked per connection: the listener's mode in the config serving now.
        self.mode = mode
        # The listener connections are handed to (asked when one is: the server is made
        # after this factory).
        self.adopter = adopter
        # Connections still deciding or handshaking, for close().
        self.pending: set[TlsAccept] = set()

    @property
    def stats(self) -> ListenerTlsStats:
        # Made at the first connection that meets TLS, so a plaintext listener has none.
        stats = self._stats
        if stats is None:
            stats = self._stats = self._make_stats()
        return stats

    def protocol(self) -> asyncio.Protocol:
        return TlsAccept(self)

    def close(self) -> None:
        """Cut connections not yet handed to the listener (a closing listener does not wait
        for handshakes)."""
        for accept in list(self.pending):
            accept.abort()
        self.pending.clear()


class TlsAccept(asyncio.Protocol):
    """An accepted connection until it is handed over, as TLS or plaintext, or refused."""

    __slots__ = ("_deadline", "_front", "_head", "_layer", "_loop", "_mode", "_raw", "_timer")

    def __init__(self, front: InboundTls) -> None:
        self._front = front
        self._loop = asyncio.get_running_loop()
        self._raw: asyncio.Transport | None = None
        self._mode: MtlsMode = "DISABLE"
        self._head = b""
        self._timer: asyncio.TimerHandle | None = None
        self._layer: TlsLayer | None = None
        self._deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses, hence the cast.
        raw = cast(asyncio.Transport, transport)
        front = self._front
        mode = self._mode = front.mode()
        if mode == "DISABLE":
            front.adopter().adopt(raw)
            return
        self._raw = raw
        front.pending.add(self)
        timeout = front.identity.handshake_timeout
        self._deadline = self._loop.time() + timeout
        self._timer = self._loop.call_later(timeout, self._timed_out)

    def data_received(self, data: bytes) -> None:
        head = self._head + data if self._head else data
        tls = looks_like_tls(head)
        if tls is None:
            self._head = head
            return
        self._head = b""
        self._cancel_timer()
        if tls:
            self._handshake(head)
        else:
            self._plaintext(head)

    def eof_received(self) -> bool:
        # Gone before saying enough to be served.
        self._forget()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def abort(self) -> None:
        self._forget()
        if self._layer is not None:
            self._layer.transport.abort()
        elif self._raw is not None:
            self._raw.abort()

    def _forget(self) -> None:
        self._cancel_timer()
        self._front.pending.discard(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._mode == "PERMISSIVE":
            # A server-first protocol's client waits for the server: plaintext it is.
            self._plaintext(self._head)
            return
        self._front.stats.connection_error.value += 1
        self._refuse()

    def _refuse(self) -> None:
        self._forget()
        if self._raw is not None:
            self._raw.abort()

    def _plaintext(self, head: bytes) -> None:
        front = self._front
        raw = self._raw
        assert raw is not None
        if self._mode == "STRICT":
            # Envoy: a TLS-only listener fails the handshake (ssl.connection_error); Istio's
            # STRICT listener finds no filter chain for plaintext (no_filter_chain_match).
            front.stats.connection_error.value += 1
            front.stats.no_filter_chain_match.value += 1
            self._refuse()
            return
        self._forget()
        front.adopter().adopt(raw)
        if head:
            raw.get_protocol().data_received(head)  # type: ignore[attr-defined]

    def _handshake(self, head: bytes) -> None:
        front = self._front
        raw = self._raw
        assert raw is not None
        material = front.identity.material
        if material is None:
            log.debug("inbound TLS refused: %s", "no workload certificate yet")
            front.stats.connection_error.value += 1
            self._refuse()
            return
        timeout = max(self._deadline - self._loop.time(), 0.001)
        layer = self._layer = TlsLayer(
            self._loop, material.server, server_side=True, timeout=timeout, done=self._done
        )
        raw.set_protocol(layer)
        layer.attach(raw, head)

    def _done(self, exc: BaseException | None) -> None:
        self._forget()
        front = self._front
        stats = front.stats
        layer = self._layer
        assert layer is not None
        if exc is not None:
            count_failure(stats, exc)
            log.debug("inbound TLS handshake failed: %s", exc)
            return
        material = front.identity.material
        domain = f"{SPIFFE}{material.trust_domain}/" if material is not None else SPIFFE
        if not any(uri.startswith(domain) for uri in uri_sans(layer.peercert)):
            stats.fail_verify_san.value += 1
            log.debug("inbound TLS refused: the client names no SPIFFE ID under %s", domain)
            layer.transport.abort()
            return
        stats.handshake.value += 1
        if layer.ssl_object.session_reused:
            stats.session_reused.value += 1
        front.adopter().adopt(layer.transport)
        layer.pump()
