"""Envoy's names for the policies meshdev borrows: mesh.yaml and the per-sidecar config take
the same words, so both models type them with these."""

from __future__ import annotations

from typing import Literal

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
]
# A service's protocol, as Istio's port protocol selects the listener's filter: `http` gets the
# HTTP connection manager, `tcp` Envoy's tcp_proxy. `http2` and `grpc` will join them.
ServiceProtocol = Literal["http", "tcp"]
