"""A relaying sidecar's stats in Envoy's formats: tcp_proxy names tagged as Envoy tags them
(`envoy_tcp_prefix`, `envoy_cluster_name`), and the Prometheus text passes promtool."""

from __future__ import annotations

import asyncio

from meshdev.common.stattags import TagExtractor
from meshdev.sidecar.stats.formats import render_prometheus
from tests.sidecar.promtool import promtool_check
from tests.sidecar.tcp.test_tcp_proxy import connect, mesh


def test_tcp_stat_names_are_tagged_like_envoys() -> None:
    tags = TagExtractor(tcp_prefixes=["inbound|6379"], clusters=["redis.a"])
    cases = {
        "tcp.inbound|6379.downstream_cx_total": (
            "envoy_tcp_downstream_cx_total",
            (("envoy_tcp_prefix", "inbound|6379"),),
        ),
        "tcp.redis.idle_timeout": ("envoy_tcp_idle_timeout", (("envoy_tcp_prefix", "redis"),)),
        "tcp.redis.upstream_flush_active": (
            "envoy_tcp_upstream_flush_active",
            (("envoy_tcp_prefix", "redis"),),
        ),
        "cluster.redis.a.upstream_cx_rx_bytes_total": (
            "envoy_cluster_upstream_cx_rx_bytes_total",
            (("envoy_cluster_name", "redis.a"),),
        ),
        "cluster.redis.a.upstream_cx_connect_timeout": (
            "envoy_cluster_upstream_cx_connect_timeout",
            (("envoy_cluster_name", "redis.a"),),
        ),
    }
    for name, (family, labels) in cases.items():
        tagged = tags.extract(name)
        assert (tagged.family, tagged.labels) == (family, labels), name
    # A configured prefix holding a dot is still one tag value.
    dotted = TagExtractor(tcp_prefixes=["db.primary"]).extract("tcp.db.primary.idle_timeout")
    assert dotted.labels == (("envoy_tcp_prefix", "db.primary"),)


async def test_a_relaying_sidecars_prometheus_text_passes_promtool() -> None:
    async with mesh() as (caller, callee, _):
        r, w = await connect(caller)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        w.close()
        for sc in (caller, callee):
            text = render_prometheus(sc.stats, TagExtractor.for_config(sc.config))
            assert "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=" in text
            await asyncio.to_thread(promtool_check, text)
        caller_text = render_prometheus(caller.stats, TagExtractor.for_config(caller.config))
        assert 'envoy_tcp_downstream_cx_rx_bytes_total{envoy_tcp_prefix="redis"} 4' in caller_text
        assert 'envoy_cluster_upstream_cx_total{envoy_cluster_name="redis"} 1' in caller_text
