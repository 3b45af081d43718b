"""A client that hangs up while its request waits on the upstream is not the upstream's fault:
the request is logged `DC`, and outlier detection does not count it (as in Envoy), so clients
that give up on slow answers never eject a healthy host."""

from __future__ import annotations

import asyncio

from tests.sidecar.helpers import (
    Upstream,
    client,
    get,
    listener_url,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.support import LOCALHOST, wait_until


async def hang_up_mid_request(port: int, up: Upstream) -> None:
    """Send a request the upstream holds, then close the connection without an answer."""
    arrived = up.hits + 1
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(b"GET /?hold=1 HTTP/1.1\r\nHost: backend\r\n\r\n")
    await writer.drain()
    # The upstream counts a request in the same step as it starts holding it.
    await wait_until(lambda: up.hits == arrived, "the request held at the upstream")
    writer.close()
    await writer.wait_closed()
    del reader


async def test_clients_hanging_up_do_not_eject_the_host() -> None:
    od = {"consecutive_5xx": 2, "interval": 0.05, "base_ejection_time": 30}
    async with upstreams("slow") as (up,):
        cfg = simple_config([up], cluster={"outlier_detection": od}, access_log="off")
        async with sidecar(cfg) as sc, client() as s:
            port = sc.listener_port("outbound")
            for _ in range(5):
                await hang_up_mid_request(port, up)
            await wait_until(lambda: up.hits == 5, "five requests at the upstream")
            await wait_until(
                lambda: stat(sc, "http.outbound.downstream_rq_active") == 0,
                "no request left active",
            )
            assert stat(sc, "cluster.backend.outlier_detection.ejections_enforced_total") == 0
            [host] = sc.hosts()
            assert (host.ejected, host.consecutive_5xx, host.rq_error) == (False, 0, 0)
            status, headers, _ = await get(s, listener_url(sc))
            assert status == 200
            assert headers["x-upstream"] == "slow"


async def test_a_route_timeout_still_counts_against_the_host() -> None:
    od = {"consecutive_5xx": 2, "interval": 0.05, "base_ejection_time": 30}
    async with upstreams("slow") as (up,):
        up.delay = 5.0
        cfg = simple_config([up], route={"timeout": 0.05}, cluster={"outlier_detection": od})
        async with sidecar(cfg) as sc, client() as s:
            for _ in range(2):
                status, _, body = await get(s, listener_url(sc))
                assert status == 504, (status, body)
            # Our two requests and no other: the listener's port comes from free_port(), so a
            # stray request (another process's stale endpoint that is now this port) could
            # reach it and add a 5xx of its own against the host; this says so when it does.
            assert stat(sc, "http.outbound.downstream_rq_total") == 2
            assert stat(sc, "cluster.backend.outlier_detection.ejections_enforced_total") == 1
            [host] = sc.hosts()
            assert host.ejected, host
            assert host.rq_error == 2, host
