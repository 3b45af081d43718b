"""Upstream mutual TLS (Istio's ISTIO_MUTUAL on a cluster): every connection to one of the
cluster's endpoints is TLS, with the workload certificate's client context in force when it
opens, and is used only if the endpoint's certificate names one of the cluster's accepted
SPIFFE IDs (Envoy's match_typed_subject_alt_names).

A refused endpoint is a connect failure to its pool, like a refused TCP connect: the request
answers 503 UF (or is retried) and outlier detection hears of it. No certificate yet is one
too. TLS 1.3 session tickets are kept per endpoint, so the next connection to it resumes
(no signatures, no certificates sent) unless the contexts were rotated since; the endpoint's
SPIFFE ID, which a resumed session carries over, is checked all the same. Pools keep their
connections, so handshakes stay off most requests' path anyway.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TypeVar

from meshdev.common.sidecar_config import UpstreamTls
from meshdev.sidecar.tls.identity import NO_CERT_YET, WorkloadIdentity
from meshdev.sidecar.tls.layer import TlsLayer
from meshdev.sidecar.tls.material import Alpn
from meshdev.sidecar.tls.peer import SPIFFE, uri_sans
from meshdev.sidecar.tls.stats import ClusterTlsStats, count_failure

log = logging.getLogger(__name__)

P = TypeVar("P", bound=asyncio.Protocol)


class TlsConnectError(ConnectionError):
    """No usable TLS connection to the endpoint (an OSError, as a refused connect is)."""


class TlsOrigin:
    """How one cluster's connections of one kind (HTTP/1.1, HTTP/2 or tcp_proxy: their ALPN)
    are made TLS."""

    __slots__ = ("_accepted", "_alpn", "_identity", "_sessions", "config", "stats")

    def __init__(
        self,
        identity: WorkloadIdentity,
        config: UpstreamTls,
        stats: ClusterTlsStats,
        alpn: Alpn,
    ) -> None:
        self._identity = identity
        self.config = config
        self.stats = stats
        self._alpn = alpn
        self._accepted = frozenset(config.spiffe_ids)
        # The TLS object of the last connection per endpoint: its session (with the ticket the
        # endpoint sent after the handshake) resumes the next one.
        self._sessions: dict[tuple[str, int], ssl.SSLObject] = {}

    def _session(self, context: ssl.SSLContext, key: tuple[str, int]) -> ssl.SSLSession | None:
        last = self._sessions.get(key)
        if last is None:
            return None
        if last.context is not context:
            # Rotated since: a session belongs to the context that made it.
            del self._sessions[key]
            return None
        session = last.session
        return session if session is not None and session.has_ticket else None

    async def connect(
        self, loop: asyncio.AbstractEventLoop, factory: Callable[[], P], address: str, port: int
    ) -> tuple[asyncio.Transport, P]:
        """Connect, handshake, check the endpoint's SPIFFE ID; then `factory()`'s protocol
        gets the decrypted stream. Raises OSError (TlsConnectError for TLS's refusals)."""
        material = self._identity.material
        if material is None:
            raise TlsConnectError(f"{address}:{port}: {NO_CERT_YET}")
        context = material.client(self._alpn)
        key = (address, port)
        outcome: asyncio.Future[BaseException | None] = loop.create_future()

        def done(exc: BaseException | None) -> None:
            if not outcome.done():
                outcome.set_result(exc)

        layer = TlsLayer(
            loop,
            context,
            server_side=False,
            timeout=self._identity.handshake_timeout,
            done=done,
            session=self._session(context, key),
        )
        await loop.create_connection(lambda: layer, address, port)
        try:
            exc = await outcome
        except BaseException:
            # Cancelled (the pool's connect timeout): the half-made connection goes.
            layer.transport.abort()
            raise
        stats = self.stats
        if exc is not None:
            count_failure(stats, exc)
            raise TlsConnectError(f"{address}:{port}: TLS handshake failed: {exc}") from exc
        names = [uri for uri in uri_sans(layer.peercert) if uri.startswith(SPIFFE)]
        if not self._accepted.intersection(names):
            stats.fail_verify_san.value += 1
            layer.transport.abort()
            named = ", ".join(names) or "no SPIFFE ID"
            raise TlsConnectError(
                f"{address}:{port}: the endpoint is {named}, not one of "
                f"{', '.join(sorted(self._accepted))}"
            )
        if layer.closed:
            stats.connection_error.value += 1
            raise TlsConnectError(f"{address}:{port}: closed right after the TLS handshake")
        stats.handshake.value += 1
        ssl_object = layer.ssl_object
        if ssl_object.session_reused:
            stats.session_reused.value += 1
        self._sessions[key] = ssl_object
        protocol = factory()
        layer.start(protocol)
        return layer.transport, protocol


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    address: str,
    port: int,
    tls: TlsOrigin | None,
) -> tuple[asyncio.Transport, P]:
    """An upstream connection: plain TCP, or TLS as `tls` says. Raises OSError."""
    if tls is None:
        return await loop.create_connection(factory, address, port)
    return await tls.connect(loop, factory, address, port)
