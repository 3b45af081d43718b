"""What tcp_proxy stats and configs mean to the dashboard, on plain data."""

from __future__ import annotations

import re

import pytest

from meshdev.telemetry.aggregation.statnames import (
    CLUSTER,
    CX_BYTES,
    CX_TOTAL,
    FLAG,
    STREAM_FILTER,
    StatNames,
)
from meshdev.telemetry.aggregation.topology import from_config_dump


@pytest.mark.parametrize(
    ("name", "what", "arg"),
    [
        ("cluster.redis.upstream_cx_total", CX_TOTAL, ""),
        ("cluster.redis.a.upstream_cx_rx_bytes_total", CX_BYTES, "rx"),
        ("cluster.redis.a.upstream_cx_tx_bytes_total", CX_BYTES, "tx"),
        ("cluster.redis.upstream_cx_connect_fail", FLAG, "UF"),
        ("cluster.redis.upstream_cx_overflow", FLAG, "UO"),
    ],
)
def test_cluster_connection_stats(name: str, what: int, arg: str) -> None:
    meaning = StatNames().meaning(name)
    assert meaning is not None
    assert (meaning[0], meaning[2], meaning[3]) == (CLUSTER, what, arg)
    assert re.search(STREAM_FILTER, name) is not None


@pytest.mark.parametrize(
    "name",
    [
        # The tcp_proxy's own scope repeats its clusters' numbers from the client's side.
        "tcp.redis.downstream_cx_total",
        "tcp.redis.downstream_cx_rx_bytes_total",
        "cluster.redis.upstream_cx_destroy",
        "cluster.redis.upstream_cx_connect_timeout",
    ],
)
def test_tcp_names_the_dashboard_does_not_read(name: str) -> None:
    assert StatNames().meaning(name) is None
    assert re.search(STREAM_FILTER, name) is None


def test_connection_counts_are_a_clusters_only() -> None:
    assert StatNames().meaning("vhost.redis.route.r0.upstream_cx_total") is None


def test_topology_knows_which_clusters_are_relayed_to() -> None:
    topo = from_config_dump(
        {
            "config": {
                "virtual_hosts": [],
                "clusters": [{"name": "redis.a"}, {"name": "redis.b"}, {"name": "inbound|8080"}],
                "listeners": [
                    {"name": "inbound", "kind": "inbound", "cluster": "inbound|8080"},
                    {"name": "outbound", "kind": "outbound"},
                    {
                        "name": "outbound|6379|redis",
                        "kind": "outbound",
                        "tcp_proxy": {
                            "stat_prefix": "redis",
                            "clusters": [
                                {"cluster": "redis.a", "weight": 1},
                                {"cluster": "redis.b", "weight": 3},
                            ],
                        },
                    },
                ],
            }
        }
    )
    assert topo is not None
    assert topo.tcp_clusters == frozenset({"redis.a", "redis.b"})
    # A tcp listener is no HTTP connection manager: its name is not an http.<prefix>.
    assert set(topo.http_prefixes) == {"inbound", "outbound"}
    assert topo.local_clusters == frozenset({"inbound|8080"})


def test_a_real_envoys_tcp_proxy_clusters_are_read_from_its_config_dump() -> None:
    tcp_proxy = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
    topo = from_config_dump(
        {
            "configs": [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                    "static_listeners": [
                        {
                            "listener": {
                                "name": "redis",
                                "filter_chains": [
                                    {
                                        "filters": [
                                            {
                                                "name": "envoy.filters.network.tcp_proxy",
                                                "typed_config": {
                                                    "@type": tcp_proxy,
                                                    "stat_prefix": "redis",
                                                    "cluster": "redis",
                                                },
                                            }
                                        ]
                                    }
                                ],
                            }
                        }
                    ],
                    "dynamic_listeners": [
                        {
                            "active_state": {
                                "listener": {
                                    "filter_chains": [
                                        {
                                            "filters": [
                                                {
                                                    "typed_config": {
                                                        "@type": tcp_proxy,
                                                        "weighted_clusters": {
                                                            "clusters": [
                                                                {"name": "pg.a", "weight": 1},
                                                                {"name": "pg.b", "weight": 1},
                                                            ]
                                                        },
                                                    }
                                                }
                                            ]
                                        }
                                    ]
                                }
                            }
                        }
                    ],
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                    "static_clusters": [{"cluster": {"name": "redis"}}],
                },
            ]
        }
    )
    assert topo is not None
    assert topo.tcp_clusters == frozenset({"redis", "pg.a", "pg.b"})
    assert topo.clusters == ("redis",)
