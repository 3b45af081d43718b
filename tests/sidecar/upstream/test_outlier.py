"""Outlier detection through real HTTP: consecutive 5xx eject a host at once, it returns after
its ejection time, and max_ejection_percent caps ejections (but one host may always go)."""

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
            # While ejected, every request goes to the healthy host.
            seen = Counter([(await get(s, base))[1]["x-upstream"] for _ in range(20)])
            assert seen == {"good": 20}
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


async def test_a_lone_host_can_be_ejected_leaving_no_healthy_host() -> None:
    async with upstreams("only") as (only,):
        only.status = 502
        cfg = simple_config(
            [only], cluster=detection(max_ejection_percent=10, base_ejection_time=30)
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            for _ in range(3):
                assert (await get(s, base))[0] == 502
            status, _, body = await get(s, base)
            assert (status, body) == (503, b"no healthy upstream")
            assert stat(sc, "cluster.backend.upstream_cx_none_healthy") == 1
            assert only.hits == 3


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
