"""Stats renderings: Envoy's text and JSON, Prometheus with Envoy's tags, ?filter=."""

from __future__ import annotations

import json
import math
import re

import pytest

from meshdev.common.histogram import ENVOY_QUANTILES, HistogramSnapshot
from meshdev.common.stattags import TagExtractor
from meshdev.sidecar.stats.formats import (
    PROMETHEUS_BOUNDS,
    BadFilter,
    compile_filter,
    format_number,
    render_json,
    render_prometheus,
    render_text,
)
from meshdev.sidecar.stats.store import IntervalReader, Store
from tests.sidecar.promtool import promtool_check

CLUSTERS = ("backend.v1", "inbound|8080", "backend.canary")


def populated_store() -> Store:
    s = Store()
    for i, c in enumerate(CLUSTERS, start=1):
        s.counter(f"cluster.{c}.upstream_rq_total").inc(12 * i)
        s.counter(f"cluster.{c}.upstream_rq_200").inc(10 * i)
        s.counter(f"cluster.{c}.upstream_rq_503").inc(2 * i)
        s.counter(f"cluster.{c}.upstream_rq_2xx").inc(10 * i)
        s.counter(f"cluster.{c}.upstream_rq_5xx").inc(2 * i)
        s.counter(f"cluster.{c}.upstream_rq_retry").inc(i)
        s.counter(f"cluster.{c}.retry.upstream_rq_503").inc(i)
        s.counter(f"cluster.{c}.upstream_rq_pending_overflow").inc(i)
        s.counter(f"cluster.{c}.outlier_detection.ejections_enforced_total").inc(i)
        s.gauge(f"cluster.{c}.upstream_rq_active").set(i)
        s.gauge(f"cluster.{c}.circuit_breakers.default.rq_open").set(1)
        s.gauge(f"cluster.{c}.outlier_detection.ejections_active").set(1)
        h = s.histogram(f"cluster.{c}.upstream_rq_time")
        for v in (0.3, 1.2, 7.0, 40.0, 2600.0):
            h.record(v * i)
    s.counter("vhost.backend.route.items.upstream_rq_total").inc(5)
    s.counter("vhost.backend.route.items.upstream_rq_504").inc(1)
    s.histogram("vhost.backend.route.items.upstream_rq_time").record(3.0)
    s.counter("http.ingress.rq_total").inc(4)
    s.counter("http.ingress.no_route").inc(1)
    s.counter("http.ingress.fault.aborts_injected").inc(1)
    s.counter("http_local_rate_limit.rate_limited").inc(1)
    s.counter("config.update_success").inc(1)
    s.gauge("cluster.backend.v1.membership_total").set(2)
    s.gauge('cluster.we"ird\\one.upstream_cx_active').set(1)
    s.histogram("cluster.backend.v2.upstream_rq_time")  # never recorded
    return s


# -- tag extraction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stat", "family", "labels"),
    [
        (
            "cluster.backend.v1.upstream_rq_total",
            "envoy_cluster_upstream_rq_total",
            {"envoy_cluster_name": "backend.v1"},
        ),
        (
            "cluster.inbound|8080.upstream_rq_total",
            "envoy_cluster_upstream_rq_total",
            {"envoy_cluster_name": "inbound|8080"},
        ),
        (
            "cluster.backend.v1.upstream_rq_503",
            "envoy_cluster_upstream_rq",
            {"envoy_response_code": "503", "envoy_cluster_name": "backend.v1"},
        ),
        (
            "cluster.backend.v1.upstream_rq_5xx",
            "envoy_cluster_upstream_rq_xx",
            {"envoy_response_code_class": "5", "envoy_cluster_name": "backend.v1"},
        ),
        (
            "cluster.a.b.c.circuit_breakers.default.rq_pending_open",
            "envoy_cluster_circuit_breakers_default_rq_pending_open",
            {"envoy_cluster_name": "a.b.c"},
        ),
        (
            "cluster.backend.canary.outlier_detection.ejections_active",
            "envoy_cluster_outlier_detection_ejections_active",
            {"envoy_cluster_name": "backend.canary"},
        ),
        (
            "vhost.backend.route.items.upstream_rq_200",
            "envoy_vhost_route_upstream_rq",
            {"envoy_response_code": "200", "envoy_virtual_host": "backend", "envoy_route": "items"},
        ),
        (
            "vhost.backend.default.route.items.v2.upstream_rq_time",
            "envoy_vhost_route_upstream_rq_time",
            {"envoy_virtual_host": "backend.default", "envoy_route": "items.v2"},
        ),
        (
            "http.inbound_0.0.0.0_15006.rq_total",
            "envoy_http_rq_total",
            {"envoy_http_conn_manager_prefix": "inbound_0.0.0.0_15006"},
        ),
        (
            "http.ingress.fault.delays_injected",
            "envoy_http_fault_delays_injected",
            {"envoy_http_conn_manager_prefix": "ingress"},
        ),
        (
            "http.ingress.downstream_rq_2xx",
            "envoy_http_downstream_rq_xx",
            {"envoy_response_code_class": "2", "envoy_http_conn_manager_prefix": "ingress"},
        ),
        (
            "ingress.http_local_rate_limit.rate_limited",
            "envoy_http_local_rate_limit_rate_limited",
            {"envoy_local_http_ratelimit_prefix": "ingress"},
        ),
        ("http_local_rate_limit.rate_limited", "envoy_http_local_rate_limit_rate_limited", {}),
        ("config.update_rejected", "envoy_config_update_rejected", {}),
        # Envoy's response-code categories of a cluster's requests.
        (
            "cluster.backend.v1.external.upstream_rq_200",
            "envoy_cluster_external_upstream_rq",
            {"envoy_response_code": "200", "envoy_cluster_name": "backend.v1"},
        ),
        (
            "cluster.backend.internal.upstream_rq_5xx",
            "envoy_cluster_internal_upstream_rq_xx",
            {"envoy_response_code_class": "5", "envoy_cluster_name": "backend"},
        ),
        (
            "cluster.backend.v1.external.upstream_rq_completed",
            "envoy_cluster_external_upstream_rq_completed",
            {"envoy_cluster_name": "backend.v1"},
        ),
        # The router's retry scope (answers it retried) is no part of the cluster's name.
        (
            "cluster.backend.v1.retry.upstream_rq_503",
            "envoy_cluster_retry_upstream_rq",
            {"envoy_response_code": "503", "envoy_cluster_name": "backend.v1"},
        ),
        (
            "cluster.inbound|8080.retry.upstream_rq_5xx",
            "envoy_cluster_retry_upstream_rq_xx",
            {"envoy_response_code_class": "5", "envoy_cluster_name": "inbound|8080"},
        ),
        # The listener's own, and its connection manager's per listener.
        (
            "listener.0.0.0.0_15006.downstream_cx_total",
            "envoy_listener_downstream_cx_total",
            {"envoy_listener_address": "0.0.0.0_15006"},
        ),
        (
            "listener.127.0.0.1_8000.http.ingress.downstream_rq_2xx",
            "envoy_listener_http_downstream_rq_xx",
            {
                "envoy_response_code_class": "2",
                "envoy_listener_address": "127.0.0.1_8000",
                "envoy_http_conn_manager_prefix": "ingress",
            },
        ),
        (
            "listener.[__]_80.http.inbound_0.0.0.0_15006.downstream_rq_completed",
            "envoy_listener_http_downstream_rq_completed",
            {
                "envoy_listener_address": "[__]_80",
                "envoy_http_conn_manager_prefix": "inbound_0.0.0.0_15006",
            },
        ),
        ("server.memory_allocated", "envoy_server_memory_allocated", {}),
        ("cluster_manager.cds.update_attempt", "envoy_cluster_manager_cds_update_attempt", {}),
    ],
)
def test_tag_extraction_follows_envoy_with_dotted_names(
    stat: str, family: str, labels: dict[str, str]
) -> None:
    tagged = TagExtractor().extract(stat)
    assert tagged.family == family
    assert dict(tagged.labels) == labels
    # Envoy's order: the response code (class) comes before the scope's names.
    assert [k for k, _ in tagged.labels] == list(labels)


def test_configured_names_win_over_the_suffix_scan() -> None:
    # A cluster whose own name contains a stat-like token would be cut early by the scan.
    stat = "cluster.legacy.upstream_pool.upstream_rq_total"
    assert dict(TagExtractor().extract(stat).labels) == {"envoy_cluster_name": "legacy"}
    hinted = TagExtractor(clusters=["legacy.upstream_pool"]).extract(stat)
    assert dict(hinted.labels) == {"envoy_cluster_name": "legacy.upstream_pool"}
    assert hinted.family == "envoy_cluster_upstream_rq_total"


def test_unknown_cluster_stat_falls_back_to_configured_name_then_first_token() -> None:
    stat = "cluster.backend.v1.some_new_stat"
    assert dict(TagExtractor(clusters=["backend.v1"]).extract(stat).labels) == {
        "envoy_cluster_name": "backend.v1"
    }
    assert dict(TagExtractor().extract(stat).labels) == {"envoy_cluster_name": "backend"}


def test_a_subset_named_like_a_category_keeps_its_name_when_configured() -> None:
    stat = "cluster.web.canary.external.upstream_rq_200"
    tagged = TagExtractor(clusters=["web", "web.canary"]).extract(stat)
    assert dict(tagged.labels) == {"envoy_response_code": "200", "envoy_cluster_name": "web.canary"}
    assert tagged.family == "envoy_cluster_external_upstream_rq"
    plain = TagExtractor(clusters=["web", "web.canary"]).extract(
        "cluster.web.canary.upstream_rq_200"
    )
    assert dict(plain.labels)["envoy_cluster_name"] == "web.canary"
    assert plain.family == "envoy_cluster_upstream_rq"
    retry = TagExtractor(clusters=["web", "web.retry"]).extract("cluster.web.retry.upstream_rq_200")
    assert (retry.family, dict(retry.labels)["envoy_cluster_name"]) == (
        "envoy_cluster_upstream_rq",
        "web.retry",
    )


def test_template_names_the_labels() -> None:
    tagged = TagExtractor().extract("cluster.backend.v1.upstream_rq_503")
    assert tagged.template == "cluster.<envoy_cluster_name>.upstream_rq_<envoy_response_code>"


# -- text -----------------------------------------------------------------------------------


def test_text_lists_counters_and_gauges_sorted_then_histograms_envoy_style() -> None:
    store = populated_store()
    text = render_text(store, {})
    lines = text.splitlines()
    assert "cluster.backend.v1.upstream_rq_total: 12" in lines
    assert "cluster.inbound|8080.upstream_rq_active: 2" in lines
    assert "cluster.backend.v2.upstream_rq_time: No recorded values" in lines
    scalar_names = [ln.split(": ")[0] for ln in lines if re.match(r"^\S+: -?\d+$", ln)]
    assert scalar_names == sorted(scalar_names)
    hist = next(ln for ln in lines if ln.startswith("cluster.backend.v1.upstream_rq_time: "))
    parts = hist.split(": ", 1)[1].split(" ")
    assert [p.split("(")[0] for p in parts] == [
        "P0",
        "P25",
        "P50",
        "P75",
        "P90",
        "P95",
        "P99",
        "P99.5",
        "P99.9",
        "P100",
    ]
    # No flush has happened: interval is nan, cumulative is the data (P50 of 5 values = 7 ms).
    p50 = parts[2]
    interval, cumulative = re.fullmatch(r"P50\((.*),(.*)\)", p50).groups()  # type: ignore[union-attr]
    assert interval == "nan"
    assert float(cumulative) == pytest.approx(7.0, rel=0.01)


def test_text_shows_interval_quantiles_from_the_flush() -> None:
    store = Store()
    h = store.histogram("cluster.backend.v1.upstream_rq_time")
    h.record(100.0)
    flush = IntervalReader(store)
    flush.read()
    for _ in range(3):
        h.record(5.0)
    intervals = {r.name: r.interval for r in flush.read().histograms}
    line = render_text(store, intervals).strip()
    p100 = line.split(" ")[-1]
    interval, cumulative = re.fullmatch(r"P100\((.*),(.*)\)", p100).groups()  # type: ignore[union-attr]
    assert float(interval) == pytest.approx(5.0, rel=0.01)
    assert float(cumulative) == pytest.approx(100.0, rel=0.01)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (math.nan, "nan"),
        (12.0, "12"),
        (12.5, "12.5"),
        (0.0, "0"),
        (1234.5678, "1235"),
        (0.0123456, "0.01235"),
    ],
)
def test_number_format(value: float, text: str) -> None:
    assert format_number(value) == text


# -- JSON -----------------------------------------------------------------------------------


def test_json_has_envoys_shape() -> None:
    store = populated_store()
    doc = json.loads(json.dumps(render_json(store, {}), allow_nan=False))
    stats = doc["stats"]
    scalars = {s["name"]: s["value"] for s in stats if "name" in s}
    assert scalars["cluster.backend.v1.upstream_rq_total"] == 12
    assert scalars["cluster.inbound|8080.circuit_breakers.default.rq_open"] == 1
    hist = stats[-1]["histograms"]
    assert hist["supported_quantiles"] == [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]
    computed = {c["name"]: c["values"] for c in hist["computed_quantiles"]}
    values = computed["cluster.backend.v1.upstream_rq_time"]
    assert len(values) == len(ENVOY_QUANTILES)
    assert all(v["interval"] is None for v in values)
    assert values[-1]["cumulative"] == pytest.approx(2600.0, rel=0.01)
    assert all(v["cumulative"] is None for v in computed["cluster.backend.v2.upstream_rq_time"])


def test_json_detailed_buckets_merge_across_sidecars() -> None:
    a, b = Store(), Store()
    for v in (1.0, 2.0, 3.0):
        a.histogram("cluster.backend.v1.upstream_rq_time").record(v)
    for v in (100.0, 200.0):
        b.histogram("cluster.backend.v1.upstream_rq_time").record(v)
    merged = HistogramSnapshot.empty()
    for store in (a, b):
        doc = json.loads(json.dumps(render_json(store, {}, detailed_buckets=True)))
        detail = doc["stats"][-1]["histograms"]["details"][0]
        triples = [(t["lower_bound"], t["width"], t["count"]) for t in detail["totals"]]
        merged = merged + HistogramSnapshot.from_buckets(triples, total=detail["sum"])
    assert merged.count == 5
    assert merged.quantile(0.5) == pytest.approx(3.0, rel=0.01)
    assert merged.quantile(1.0) == pytest.approx(200.0, rel=0.01)
    assert merged.sum == 306.0


# -- Prometheus -----------------------------------------------------------------------------


def prometheus_text() -> str:
    return render_prometheus(populated_store(), TagExtractor(clusters=CLUSTERS))


def test_prometheus_tags_like_envoy() -> None:
    text = prometheus_text()
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend.v1"} 12\n' in text
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080"} 24\n' in text
    assert (
        'envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="backend.v1"} 2\n'
        in text
    )
    assert (
        'envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",'
        'envoy_cluster_name="backend.canary"} 30\n' in text
    )
    assert (
        'envoy_vhost_route_upstream_rq_total{envoy_virtual_host="backend",envoy_route="items"} 5\n'
        in text
    )
    assert 'envoy_http_rq_total{envoy_http_conn_manager_prefix="ingress"} 4\n' in text
    # The answers retried: Envoy's retry family, on the cluster itself.
    assert (
        'envoy_cluster_retry_upstream_rq{envoy_response_code="503",'
        'envoy_cluster_name="backend.v1"} 1\n' in text
    )
    assert 'envoy_cluster_name="backend.v1.retry"' not in text
    # Label values are escaped.
    assert 'envoy_cluster_name="we\\"ird\\\\one"' in text


def test_prometheus_families_are_declared_once_and_contiguous() -> None:
    lines = prometheus_text().splitlines()
    declared = [ln.split()[2] for ln in lines if ln.startswith("# TYPE ")]
    assert len(declared) == len(set(declared))
    assert declared == sorted(declared)
    helps = [ln.split()[2] for ln in lines if ln.startswith("# HELP ")]
    assert helps == declared
    current = None
    for ln in lines:
        if ln.startswith("# TYPE "):
            current = ln.split()[2]
        elif not ln.startswith("#"):
            name = re.split(r"[{ ]", ln, maxsplit=1)[0]
            assert current is not None
            assert name == current or name in {
                f"{current}_bucket",
                f"{current}_sum",
                f"{current}_count",
            }


def test_prometheus_types_are_envoys() -> None:
    types = dict(
        ln.split()[2:4] for ln in prometheus_text().splitlines() if ln.startswith("# TYPE ")
    )
    assert types["envoy_cluster_upstream_rq_total"] == "counter"
    assert types["envoy_cluster_upstream_rq_time"] == "histogram"
    assert types["envoy_cluster_upstream_rq_active"] == "gauge"
    # As Envoy's /stats/prometheus: a counter is `counter` without `_total` too, and a gauge
    # `gauge` with it (source/server/admin/prometheus_stats.cc types by kind, never by name).
    assert types["envoy_cluster_upstream_rq_retry"] == "counter"
    assert types["envoy_cluster_upstream_rq"] == "counter"
    assert types["envoy_cluster_membership_total"] == "gauge"


def test_a_counter_and_a_gauge_in_one_family_are_untyped() -> None:
    store = Store()
    store.counter("cluster.a.upstream_rq_x").inc()
    store.gauge("cluster.b.upstream_rq_x").set(1)
    text = render_prometheus(store, TagExtractor(clusters=["a", "b"]))
    assert "# TYPE envoy_cluster_upstream_rq_x untyped" in text


def test_prometheus_histogram_buckets_are_cumulative_and_end_at_count() -> None:
    text = prometheus_text()
    pattern = re.compile(
        r'^envoy_cluster_upstream_rq_time_bucket\{envoy_cluster_name="backend\.v1",'
        r'le="([^"]+)"\} (\d+)$',
        re.M,
    )
    rows = pattern.findall(text)
    assert [le for le, _ in rows] == [
        *(str(int(b)) if float(b).is_integer() else str(b) for b in PROMETHEUS_BOUNDS),
        "+Inf",
    ]
    counts = [int(n) for _, n in rows]
    assert counts == sorted(counts)
    # Recorded 0.3, 1.2, 7, 40, 2600 ms.
    by_le = dict(zip([le for le, _ in rows], counts, strict=True))
    assert (by_le["0.25"], by_le["0.5"], by_le["5"], by_le["50"], by_le["2500"]) == (0, 1, 2, 4, 4)
    assert by_le["+Inf"] == 5
    assert 'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="backend.v1"} 5\n' in text
    assert 'envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="backend.v1"} 2648.5\n' in text


def test_prometheus_filter_applies_to_full_stat_names() -> None:
    text = render_prometheus(populated_store(), TagExtractor(), compile_filter(r"inbound\|"))
    samples = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert samples
    assert all('envoy_cluster_name="inbound|8080"' in ln for ln in samples)


def test_promtool_accepts_the_output() -> None:
    promtool_check(prometheus_text())


# -- filter ---------------------------------------------------------------------------------


def test_filter_selects_by_regex_search_in_text_and_json() -> None:
    store = populated_store()
    pattern = compile_filter(r"backend\.v1\.upstream_rq_(total|time)$")
    text = render_text(store, {}, pattern)
    assert [ln.split(":")[0] for ln in text.splitlines()] == [
        "cluster.backend.v1.upstream_rq_total",
        "cluster.backend.v1.upstream_rq_time",
    ]
    doc = render_json(store, {}, pattern)
    stats = doc["stats"]
    assert isinstance(stats, list)
    assert [s["name"] for s in stats[:-1]] == ["cluster.backend.v1.upstream_rq_total"]


def test_bad_filter_says_why() -> None:
    with pytest.raises(BadFilter, match=r"invalid filter regex '\(unclosed'"):
        compile_filter("(unclosed")
    assert compile_filter("") is None
    assert compile_filter(None) is None
