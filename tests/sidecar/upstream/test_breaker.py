"""Circuit breakers through real HTTP: overflow answers 503 at once with x-envoy-overloaded,
flag UO, and Envoy's counters and open gauges."""

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

CB = "cluster.backend.circuit_breakers.default."


async def test_max_requests_overflow(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with upstreams("a") as (a,):
        cfg = simple_config(
            [a], cluster={"circuit_breaker": {"max_requests": 1}}, access_log=str(log)
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            held = asyncio.ensure_future(get(s, base, "/?hold=1"))
            await wait_until(lambda: a.active == 1, "the held request at a")
            assert stat(sc, CB + "rq_open") == 1
            assert stat(sc, "cluster.backend.upstream_rq_active") == 1
            status, headers, body = await get(s, base, "/second")
            assert status == 503
            assert headers["x-envoy-overloaded"] == "true"
            assert b"overflow" in body
            assert stat(sc, "cluster.backend.upstream_rq_pending_overflow") == 1
            assert a.hits == 1
            a.release()
            assert (await held)[0] == 200
            assert stat(sc, CB + "rq_open") == 0
            assert (await get(s, base))[0] == 200
        lines = log_lines(log)
        flags = {line[2]: line[5] for line in lines}
        assert flags["/second"] == "UO"
        assert flags["/?hold=1"] == "-"


async def test_max_pending_requests_with_one_connection() -> None:
    async with upstreams("a") as (a,):
        cfg = simple_config(
            [a],
            cluster={"circuit_breaker": {"max_connections": 1, "max_pending_requests": 1}},
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            first = asyncio.ensure_future(get(s, base, "/?hold=1"))
            await wait_until(lambda: a.active == 1, "the held request at a")
            # The only connection is busy: the next request waits as pending...
            second = asyncio.ensure_future(get(s, base, "/second"))
            await wait_until(
                lambda: stat(sc, "cluster.backend.upstream_rq_pending_active") == 1,
                "the second request pending",
            )
            assert stat(sc, CB + "cx_open") == 1
            assert stat(sc, CB + "rq_pending_open") == 1
            # ...and one more overflows the pending queue at once.
            status, headers, _ = await get(s, base, "/third")
            assert status == 503
            assert headers["x-envoy-overloaded"] == "true"
            assert stat(sc, "cluster.backend.upstream_rq_pending_overflow") == 1
            assert stat(sc, "cluster.backend.upstream_cx_overflow") >= 1
            a.release()
            assert (await first)[0] == 200
            assert (await second)[0] == 200
            # The pending request went out on the same, released connection.
            assert stat(sc, "cluster.backend.upstream_cx_total") == 1
            assert stat(sc, "cluster.backend.upstream_rq_pending_active") == 0
            assert stat(sc, CB + "rq_pending_open") == 0
            assert [b.cluster for b in sc.breakers() if b.rq_pending_open] == []
