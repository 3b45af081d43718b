"""Stat names -> what they count, and the stream filter that asks for exactly those."""

from __future__ import annotations

import re

import pytest

from meshdev.telemetry.aggregation.statnames import (
    CLASS,
    CLUSTER,
    CODE,
    FLAG,
    GRPC_CODE,
    LISTENER,
    RETRY,
    ROUTE,
    STREAM_FILTER,
    TIME,
    TOTAL,
    UPG_ACTIVE,
    UPG_TOTAL,
    StatNames,
)


@pytest.mark.parametrize(
    ("name", "meaning"),
    [
        ("vhost.backend.route.items.upstream_rq_total", (ROUTE, ("backend", "items"), TOTAL, "")),
        ("vhost.backend.route.items.upstream_rq_503", (ROUTE, ("backend", "items"), CODE, "503")),
        ("vhost.backend.route.items.upstream_rq_5xx", (ROUTE, ("backend", "items"), CLASS, "5")),
        ("vhost.backend.route.items.upstream_rq_time", (ROUTE, ("backend", "items"), TIME, "")),
        ("vhost.backend.route.items.upstream_rq_retry", (ROUTE, ("backend", "items"), RETRY, "")),
        (
            "vhost.backend.route.items.upstream_rq_timeout",
            (ROUTE, ("backend", "items"), FLAG, "UT"),
        ),
        (
            "vhost.backend.route.items.downstream_cx_upgrades_total",
            (ROUTE, ("backend", "items"), UPG_TOTAL, ""),
        ),
        (
            "vhost.backend.route.items.downstream_cx_upgrades_active",
            (ROUTE, ("backend", "items"), UPG_ACTIVE, ""),
        ),
        ("vhost.backend.route.items.grpc.14", (ROUTE, ("backend", "items"), GRPC_CODE, "14")),
        # Dotted and piped cluster names stay whole.
        ("cluster.backend.v1.upstream_rq_200", (CLUSTER, "backend.v1", CODE, "200")),
        ("cluster.inbound|8080.upstream_rq_total", (CLUSTER, "inbound|8080", TOTAL, "")),
        ("cluster.backend.v1.upstream_cx_none_healthy", (CLUSTER, "backend.v1", FLAG, "UH")),
        ("http.outbound.no_route", (LISTENER, "outbound", FLAG, "NR")),
        ("http.ingress.fault.delays_injected", (LISTENER, "ingress", FLAG, "DI")),
        ("http_local_rate_limit.rate_limited", (LISTENER, "", FLAG, "RL")),
    ],
)
def test_names_mean_what_envoy_means(name: str, meaning: tuple[object, ...]) -> None:
    m = StatNames().meaning(name)
    assert m is not None and m[:4] == meaning


def test_overflows_are_breaker_trips() -> None:
    names = StatNames()
    trips = {
        stat: (m := names.meaning(f"cluster.c.{stat}")) is not None and m[4]
        for stat in ("upstream_rq_pending_overflow", "upstream_rq_retry_overflow",
                     "upstream_cx_overflow", "upstream_rq_timeout")
    }  # fmt: skip
    assert trips == {
        "upstream_rq_pending_overflow": True,
        "upstream_rq_retry_overflow": True,
        "upstream_cx_overflow": True,
        "upstream_rq_timeout": False,
    }


@pytest.mark.parametrize(
    "name",
    [
        "cluster.backend.v1.upstream_rq_active",
        "cluster.backend.v1.outlier_detection.ejections_active",
        "cluster.backend.v1.upstream_rq_retry_success",
        "http.outbound.rq_total",
        "config.update_success",
        # The listener's upgrades: the same connections as its routes', counted again.
        "http.outbound.downstream_cx_upgrades_total",
        "http.outbound.downstream_cx_upgrades_active",
        # Envoy's grpc_stats, per cluster and method: the routes' own codes are read instead.
        "cluster.backend.grpc.test.Echo.Unary.0",
        "cluster.backend.grpc.test.Echo.Unary.success",
        # Envoy's retry scope: answers that were retried, not final ones (nor a cluster of
        # their own: the cluster is backend.v1).
        "cluster.backend.v1.retry.upstream_rq_503",
        "cluster.backend.v1.retry.upstream_rq_5xx",
    ],
)
def test_names_the_dashboard_does_not_read(name: str) -> None:
    assert StatNames().meaning(name) is None
    assert re.search(STREAM_FILTER, name) is None


@pytest.mark.parametrize(
    "name",
    [
        "vhost.backend.route.items.upstream_rq_total",
        "vhost.backend.route.items.upstream_rq_time",
        "vhost.backend.route.items.upstream_rq_404",
        "cluster.backend.v1.upstream_rq_retry",
        "cluster.backend.v1.upstream_rq_pending_overflow",
        "cluster.backend.v1.upstream_rq_retry_limit_exceeded",
        "http.outbound.fault.aborts_injected",
        "http.outbound.http_local_rate_limit.rate_limited",
        "vhost.backend.route.items.downstream_cx_upgrades_total",
        "vhost.backend.route.items.downstream_cx_upgrades_active",
        "vhost.backend.route.items.grpc.0",
        "vhost.backend.route.items.grpc.16",
    ],
)
def test_the_stream_filter_keeps_what_the_dashboard_reads(name: str) -> None:
    assert StatNames().meaning(name) is not None
    assert re.search(STREAM_FILTER, name) is not None


@pytest.mark.parametrize(
    "name",
    [
        # Only routes' latencies are shown; clusters' are the same requests counted again.
        "cluster.backend.v1.upstream_rq_time",
        # The stream has each status's own counter; classes are for a polled Envoy.
        "vhost.backend.route.items.upstream_rq_4xx",
        "vhost.backend.route.items.downstream_rq_5xx",
        # Answers that were retried are not answers the callers got.
        "cluster.backend.v1.retry.upstream_rq_503",
    ],
)
def test_the_stream_filter_drops_what_the_stream_does_not_need(name: str) -> None:
    assert re.search(STREAM_FILTER, name) is None
