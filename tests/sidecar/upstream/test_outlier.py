"""Outlier detection through real HTTP: consecutive 5xx eject a host at once, it returns after
its ejection time, and max_ejection_percent caps ejections (but one host may always go).
With fewer than half the hosts healthy the balancer panics, as Envoy's does: it picks among
all of them again, counting `lb_healthy_panic`, rather than answer 503 `UH`."""

from __future__ import annotations

from collections import Counter

from tests.sidecar.helpers import (
    client,
    dead_endpoint,
    endpoint,
    get,
    listener_url,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.support import wait_until

OD = "cluster.backend.outlier_detection."


def detection(**overrides: float) -> dict[str, object]:
    od = {
        "consecutive_5xx": 3,
        "interval": 0.05,
        "base_ejection_time": 0.4,
        "max_ejection_percent": 50,
        **overrides,
    }
    return {"outlier_detection": od}


async def test_failing_host_is_ejected_then_returns() -> None:
    async with upstreams("bad", "good") as (bad, good):
        bad.status = 503
        async with sidecar(simple_config([bad, good], cluster=detection())) as sc, client() as s:
            base = listener_url(sc)
            for _ in range(6):  # round robin: three of these reach `bad`
                await get(s, base)
            assert bad.hits == 3
            assert stat(sc, OD + "ejections_active") == 1
            assert stat(sc, OD + "ejections_enforced_total") == 1
            assert stat(sc, OD + "ejections_consecutive_5xx") == 1
            assert stat(sc, "cluster.backend.membership_healthy") == 1
            assert stat(sc, "cluster.backend.membership_total") == 2
            [view] = [h for h in sc.hosts() if h.ejected]
            assert (view.port, view.ejection_count) == (bad.port, 1)
            assert view.ejected_for > 0
            # While ejected, every request goes to the healthy host: half the hosts healthy
            # is not under Envoy's 50 % panic threshold.
            seen = Counter([(await get(s, base))[1]["x-upstream"] for _ in range(20)])
            assert seen == {"good": 20}
            assert stat(sc, "cluster.backend.lb_healthy_panic") == 0
            bad.status = None
            await wait_until(lambda: stat(sc, OD + "ejections_active") == 0, "the ejection to end")
            assert stat(sc, "cluster.backend.membership_healthy") == 2
            seen = Counter([(await get(s, base))[1]["x-upstream"] for _ in range(10)])
            assert seen == {"good": 5, "bad": 5}


async def test_max_ejection_percent_and_at_least_one_host() -> None:
    async with upstreams("a", "b", "c") as ups:
        for u in ups:
            u.status = 500
        cfg = simple_config(ups, cluster=detection(max_ejection_percent=40, base_ejection_time=30))
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            for _ in range(30):
                assert (await get(s, base))[0] == 500
            # 40 % of three hosts is one host; the others keep serving (and failing).
            assert stat(sc, OD + "ejections_active") == 1
            assert stat(sc, OD + "ejections_overflow") >= 1
            assert sum(h.ejected for h in sc.hosts()) == 1


async def test_two_of_three_ejected_is_panic_every_host_is_called() -> None:
    async with upstreams("bad1", "bad2", "good") as ups:
        bad1, bad2, good = ups
        bad1.status = bad2.status = 503
        cfg = simple_config(ups, cluster=detection(max_ejection_percent=100, base_ejection_time=30))
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            for _ in range(30):
                if stat(sc, OD + "ejections_active") == 2:
                    break
                await get(s, base)
            assert stat(sc, OD + "ejections_active") == 2
            assert stat(sc, "cluster.backend.membership_healthy") == 1
            assert stat(sc, "cluster.backend.lb_healthy_panic") == 0
            before = [u.hits for u in ups]
            statuses = Counter([(await get(s, base))[0] for _ in range(30)])
            # One host in three healthy: round robin over all three again, ejected or not.
            assert [u.hits - b for u, b in zip(ups, before, strict=True)] == [10, 10, 10]
            assert statuses == {503: 20, 200: 10}
            assert stat(sc, "cluster.backend.lb_healthy_panic") == 30
            assert stat(sc, "cluster.backend.upstream_cx_none_healthy") == 0
            assert all(h.ejected for h in sc.hosts() if h.port != good.port)


async def test_a_lone_ejected_host_is_still_called_in_panic() -> None:
    async with upstreams("only") as (only,):
        only.status = 502
        cfg = simple_config(
            [only], cluster=detection(max_ejection_percent=10, base_ejection_time=30)
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            for _ in range(3):
                assert (await get(s, base))[0] == 502
            assert stat(sc, OD + "ejections_active") == 1
            assert (await get(s, base))[0] == 502
            assert only.hits == 4
            assert stat(sc, "cluster.backend.lb_healthy_panic") == 1
            assert stat(sc, "cluster.backend.upstream_cx_none_healthy") == 0


async def test_a_cluster_without_endpoints_has_no_healthy_upstream() -> None:
    async with sidecar(simple_config([])) as sc, client() as s:
        status, _, body = await get(s, listener_url(sc))
        assert (status, body) == (503, b"no healthy upstream")
        assert stat(sc, "cluster.backend.upstream_cx_none_healthy") == 1
        # Envoy's balancer is in panic over an empty host set too (0 % healthy).
        assert stat(sc, "cluster.backend.lb_healthy_panic") == 1


async def test_connect_failures_count_as_5xx() -> None:
    async with upstreams("good") as (good,):
        cfg = simple_config(
            [],
            cluster={"endpoints": [dead_endpoint(), endpoint(good)], **detection()},
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            statuses = [(await get(s, base))[0] for _ in range(10)]
            assert statuses.count(503) == 3
            assert stat(sc, OD + "ejections_active") == 1
            assert stat(sc, "cluster.backend.upstream_cx_connect_fail") == 3
