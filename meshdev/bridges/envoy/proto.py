"""Envoy's v3 API as plain JSON: the few value shapes every part of a bootstrap uses.

The exporter writes dicts, never protobuf messages (the protos are a test-time dependency:
tests/bridges/envoy parses every bootstrap with them). These helpers produce exactly the proto3
JSON mapping of the messages they name, so what YAML/JSON a user gets is what protobuf reads.
"""

from __future__ import annotations

import math
from typing import Any

Json = dict[str, Any]

# Where each typed_config's message lives (type.googleapis.com/<name>).
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
LOCAL_RATELIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
RBAC = "envoy.extensions.filters.http.rbac.v3.RBAC"
UPSTREAM_HTTP = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
STDOUT_LOG = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
FILE_LOG = "envoy.extensions.access_loggers.file.v3.FileAccessLog"
ORIGINAL_DST = "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TLS_INSPECTOR = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

# The names Envoy registers these extensions under (filters are looked up by type, but the
# names show in config_dump and key typed_per_filter_config).
HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER = "envoy.filters.http.router"
FAULT_FILTER = "envoy.filters.http.fault"
LOCAL_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
RBAC_FILTER = "envoy.filters.http.rbac"


def typed(type_name: str, body: Json | None = None) -> Json:
    """A google.protobuf.Any in JSON: the type URL beside the message's own fields."""
    return {"@type": f"type.googleapis.com/{type_name}", **(body or {})}


def duration(seconds: float) -> str:
    """google.protobuf.Duration's JSON form, to the nanosecond: 0.3 -> "0.3s", 15 -> "15s"."""
    nanos = round(seconds * 1e9)
    whole, frac = divmod(nanos, 10**9)
    if not frac:
        return f"{whole}s"
    return f"{whole}.{frac:09d}".rstrip("0") + "s"


def seconds(value: str) -> float:
    """The inverse of `duration`, for readers of what we wrote."""
    return float(value.removesuffix("s"))


def socket_address(address: str, port: int) -> Json:
    return {"socket_address": {"address": address, "port_value": port}}


# envoy.type.v3.FractionalPercent's denominators, in parts of each.
_DENOMINATORS = (("HUNDRED", 1), ("TEN_THOUSAND", 100), ("MILLION", 10_000))


def fractional_percent(percent: float) -> tuple[Json, bool]:
    """`percent` (0-100) as a FractionalPercent with the coarsest denominator that holds it
    exactly; False with it when even a millionth does not (then it is rounded to one)."""
    for name, scale in _DENOMINATORS:
        scaled = percent * scale
        if math.isclose(scaled, round(scaled), rel_tol=0, abs_tol=1e-9):
            return {"numerator": round(scaled), "denominator": name}, True
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}, False


def percent_of(fraction: Json) -> float:
    """A FractionalPercent (JSON) back as a percent, 0-100."""
    scale = dict(_DENOMINATORS)[fraction.get("denominator", "HUNDRED")]
    return float(fraction.get("numerator", 0)) / scale
