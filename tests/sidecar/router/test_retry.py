"""Retries through real HTTP: each retry_on kind, attempt counts, per-try and route timeouts,
the max_retries budget, and the stats and flags Envoy produces for them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from meshdev.common.sidecar_config import SidecarConfig
from tests.sidecar.helpers import (
    COUNTED,
    Upstream,
    client,
    dead_endpoint,
    get,
    listener_url,
    log_lines,
    sidecar,
    simple_config,
    stat,
    upstreams,
)


def retries(attempts: int, *retry_on: str, **extra: Any) -> dict[str, Any]:
    return {"retries": {"attempts": attempts, "retry_on": list(retry_on), **extra}}


def config(ups: list[Upstream], **kwargs: Any) -> SidecarConfig:
    """`simple_config` whose answers carry x-envoy-attempt-count: these tests read it."""
    return simple_config(ups, vhost=COUNTED, **kwargs)


async def test_5xx_retried_until_attempts_run_out(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with upstreams("a") as (a,):
        a.status = 503
        cfg = config([a], route=retries(2, "5xx"), access_log=str(log))
        async with sidecar(cfg) as sc, client() as s:
            status, headers, _ = await get(s, listener_url(sc), "/x")
            assert status == 503
            assert headers["x-envoy-attempt-count"] == "3"
            assert a.hits == 3
            assert stat(sc, "cluster.backend.upstream_rq_total") == 3
            assert stat(sc, "cluster.backend.upstream_rq_retry") == 2
            assert stat(sc, "cluster.backend.retry.upstream_rq_503") == 2
            assert stat(sc, "cluster.backend.upstream_rq_503") == 1
            assert stat(sc, "cluster.backend.upstream_rq_retry_limit_exceeded") == 1
            assert stat(sc, "cluster.backend.upstream_rq_retry_success") == 0
            assert stat(sc, "vhost.backend.route.main.upstream_rq_retry") == 2
        [line] = log_lines(log)
        assert line[4:6] == ["503", "URX"]
        assert line[8:11] == ["3", "main", f"127.0.0.1:{a.port}"]


async def test_retry_success_returns_the_good_answer() -> None:
    async with upstreams("a") as (a,):
        a.script.extend(["503", "500"])
        async with sidecar(config([a], route=retries(3, "5xx"))) as sc, client() as s:
            status, headers, _ = await get(s, listener_url(sc))
            assert status == 200
            assert headers["x-envoy-attempt-count"] == "3"
            assert stat(sc, "cluster.backend.upstream_rq_retry_success") == 1
            assert stat(sc, "cluster.backend.upstream_rq_200") == 1
            assert stat(sc, "cluster.backend.retry.upstream_rq_5xx") == 2


@pytest.mark.parametrize(
    ("retry_on", "first", "retried"),
    [
        ("gateway-error", "502", True),
        ("gateway-error", "504", True),
        ("gateway-error", "500", False),
        ("retriable-4xx", "409", True),
        ("retriable-4xx", "404", False),
        ("5xx", "404", False),
        ("reset", "503", False),
        ("connect-failure", "503", False),
    ],
)
async def test_retry_on_answers(retry_on: str, first: str, retried: bool) -> None:
    async with upstreams("a") as (a,):
        a.script.append(first)
        cfg = config([a], route=retries(1, retry_on))
        async with sidecar(cfg) as sc, client() as s:
            status, headers, _ = await get(s, listener_url(sc))
            assert status == (200 if retried else int(first))
            assert headers["x-envoy-attempt-count"] == ("2" if retried else "1")
            assert stat(sc, "cluster.backend.upstream_rq_retry") == int(retried)


async def test_retriable_status_codes() -> None:
    async with upstreams("a") as (a,):
        a.script.extend(["418", "418"])
        route = retries(1, "retriable-status-codes", retriable_status_codes=[418])
        async with sidecar(config([a], route=route)) as sc, client() as s:
            status, headers, _ = await get(s, listener_url(sc))
            assert (status, headers["x-envoy-attempt-count"]) == (418, "2")
            status, headers, _ = await get(s, listener_url(sc), "/?status=500")
            assert (status, headers["x-envoy-attempt-count"]) == (500, "1")


@pytest.mark.parametrize(("retry_on", "retried"), [("reset", True), ("connect-failure", False)])
async def test_upstream_reset(tmp_path: Path, retry_on: str, retried: bool) -> None:
    log = tmp_path / "access.log"
    async with upstreams("a") as (a,):
        a.script.append("reset")
        cfg = config([a], route=retries(1, retry_on), access_log=str(log))
        async with sidecar(cfg) as sc, client() as s:
            status, _, body = await get(s, listener_url(sc))
            if retried:
                assert status == 200
            else:
                assert status == 503
                assert b"reset reason: connection termination" in body
                assert stat(sc, "cluster.backend.upstream_rq_503") == 1
        [line] = log_lines(log)
        assert line[5] == ("-" if retried else "UC")


async def test_connect_failure_retried_then_503_uf(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    cfg = config(
        [],
        route=retries(2, "connect-failure"),
        cluster={"endpoints": [dead_endpoint()]},
        access_log=str(log),
    )
    async with sidecar(cfg) as sc, client() as s:
        status, headers, body = await get(s, listener_url(sc))
        assert status == 503
        assert headers["x-envoy-attempt-count"] == "3"
        assert b"reset reason: connection failure" in body
        assert stat(sc, "cluster.backend.upstream_cx_connect_fail") == 3
        assert stat(sc, "cluster.backend.upstream_rq_retry") == 2
    [line] = log_lines(log)
    assert set(line[5].split(",")) == {"UF", "URX"}


async def test_per_try_timeout_is_retried() -> None:
    async with upstreams("a") as (a,):
        a.script.append("delay:2")
        route = retries(1, "5xx", per_try_timeout=0.2)
        async with sidecar(config([a], route=route)) as sc, client() as s:
            status, headers, _ = await get(s, listener_url(sc))
            assert status == 200
            assert headers["x-envoy-attempt-count"] == "2"
            assert stat(sc, "cluster.backend.upstream_rq_per_try_timeout") == 1
            assert stat(sc, "cluster.backend.upstream_rq_timeout") == 0


async def test_per_try_timeout_not_retried_by_connect_failure_policy() -> None:
    async with upstreams("a") as (a,):
        a.script.append("delay:2")
        route = retries(1, "connect-failure", per_try_timeout=0.2)
        async with sidecar(config([a], route=route)) as sc, client() as s:
            status, headers, body = await get(s, listener_url(sc))
            assert status == 504
            assert body == b"upstream request timeout"
            assert headers["x-envoy-attempt-count"] == "1"
            assert stat(sc, "cluster.backend.upstream_rq_504") == 1
            # The last try's per-try timeout is no route timeout: Envoy's router
            # (onPerTryTimeoutCommon) counts only upstream_rq_per_try_timeout; only
            # onResponseTimeout counts upstream_rq_timeout (envoyproxy/envoy#23867 asks for
            # the other and is open).
            assert stat(sc, "cluster.backend.upstream_rq_per_try_timeout") == 1
            assert stat(sc, "cluster.backend.upstream_rq_timeout") == 0
            assert stat(sc, "vhost.backend.route.main.upstream_rq_timeout") == 0


async def test_route_timeout_covers_every_try(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with upstreams("a") as (a,):
        a.delay = 0.3
        route = {"timeout": 0.5, **retries(10, "5xx", per_try_timeout=0.2)}
        cfg = config([a], route=route, access_log=str(log))
        async with sidecar(cfg) as sc, client() as s:
            status, headers, body = await get(s, listener_url(sc))
            assert status == 504
            assert body == b"upstream request timeout"
            tries = int(headers["x-envoy-attempt-count"])
            # 0.5 s holds two or three 0.2 s tries (plus backoffs), never all eleven.
            assert 2 <= tries <= 3
            assert stat(sc, "cluster.backend.upstream_rq_timeout") == 1
            assert stat(sc, "vhost.backend.route.main.upstream_rq_timeout") == 1
            assert stat(sc, "cluster.backend.upstream_rq_per_try_timeout") >= tries - 1
        [line] = log_lines(log)
        assert line[4] == "504"
        assert "UT" in line[5].split(",")


async def test_max_retries_budget_overflow() -> None:
    async with upstreams("a") as (a,):
        a.status = 503
        cfg = config([a], route=retries(3, "5xx"), cluster={"circuit_breaker": {"max_retries": 0}})
        async with sidecar(cfg) as sc, client() as s:
            status, headers, _ = await get(s, listener_url(sc))
            assert status == 503
            assert "x-envoy-overloaded" not in headers  # the upstream's own answer goes back
            assert headers["x-envoy-attempt-count"] == "1"
            assert stat(sc, "cluster.backend.upstream_rq_retry_overflow") == 1
            assert stat(sc, "cluster.backend.upstream_rq_retry") == 0
            assert stat(sc, "cluster.backend.circuit_breakers.default.rq_retry_open") == 1


async def test_overloaded_answers_are_never_retried() -> None:
    async with upstreams("a") as (a,):
        a.script.append("overloaded")
        async with sidecar(config([a], route=retries(2, "5xx"))) as sc, client() as s:
            status, headers, _ = await get(s, listener_url(sc))
            assert status == 503
            assert headers["x-envoy-attempt-count"] == "1"
            assert a.hits == 1


async def test_request_body_is_replayed_on_retry_up_to_the_buffer_limit() -> None:
    async with upstreams("a") as (a,):
        a.script.append("503")
        async with sidecar(config([a], route=retries(1, "5xx"))) as sc, client() as s:
            body = b"payload" * 1000
            status, _, _ = await get(s, listener_url(sc), method="POST", data=body)
            assert status == 200
            assert a.seen_bodies == [body, body]
            a.script.append("503")
            big = b"x" * (1024 * 1024 + 1)
            status, headers, _ = await get(s, listener_url(sc), method="POST", data=io.BytesIO(big))
            # Too big to buffer: streamed once, not retried.
            assert status == 503
            assert headers["x-envoy-attempt-count"] == "1"
            assert a.seen_bodies[-1] == big
            assert stat(sc, "cluster.backend.retry_or_shadow_abandoned") == 1
