"""The dashboard's own views as a Grafana dashboard over the Prometheus that scrapes the mesh
(`prometheus:` in mesh.yaml, docs/observability.md): per-route requests/s, success and latency
percentiles, breaker overflows per cluster, ejections, retries, rate-limited and faulted
requests, and config reloads as annotations.

Every query reads the sidecars' /stats/prometheus names and tags (Envoy's: `envoy_cluster_name`,
`envoy_virtual_host`, `envoy_route`, ...) and selects the mesh by the `namespace` label the
scrape targets carry. The datasource and the namespace are dashboard variables, so one import
serves any Prometheus and any mesh. Pure: a mesh name in, a JSON document out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Grafana 10/11's dashboard schema.
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace="$namespace"'
WINDOW = "$__rate_interval"


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""


def _route(metric: str) -> str:
    return f"sum by (envoy_virtual_host, envoy_route) (rate({metric}{{{NS}}}[{WINDOW}]))"


def _cluster(metric: str) -> str:
    return f"sum by (envoy_cluster_name) (rate({metric}{{{NS}}}[{WINDOW}]))"


ROUTE = "{{envoy_virtual_host}}/{{envoy_route}}"
CLUSTER = "{{envoy_cluster_name}}"


def panels() -> tuple[Panel, ...]:
    latency = "envoy_vhost_route_upstream_rq_time_bucket"
    return (
        Panel(
            "Requests per second by route",
            "reqps",
            (Query(_route("envoy_vhost_route_downstream_rq_total"), ROUTE),),
            "Every request a route took, local answers (faults, 429s) included.",
        ),
        Panel(
            "Success by route",
            "percentunit",
            (
                Query(
                    f"1 - (sum by (envoy_virtual_host, envoy_route) (rate("
                    f'envoy_vhost_route_downstream_rq_xx{{{NS},envoy_response_code_class="5"}}'
                    f"[{WINDOW}])) or {_route('envoy_vhost_route_downstream_rq_total')} * 0)"
                    f" / {_route('envoy_vhost_route_downstream_rq_total')}",
                    ROUTE,
                ),
            ),
            "The share of requests not answered with a 5xx.",
        ),
        Panel(
            "Latency by route (p50, p99)",
            "ms",
            tuple(
                Query(
                    f"histogram_quantile({q}, sum by (le, envoy_virtual_host, envoy_route) "
                    f"(rate({latency}{{{NS}}}[{WINDOW}])))",
                    f"{ROUTE} p{round(q * 100)}",
                )
                for q in (0.5, 0.99)
            ),
            "Upstream time per route, from Envoy's histogram buckets.",
        ),
        Panel(
            "Circuit breaker overflows by cluster",
            "reqps",
            (
                Query(_cluster("envoy_cluster_upstream_rq_pending_overflow"), f"{CLUSTER} pending"),
                Query(_cluster("envoy_cluster_upstream_cx_overflow"), f"{CLUSTER} connections"),
                Query(_cluster("envoy_cluster_upstream_rq_retry_overflow"), f"{CLUSTER} retries"),
            ),
            "Requests refused at once (503 UO) because a breaker's limit was reached.",
        ),
        Panel(
            "Hosts ejected by outlier detection",
            "short",
            (
                Query(
                    f"sum by (envoy_cluster_name) "
                    f"(envoy_cluster_outlier_detection_ejections_active{{{NS}}})",
                    CLUSTER,
                ),
            ),
            "Hosts out of their cluster's balancing right now (summed over the callers).",
        ),
        Panel(
            "Retries by cluster",
            "reqps",
            (Query(_cluster("envoy_cluster_upstream_rq_retry"), CLUSTER),),
        ),
        Panel(
            "Rate-limited and faulted requests",
            "reqps",
            (
                Query(
                    f"sum by (envoy_http_conn_manager_prefix) (rate("
                    f"envoy_http_local_rate_limit_rate_limited{{{NS}}}[{WINDOW}]))",
                    "rate limited ({{envoy_http_conn_manager_prefix}})",
                ),
                Query(
                    f"sum by (envoy_http_conn_manager_prefix) (rate("
                    f"envoy_http_fault_aborts_injected{{{NS}}}[{WINDOW}]))",
                    "fault aborts ({{envoy_http_conn_manager_prefix}})",
                ),
                Query(
                    f"sum by (envoy_http_conn_manager_prefix) (rate("
                    f"envoy_http_fault_delays_injected{{{NS}}}[{WINDOW}]))",
                    "fault delays ({{envoy_http_conn_manager_prefix}})",
                ),
            ),
        ),
    )


RELOADS = f"changes(envoy_config_version{{{NS}}}[1m]) > 0"


def _panel_json(index: int, panel: Panel) -> dict[str, Any]:
    width = 12
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": (index % 2) * width, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend,
            }
            for i, q in enumerate(panel.queries)
        ],
    }


def dashboard(mesh: str) -> dict[str, Any]:
    """The dashboard document (import it, or provision it), its namespace defaulting to
    `mesh`."""
    return {
        "uid": f"meshdev-{mesh}"[:40],
        "title": f"meshdev: {mesh}",
        "tags": ["meshdev", "envoy"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "time": {"from": "now-15m", "to": "now"},
        "refresh": "5s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "namespace",
                    "label": "Mesh",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": "label_values(envoy_config_version, namespace)",
                    "current": {"text": mesh, "value": mesh},
                    "refresh": 2,
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Config reloads",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "expr": RELOADS,
                    # Grafana fills a title from the series' labels only (not its value,
                    # which here counts changes anyway): the pod, and its service as a tag.
                    "titleFormat": "config reloaded on {{pod}}",
                    "tagKeys": "service",
                    "iconColor": "blue",
                }
            ]
        },
        "panels": [_panel_json(i, p) for i, p in enumerate(panels())],
    }


def queries(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression the dashboard runs: panels' targets and annotations."""
    out = [t["expr"] for p in document["panels"] for t in p["targets"]]
    out += [a["expr"] for a in document["annotations"]["list"]]
    return out
