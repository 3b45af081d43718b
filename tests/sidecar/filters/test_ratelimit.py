"""Local rate limit through real HTTP: the burst passes, then 429 with x-envoy-ratelimited,
flag RL and http_local_rate_limit.rate_limited; tokens come back at the configured rate."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.sidecar.helpers import (
    client,
    get,
    listener_url,
    log_lines,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.support import wait_until


async def test_burst_then_429(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with upstreams("a") as (a,):
        route = {"rate_limit": {"requests_per_second": 0.01, "burst": 3}}
        async with sidecar(simple_config([a], route=route, access_log=str(log))) as sc:
            async with client() as s:
                answers = [await get(s, listener_url(sc)) for _ in range(5)]
            assert [status for status, _, _ in answers] == [200, 200, 200, 429, 429]
            _, headers, body = answers[-1]
            assert headers["x-envoy-ratelimited"] == "true"
            assert body == b"local_rate_limited"
            assert a.hits == 3
            assert stat(sc, "http_local_rate_limit.rate_limited") == 2
            assert stat(sc, "http_local_rate_limit.ok") == 3
            assert stat(sc, "http.outbound.downstream_rq_429") == 2
            # And on the route that limited them (meshdev's per-route response flags).
            assert stat(sc, "vhost.backend.route.main.http_local_rate_limit.rate_limited") == 2
        assert [line[5] for line in log_lines(log)] == ["-", "-", "-", "RL", "RL"]


async def test_tokens_refill_at_the_configured_rate() -> None:
    async with upstreams("a") as (a,):
        route = {"rate_limit": {"requests_per_second": 20, "burst": 1}}
        async with sidecar(simple_config([a], route=route)) as sc, client() as s:
            base = listener_url(sc)
            assert (await get(s, base))[0] == 200
            assert (await get(s, base))[0] == 429
            await asyncio.sleep(0.06)  # more than one token's worth (50 ms)

            async def passes() -> bool:
                return (await get(s, base))[0] == 200

            await wait_until(passes, "a refilled token to let a request pass")
            assert a.hits == 2


async def test_an_unchanged_limit_keeps_its_bucket_across_swaps() -> None:
    async with upstreams("a") as (a,):
        route = {"rate_limit": {"requests_per_second": 0.01, "burst": 2}}
        async with sidecar(simple_config([a], route=route)) as sc, client() as s:
            base = listener_url(sc)
            assert [(await get(s, base))[0] for _ in range(2)] == [200, 200]
            port = sc.config.listeners[0].port
            sc.apply(simple_config([a], route=route, version=2, port=port))
            assert (await get(s, base))[0] == 429
            bigger = {"rate_limit": {"requests_per_second": 0.01, "burst": 3}}
            sc.apply(simple_config([a], route=bigger, version=3, port=port))
            assert [(await get(s, base))[0] for _ in range(4)] == [200, 200, 200, 429]
