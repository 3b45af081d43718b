"""The per-sidecar config's tcp_proxy listeners: what a sidecar accepts, and every reason it
refuses one (all at once, as for the rest of the config)."""

from __future__ import annotations

from typing import Any

import pytest

from meshdev.common import envoy_defaults as envoy
from meshdev.common.sidecar_config import ConfigRejected, parse_config


def doc(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "mesh": "m",
        "node": "n",
        "listeners": list(listeners),
        "clusters": [{"name": "db"}, {"name": "inbound|5432"}],
    }


def tcp(name: str, kind: str, *clusters: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "address": "127.0.0.1",
        "port": 5432 if kind == "outbound" else 15006,
        "tcp_proxy": {
            "stat_prefix": name,
            "clusters": [{"cluster": c, "weight": 1} for c in clusters],
        },
        **extra,
    }


def test_tcp_proxy_listeners_are_accepted_with_envoys_idle_timeout() -> None:
    cfg = parse_config(
        doc(
            tcp("outbound|5432|db", "outbound", "db"),
            tcp("inbound", "inbound", "inbound|5432", cluster="inbound|5432"),
        )
    )
    outbound = cfg.listeners[0].tcp_proxy
    assert outbound is not None
    assert outbound.idle_timeout == envoy.TCP_IDLE_TIMEOUT == 3600.0


def test_every_reason_is_given() -> None:
    with pytest.raises(ConfigRejected) as info:
        parse_config(
            doc(
                tcp("a", "outbound", "nope"),
                tcp("inbound", "inbound", "db", cluster="inbound|5432"),
                {**tcp("gw", "ingress", "db"), "port": 8000},
            )
        )
    assert info.value.reasons == [
        "(top): Value error, listeners.a.tcp_proxy: unknown cluster 'nope'; "
        "listeners.inbound.tcp_proxy: an inbound relays to its own cluster only; "
        "listeners.gw: the ingress routes HTTP, not tcp_proxy"
    ]


def test_weights_must_not_all_be_zero() -> None:
    lst = tcp("a", "outbound", "db")
    lst["tcp_proxy"]["clusters"][0]["weight"] = 0
    with pytest.raises(ConfigRejected) as info:
        parse_config(doc(lst))
    assert "cluster weights sum to 0" in str(info.value)
