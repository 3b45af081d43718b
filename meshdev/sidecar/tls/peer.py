"""The identity of a connection's peer: the URI SAN of the certificate it presented.

The HTTP filters (authorization) read it from the transport the request came on, so they need
nothing of how the handshake was made: a plaintext connection has no peer identity.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

SPIFFE = "spiffe://"


def uri_sans(cert: dict[str, Any]) -> tuple[str, ...]:
    """The URI subject alternative names of a certificate as `SSLObject.getpeercert()`
    returns it (validated, decoded form)."""
    sans: Iterable[tuple[str, str]] = cert.get("subjectAltName", ())
    return tuple(value for kind, value in sans if kind == "URI")


def peer_spiffe_id(transport: asyncio.BaseTransport) -> str | None:
    """The verified SPIFFE ID of the peer on a TLS transport; None on plaintext or when the
    peer presented no certificate."""
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    # asyncio's TLS transports, and the sidecar's (tls/layer.py), keep the decoded certificate:
    # no decoding per request.
    cert = transport.get_extra_info("peercert")
    if cert is None:
        cert = ssl_object.getpeercert()
    if not cert:
        return None
    return next((uri for uri in uri_sans(cert) if uri.startswith(SPIFFE)), None)


def peer_principal(transport: asyncio.BaseTransport) -> str | None:
    """Istio's `source.principal`: the peer's SPIFFE ID without the scheme
    (cluster.local/ns/<mesh>/sa/<service>), or None."""
    spiffe = peer_spiffe_id(transport)
    return None if spiffe is None else spiffe[len(SPIFFE) :]
