"""Mutual TLS between sidecars (Envoy's TLS transport socket, as Istio configures it): the
workload certificate's contexts, the inbound TLS handshake (STRICT, or told by the first bytes
under PERMISSIVE), the upstream handshake and its SPIFFE ID check, and the peer's identity
that authorization reads."""
