"""Fault injection through real HTTP: configured aborts and delays, header overrides, and
runtime overrides through the admin API's POST /runtime_modify."""

from __future__ import annotations

import math
import time
from pathlib import Path

from aiohttp import ClientSession

from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import (
    Upstream,
    client,
    endpoint,
    get,
    listener_url,
    log_lines,
    outbound_config,
    sidecar,
    simple_config,
    stat,
    upstreams,
)


def fault(**kinds: dict[str, float]) -> dict[str, object]:
    return {"fault": kinds}


async def test_abort_answers_the_status_without_calling_upstream(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with upstreams("a") as (a,):
        cfg = simple_config(
            [a], route=fault(abort={"status": 503, "percent": 100}), access_log=str(log)
        )
        async with sidecar(cfg) as sc, client() as s:
            status, _, body = await get(s, listener_url(sc))
            assert (status, body) == (503, b"fault filter abort")
            assert a.hits == 0
            assert stat(sc, "http.outbound.fault.aborts_injected") == 1
            assert stat(sc, "vhost.backend.route.main.downstream_rq_503") == 1
            assert stat(sc, "cluster.backend.upstream_rq_total") == 0
        [line] = log_lines(log)
        assert line[4:6] == ["503", "FI"]


async def test_delay_then_forward(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with upstreams("a") as (a,):
        cfg = simple_config(
            [a], route=fault(delay={"fixed": 0.2, "percent": 100}), access_log=str(log)
        )
        async with sidecar(cfg) as sc, client() as s:
            started = time.monotonic()
            status, _, _ = await get(s, listener_url(sc))
            assert status == 200
            assert time.monotonic() - started >= 0.2
            assert stat(sc, "http.outbound.fault.delays_injected") == 1
            assert a.hits == 1
        [line] = log_lines(log)
        assert line[4:6] == ["200", "DI"]
        assert int(line[7]) >= 200


async def test_abort_percentage_within_statistical_bounds() -> None:
    async with upstreams("a") as (a,):
        cfg = simple_config([a], route=fault(abort={"status": 500, "percent": 25}))
        async with sidecar(cfg) as sc, client() as s:
            n = 800
            statuses = [(await get(s, listener_url(sc)))[0] for _ in range(n)]
        aborted = statuses.count(500)
        assert abs(aborted - 0.25 * n) < 5 * math.sqrt(n * 0.25 * 0.75)
        assert aborted + statuses.count(200) == n
        assert stat(sc, "http.outbound.fault.aborts_injected") == aborted


def two_routes(a: Upstream) -> dict[str, object]:
    return {
        "clusters": [{"name": "backend", "endpoints": [endpoint(a)]}],
        "vhosts": [
            {
                "name": "backend",
                "domains": ["backend"],
                "routes": [
                    {
                        "name": "faulty",
                        "match": {"prefix": "/faulty"},
                        "clusters": [{"cluster": "backend", "weight": 1}],
                        "fault": {"abort": {"status": 500, "percent": 100}},
                    },
                    {"name": "plain", "clusters": [{"cluster": "backend", "weight": 1}]},
                ],
            }
        ],
    }


async def test_header_overrides_only_where_the_fault_is_on() -> None:
    async with upstreams("a") as (a,):
        parts = two_routes(a)
        cfg = outbound_config(parts["clusters"], parts["vhosts"])  # type: ignore[arg-type]
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            wants_418 = {"x-envoy-fault-abort-request": "418"}
            assert (await get(s, base, "/faulty", headers=wants_418))[0] == 418
            assert (await get(s, base, "/faulty"))[0] == 500
            # A route without an abort ignores the header: callers cannot fail it.
            assert (await get(s, base, "/plain", headers=wants_418))[0] == 200
            # The percentage header can only lower the route's percentage.
            zero = {**wants_418, "x-envoy-fault-abort-request-percentage": "0"}
            assert (await get(s, base, "/faulty", headers=zero))[0] == 200
            assert stat(sc, "http.outbound.fault.aborts_injected") == 2


async def runtime_modify(s: ClientSession, sc: Sidecar, **values: str) -> int:
    url = f"http://{sc.config.admin.address}:{sc.admin_port}/runtime_modify"
    async with s.post(url, params=values, headers={"x-meshdev-token": "test-token"}) as resp:
        return resp.status


async def test_runtime_overrides_switch_faults_without_a_reload() -> None:
    async with upstreams("a") as (a,):
        parts = two_routes(a)
        cfg = outbound_config(parts["clusters"], parts["vhosts"])  # type: ignore[arg-type]
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            version = sc.config.version
            key = "fault.http.backend.plain.abort.abort_percent"
            assert await runtime_modify(s, sc, **{key: "100"}) == 200
            status, _, body = await get(s, base, "/plain")
            assert (status, body) == (503, b"fault filter abort")
            assert (
                await runtime_modify(s, sc, **{"fault.http.backend.plain.abort.http_status": "429"})
                == 200
            )
            assert (await get(s, base, "/plain"))[0] == 429
            # Envoy's global keys change the numbers of every route where aborts are on.
            assert await runtime_modify(s, sc, **{"fault.http.abort.abort_percent": "0"}) == 200
            assert (await get(s, base, "/faulty"))[0] == 200
            assert (await get(s, base, "/plain"))[0] == 429  # its own key wins
            assert (
                await runtime_modify(s, sc, **{key: "", "fault.http.abort.abort_percent": ""})
                == 200
            )
            assert (await get(s, base, "/faulty"))[0] == 500
            assert (await get(s, base, "/plain"))[0] == 200
            # Delays switch on the same way.
            delay = "fault.http.backend.plain.delay.fixed_delay_percent"
            ms = "fault.http.backend.plain.delay.fixed_duration_ms"
            assert await runtime_modify(s, sc, **{delay: "100", ms: "150"}) == 200
            started = time.monotonic()
            assert (await get(s, base, "/plain"))[0] == 200
            assert time.monotonic() - started >= 0.15
            assert stat(sc, "http.outbound.fault.delays_injected") == 1
            # Charged to the route they were switched on for, not its neighbour.
            assert stat(sc, "vhost.backend.route.plain.fault.delays_injected") == 1
            assert stat(sc, "vhost.backend.route.plain.fault.aborts_injected") == 3
            assert stat(sc, "vhost.backend.route.faulty.fault.aborts_injected") == 1
            assert sc.config.version == version
            assert sc.runtime() == {
                delay: "100",
                ms: "150",
                "fault.http.backend.plain.abort.http_status": "429",
            }


async def test_bad_runtime_values_are_refused() -> None:
    async with upstreams("a") as (a,), sidecar(simple_config([a])) as sc, client() as s:
        assert await runtime_modify(s, sc, **{"fault.http.abort.abort_percent": "150"}) == 400
        assert await runtime_modify(s, sc, **{"no.such.key": "1"}) == 400
        assert sc.runtime() == {}
