"""Envoy's defaults for the settings meshdev borrows from it, written once.

mesh.yaml's model (meshdev.config.model), the per-sidecar config (common/sidecar_config.py),
the data plane and the dashboard's reading of a real Envoy all fall back to these, so a mesh
that leaves a setting out behaves as Envoy would. Each group names the Envoy API field its
values are the documented defaults of (envoy.config.* v3), so they can be checked there.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# envoy.config.cluster.v3.CircuitBreakers.Thresholds (priority DEFAULT): max_connections,
# max_pending_requests, max_requests, max_retries.
MAX_CONNECTIONS: Final = 1024
MAX_PENDING_REQUESTS: Final = 1024
MAX_REQUESTS: Final = 1024
MAX_RETRIES: Final = 3
# The same, by threshold name: what Envoy's /clusters?format=json calls them.
CIRCUIT_BREAKER_THRESHOLDS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "max_connections": MAX_CONNECTIONS,
        "max_pending_requests": MAX_PENDING_REQUESTS,
        "max_requests": MAX_REQUESTS,
        "max_retries": MAX_RETRIES,
    }
)

# envoy.config.cluster.v3.OutlierDetection: consecutive_5xx, interval (s),
# base_ejection_time (s), max_ejection_percent.
CONSECUTIVE_5XX: Final = 5
OUTLIER_INTERVAL: Final = 10.0
BASE_EJECTION_TIME: Final = 30.0
# An int, as it always was: the published JSON Schema shows the default as `10`.
MAX_EJECTION_PERCENT: Final = 10

# envoy.config.cluster.v3.Cluster.CommonLbConfig.healthy_panic_threshold (%): with fewer of a
# cluster's hosts healthy than this, its load balancer picks among all of them.
HEALTHY_PANIC_THRESHOLD: Final = 50.0

# envoy.config.cluster.v3.Cluster.connect_timeout (s).
CONNECT_TIMEOUT: Final = 5.0

# envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.idle_timeout (s): a connection with
# no bytes either way for this long is closed; 0 disables it.
TCP_IDLE_TIMEOUT: Final = 3600.0

# envoy.config.route.v3.RouteAction.timeout (s): covers every try; 0 disables it.
ROUTE_TIMEOUT: Final = 15.0

# envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
# .stream_idle_timeout (s): a stream with no bytes either way for this long is reset (an
# upgraded WebSocket connection included: the route timeout stops at its 101); 0 disables it.
STREAM_IDLE_TIMEOUT: Final = 300.0

# envoy.config.route.v3.RetryPolicy.num_retries: retries after the first try.
NUM_RETRIES: Final = 1
# envoy.config.route.v3.RetryPolicy.RetryBackOff: base_interval 25 ms, max_interval 10x it.
RETRY_BASE_INTERVAL: Final = 0.025
RETRY_MAX_INTERVAL: Final = 10 * RETRY_BASE_INTERVAL

# envoy.config.core.v3.HttpProtocolOptions.max_headers_count, and
# envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
# .max_request_headers_kb (60 KiB).
MAX_HEADERS: Final = 100
MAX_HEADER_BYTES: Final = 60 * 1024
