"""Tracing: mesh.yaml's `tracing:` as each HTTP connection manager's `tracing` block, and the
collector as a cluster of its own (Envoy's tracers post to a cluster, not a URL).

One connection manager takes one tracer: the Zipkin one (`envoy.tracers.zipkin`, v2 JSON, W3C
and B3 propagation as meshdev does, 128-bit trace ids, a span per hop side rather than a shared
one) when `zipkin` is given, else the OpenTelemetry one (`envoy.tracers.opentelemetry` over
OTLP/HTTP). What Envoy does differently is noted: it makes one CLIENT span per outbound request
(not one per try), and it keeps no spans of its own for `meshdev traces` to read.
"""

from __future__ import annotations

from meshdev.bridges.envoy import proto
from meshdev.bridges.envoy.clusters import is_ip
from meshdev.bridges.envoy.notes import Notes
from meshdev.bridges.envoy.proto import Json
from meshdev.common import sidecar_config as sc

ZIPKIN_CONFIG = "envoy.config.trace.v3.ZipkinConfig"
OTEL_CONFIG = "envoy.config.trace.v3.OpenTelemetryConfig"
ZIPKIN_CLUSTER = "zipkin"
OTLP_CLUSTER = "opentelemetry_collector"
# How long Envoy's OpenTelemetry tracer waits for the collector's answer (meshdev: 5 s).
OTLP_TIMEOUT = 5.0


def hcm_tracing(cfg: sc.SidecarConfig, notes: Notes) -> Json | None:
    """The connection manager's `tracing` block, or None when nothing is traced or sent."""
    t = cfg.tracing
    if t.sampling <= 0:
        return None
    if t.zipkin is None and t.otlp is None:
        notes.add(
            "tracing",
            "meshdev's sidecars keep their spans for `meshdev traces`; Envoy keeps none and "
            "makes spans only for a collector: give tracing.zipkin or tracing.otlp",
        )
        return None
    notes.add(
        "tracing",
        "Envoy makes one CLIENT span per outbound request, where meshdev makes one per try "
        "(retry.attempt); its spans carry Envoy's own tags, without meshdev's route_name",
    )
    out: Json = {"random_sampling": {"value": t.sampling}}
    if t.zipkin is not None:
        host, _, path = sc.collector_address(t.zipkin)
        out["provider"] = {
            "name": "envoy.tracers.zipkin",
            "typed_config": proto.typed(
                ZIPKIN_CONFIG,
                {
                    "collector_cluster": ZIPKIN_CLUSTER,
                    "collector_endpoint": path,
                    "collector_endpoint_version": "HTTP_JSON",
                    "collector_hostname": host,
                    "trace_id_128bit": True,
                    "shared_span_context": False,
                    "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION",
                },
            ),
        }
        if t.otlp is not None:
            notes.add(
                "tracing.otlp",
                "an Envoy connection manager has one tracer: the Zipkin one is configured, "
                "and spans go to tracing.zipkin only",
            )
        return out
    assert t.otlp is not None
    out["provider"] = {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": proto.typed(
            OTEL_CONFIG,
            {
                "http_service": {
                    "http_uri": {
                        "uri": t.otlp,
                        "cluster": OTLP_CLUSTER,
                        "timeout": proto.duration(OTLP_TIMEOUT),
                    }
                },
                "service_name": cfg.service or "ingress",
            },
        ),
    }
    return out


def collector_clusters(cfg: sc.SidecarConfig) -> list[Json]:
    """The cluster the configured tracer posts to (none when nothing is sent)."""
    t = cfg.tracing
    if t.sampling <= 0:
        return []
    if t.zipkin is not None:
        name, url = ZIPKIN_CLUSTER, t.zipkin
    elif t.otlp is not None:
        name, url = OTLP_CLUSTER, t.otlp
    else:
        return []
    host, port, _ = sc.collector_address(url)
    endpoint = {"endpoint": {"address": proto.socket_address(host, port)}}
    return [
        {
            "name": name,
            "type": "STATIC" if is_ip(host) else "STRICT_DNS",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
        }
    ]
