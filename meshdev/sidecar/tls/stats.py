"""TLS stats under Envoy's names (its TLS transport socket's `ssl.*` scope).

Listener side, `listener.<address>_<port>.` (Envoy's listener scope, e.g.
`listener.0.0.0.0_15006.ssl.handshake`): `ssl.handshake`, `ssl.session_reused`,
`ssl.connection_error` (any failed handshake but a failed verification: a reset, garbage, a
timeout, and plaintext on a TLS-only listener, as Envoy counts it there), `ssl.fail_verify_error`
(the chain does not lead to the mesh's CA, or has expired), `ssl.fail_verify_no_cert` (no
client certificate where one is required, as it always is here), `ssl.fail_verify_san` (the
client's certificate names no SPIFFE ID of this mesh's trust domain), `ssl.no_certificate`
(handshakes that succeeded without a client certificate: always 0 here, kept for
dashboards written against Envoy); and `no_filter_chain_match`, what Istio's STRICT listener
(tls_inspector + TLS-only filter chains) counts for a plaintext connection it refuses.

Cluster side, `cluster.<name>.ssl.`: `handshake`, `session_reused`, `connection_error`,
`fail_verify_error`, `fail_verify_san` (the endpoint's SPIFFE ID is not one the cluster
accepts). Each set is made the first time TLS is asked of its listener or cluster, so a
plaintext mesh shows none of them.
"""

from __future__ import annotations

import ssl

from meshdev.sidecar.stats.sets import listener_prefix
from meshdev.sidecar.stats.store import Counter, Store


class HandshakeStats:
    """What both sides count."""

    __slots__ = (
        "connection_error",
        "fail_verify_error",
        "fail_verify_san",
        "handshake",
        "session_reused",
    )

    def __init__(self, store: Store, prefix: str) -> None:
        p = prefix + "ssl."
        self.handshake: Counter = store.counter(p + "handshake")
        self.session_reused: Counter = store.counter(p + "session_reused")
        self.connection_error: Counter = store.counter(p + "connection_error")
        self.fail_verify_error: Counter = store.counter(p + "fail_verify_error")
        self.fail_verify_san: Counter = store.counter(p + "fail_verify_san")


class ListenerTlsStats(HandshakeStats):
    __slots__ = ("fail_verify_no_cert", "no_certificate", "no_filter_chain_match")

    def __init__(self, store: Store, address: str, port: int) -> None:
        prefix = listener_prefix(address, port)
        super().__init__(store, prefix)
        self.fail_verify_no_cert: Counter = store.counter(prefix + "ssl.fail_verify_no_cert")
        self.no_certificate: Counter = store.counter(prefix + "ssl.no_certificate")
        self.no_filter_chain_match: Counter = store.counter(prefix + "no_filter_chain_match")


class ClusterTlsStats(HandshakeStats):
    __slots__ = ()

    def __init__(self, store: Store, cluster: str) -> None:
        super().__init__(store, f"cluster.{cluster}.")


def count_failure(stats: HandshakeStats, exc: BaseException) -> None:
    """Charge a failed handshake to the stat Envoy counts it under."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        stats.fail_verify_error.value += 1
    elif (
        isinstance(stats, ListenerTlsStats)
        and isinstance(exc, ssl.SSLError)
        and exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    ):
        stats.fail_verify_no_cert.value += 1
    else:
        stats.connection_error.value += 1
