"""Envoy's names for the policies meshdev borrows: mesh.yaml and the per-sidecar config take
the same words, so both models type them with these."""

from __future__ import annotations

from typing import Final, Literal

# envoy.config.cluster.v3.Cluster.LbPolicy, lower-cased as Istio writes them.
LbPolicy = Literal["round_robin", "least_request", "random", "ring_hash"]
# envoy.config.route.v3.RetryPolicy.retry_on: the conditions meshdev implements.
RetryOn = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "retriable-status-codes",
    # Envoy's x-envoy-retry-grpc-on conditions, read from the answer's grpc-status.
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]
# A service's protocol, as Istio's port protocol selects the listener's filter: `http`,
# `http2` and `grpc` get the HTTP connection manager (the last two reach their endpoints over
# h2c, as Istio's http2_protocol_options), `tcp` Envoy's tcp_proxy.
ServiceProtocol = Literal["http", "http2", "grpc", "tcp"]
# The protocols whose endpoints are called over HTTP/2.
HTTP2_PROTOCOLS: frozenset[str] = frozenset({"http2", "grpc"})


# gRPC's status names by code (grpc/status.h; Istio's grpcStatus spells them so).
GRPC_STATUS_NAMES: Final = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
