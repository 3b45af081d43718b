"""Reading sidecars off the wire: stream documents and Envoy's polled JSON into
`SidecarInterval`s (and folding them), config dumps into route tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshdev.common.histogram import HistogramSnapshot
from meshdev.telemetry.aggregation.sidecar_interval import SnapshotError, combine
from meshdev.telemetry.aggregation.topology import from_config_dump
from meshdev.telemetry.io.poll_reader import PollReader
from meshdev.telemetry.io.stream_reader import StreamReader
from meshdev.testing.synthetic_sidecar import SyntheticSidecar, sidecar_config
from tests.telemetry.support import Clock


def stream_doc(**overrides: Any) -> dict[str, Any]:
    clock = Clock()
    sc = SyntheticSidecar(
        sidecar_config("n", {"backend": {"items": {"backend": 1}}}, {}), clock=clock
    )
    sc.request("backend", "items", "backend", 200, 3.0, count=5)
    clock.advance(0.25)
    doc: dict[str, Any] = json.loads(json.dumps(sc.snapshot()))
    doc.update(overrides)
    return doc


def test_stream_document_parses_to_a_sidecar_interval() -> None:
    snap = StreamReader().parse(stream_doc(), received=5.0)
    assert snap.node == "n" and snap.config_version == 1 and snap.config_hash
    assert snap.interval_s == pytest.approx(0.25)
    assert snap.deltas["vhost.backend.route.items.upstream_rq_total"] == 5
    h = snap.histograms["vhost.backend.route.items.upstream_rq_time"]
    assert h.count == 5 and h.histogram().quantile(0.5) == pytest.approx(3.0, rel=0.01)
    assert h.quantiles is not None and h.quantiles["p50"] == pytest.approx(3.0, rel=0.01)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"counters": {"a": "12"}}, "counters.a: expected an integer"),
        ({"counter_deltas": [1, 2]}, "counter_deltas: expected an object"),
        ({"gauges": {"g": True}}, "gauges.g: expected an integer"),
        ({"interval_s": "soon"}, "interval_s: expected a number"),
        ({"histograms": {"h": {"interval": {"count": 1, "buckets": {}}}}}, "buckets"),
        ({"hosts": [{"cluster": "c", "address": "a", "port": "80"}]}, "port"),
        ({"breakers": [{"cluster": "c", "max_requests": 1.5}]}, "max_requests"),
    ],
)
def test_malformed_documents_are_rejected_with_the_place(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(SnapshotError, match=reason):
        StreamReader().parse(stream_doc(**overrides), received=0.0)


def test_bucket_contents_are_checked_when_read() -> None:
    bad = {"h": {"interval": {"count": 2, "sum": 3.0, "buckets": [[1.0, 0.5, 1], ["x", 1]]}}}
    h = StreamReader().parse(stream_doc(histograms=bad), 0.0).histograms["h"]
    with pytest.raises(SnapshotError, match="each must be"):
        _ = h.buckets


def host_doc(total: int, success: int, error: int) -> dict[str, Any]:
    return {
        "cluster": "backend",
        "address": "10.0.0.3",
        "port": 15006,
        "pod": "b-0",
        "ejected": False,
        "ejected_for": 0.0,
        "ejection_count": 0,
        "rq_active": 0,
        "rq_total": total,
        "rq_success": success,
        "rq_error": error,
    }


def test_host_totals_become_deltas_per_connection() -> None:
    reader = StreamReader()
    first = reader.parse(stream_doc(hosts=[host_doc(100, 90, 10)]), 0.0)
    second = reader.parse(stream_doc(hosts=[host_doc(130, 115, 15)]), 0.25)
    assert (first.hosts[0].rq_total, first.hosts[0].rq_error) == (0, 0)  # a baseline
    assert (second.hosts[0].rq_total, second.hosts[0].rq_success) == (30, 25)
    # A restarted sidecar's totals start over: what it counted since is the delta.
    restarted = reader.parse(stream_doc(hosts=[host_doc(4, 4, 0)]), 0.5)
    assert restarted.hosts[0].rq_total == 4
    reader.reset()
    assert reader.parse(stream_doc(hosts=[host_doc(9, 9, 0)]), 0.75).hosts[0].rq_total == 0


def test_combining_keeps_every_count_and_compacts_buckets() -> None:
    reader = StreamReader()
    snaps = [reader.parse(stream_doc(), float(i)) for i in range(300)]
    total = snaps[0]
    for s in snaps[1:]:
        total = combine(total, s)
    h = total.histograms["vhost.backend.route.items.upstream_rq_time"]
    assert total.deltas["vhost.backend.route.items.upstream_rq_total"] == 5 * 300
    assert h.count == sum(n for _, _, n in h.buckets) == 5 * 300
    assert len(h.buckets) <= 512 and h.quantiles is None
    assert total.interval_s == pytest.approx(0.25 * 300)
    assert total.parts == 300


# -- Envoy's /stats?format=json ---------------------------------------------------------------


def envoy_stats(
    values: dict[str, int], latencies: list[float], *, detailed: bool = True
) -> dict[str, Any]:
    cumulative = HistogramSnapshot.from_values(latencies)
    if detailed:
        hist: dict[str, Any] = {
            "supported_percentiles": [50, 99],
            "details": [
                {
                    "name": "cluster.backend.upstream_rq_time",
                    "totals": [
                        {"lower_bound": lo, "width": w, "count": n}
                        for lo, w, n in cumulative.bucket_data()
                    ],
                    "intervals": [],
                    "count": cumulative.count,
                    "sum": cumulative.sum,
                }
            ],
        }
    else:
        hist = {
            "supported_quantiles": [50, 99],
            "computed_quantiles": [
                {
                    "name": "cluster.backend.upstream_rq_time",
                    "values": [{"interval": 4.5, "cumulative": 4.0}, {"interval": None}],
                }
            ],
        }
    return {"stats": [*({"name": k, "value": v} for k, v in values.items()), {"histograms": hist}]}


def test_polls_give_deltas_and_interval_histograms() -> None:
    reader = PollReader()
    first = reader.parse(envoy_stats({"cluster.backend.upstream_rq_total": 10}, [1.0] * 10), 1.0)
    assert first.deltas == {} and first.interval_s == 0.0
    second = reader.parse(
        envoy_stats({"cluster.backend.upstream_rq_total": 25}, [1.0] * 10 + [80.0] * 15), 1.5
    )
    assert second.deltas == {"cluster.backend.upstream_rq_total": 15}
    assert second.interval_s == pytest.approx(0.5)
    h = second.histograms["cluster.backend.upstream_rq_time"]
    assert h.count == 15 and h.histogram().quantile(0.5) == pytest.approx(80.0, rel=0.01)


def test_summary_histograms_keep_envoys_interval_quantiles() -> None:
    doc = envoy_stats({}, [1.0], detailed=False)
    h = PollReader().parse(doc, 0.0).histograms["cluster.backend.upstream_rq_time"]
    assert (h.count, h.quantiles) == (0, {"p50": 4.5, "p99": None})


ENVOY_CLUSTERS = {
    "cluster_statuses": [
        {
            "name": "backend",
            "circuit_breakers": {
                "thresholds": [
                    {"max_connections": 100, "max_pending_requests": 7, "max_requests": 30},
                    {"priority": "HIGH", "max_requests": 999},
                ]
            },
            "host_statuses": [
                {
                    "address": {"socket_address": {"address": "10.1.0.2", "port_value": 8080}},
                    "stats": [
                        {"name": "rq_total", "value": "40"},
                        {"name": "rq_error", "value": "4"},
                        {"name": "rq_success", "value": "36"},
                        {"name": "rq_active", "type": "GAUGE", "value": "2"},
                    ],
                    "health_status": {"failed_outlier_check": True, "eds_health_status": "HEALTHY"},
                    "hostname": "backend-0",
                }
            ],
        }
    ]
}


def test_envoy_clusters_json_gives_hosts_and_breakers() -> None:
    values = {
        "cluster.backend.upstream_rq_active": 30,
        "cluster.backend.circuit_breakers.default.rq_open": 1,
        "cluster.backend.circuit_breakers.default.remaining_retries": 1,
    }
    reader = PollReader()
    info = {"node": {"id": "envoy-1"}}
    reader.parse(envoy_stats(values, []), 0.0, clusters=ENVOY_CLUSTERS, server_info=info)
    later = json.loads(json.dumps(ENVOY_CLUSTERS).replace('"40"', '"50"').replace('"36"', '"46"'))
    snap = reader.parse(envoy_stats(values, []), 1.0, clusters=later, server_info=info)
    assert snap.node == "envoy-1" and snap.config_version is None
    (h,) = snap.hosts
    assert (h.address, h.port, h.pod, h.ejected) == ("10.1.0.2", 8080, "backend-0", True)
    assert (h.rq_total, h.rq_success, h.rq_active) == (10, 10, 2)
    (b,) = snap.breakers
    assert (b.max_requests, b.max_pending_requests, b.max_retries) == (30, 7, 3)
    assert (b.rq_active, b.rq_open, b.rq_retry_active, b.cx_open) == (30, True, 2, False)


# -- route tables -----------------------------------------------------------------------------


def test_meshdev_config_dump_gives_routes_shares_features_and_local_clusters() -> None:
    cfg = sidecar_config(
        "a",
        {"backend": {"items": {"backend.v1": 3, "backend.v2": 1}}},
        {},
        faults=[("backend", "items")],
    )
    doc = json.loads(json.dumps({"version": 1, "config": cfg.model_dump(mode="json")}))
    doc["config"]["listeners"].append(
        {"name": "inbound", "kind": "inbound", "address": "0.0.0.0", "port": 1, "cluster": "x"}
    )
    topo = from_config_dump(doc)
    assert topo is not None
    (r,) = topo.routes
    assert r.key == ("backend", "items")
    assert dict(r.clusters) == {"backend.v1": 0.75, "backend.v2": 0.25}
    assert r.abort and not r.rate_limit
    assert topo.by_cluster["backend.v2"] == ((("backend", "items"), 0.25),)
    assert topo.local_clusters == {"x"}
    assert topo.by_feature["FI"] == (("backend", "items"),)


def test_envoy_config_dump_uses_stat_prefixes() -> None:
    doc = {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": [
                    {
                        "route_config": {
                            "virtual_hosts": [
                                {
                                    "name": "web",
                                    "routes": [
                                        {
                                            "name": "r0",
                                            "route": {
                                                "weighted_clusters": {
                                                    "clusters": [
                                                        {"name": "a", "weight": 80},
                                                        {"name": "b", "weight": {"value": 20}},
                                                    ]
                                                }
                                            },
                                            "stat_prefix": "home",
                                        },
                                        {"route": {"cluster": "c"}},  # no name: no stats
                                    ],
                                }
                            ]
                        }
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "static_clusters": [{"cluster": {"name": "a"}}],
            },
        ]
    }
    topo = from_config_dump(doc)
    assert topo is not None
    assert [(r.key, r.clusters) for r in topo.routes] == [
        (("web", "home"), (("a", 0.8), ("b", 0.2)))
    ]
    assert set(topo.clusters) == {"a", "b"}


def test_unknown_config_dump_shapes_give_no_topology() -> None:
    assert from_config_dump({"something": "else"}) is None
    assert from_config_dump([1, 2]) is None
