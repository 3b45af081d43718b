"""tcp clusters from real sidecars' /stats/stream to the dashboard's views: a caller's
relayed connections show as connections open, connections and bytes per second; a host whose
connects fail shows its ejection; none of it is a route's or a request."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from meshdev.telemetry.aggregation.mesh import Aggregator
from meshdev.telemetry.aggregation.view import ClusterStats, MeshView
from meshdev.telemetry.io.client import SidecarClient
from tests.sidecar.helpers import dead_endpoint, sidecar
from tests.sidecar.tcp.test_tcp_proxy import app, caller_config, connect, inbound_config
from tests.support import LOCALHOST, wait_until


async def test_tcp_clusters_and_hosts_reach_the_views() -> None:
    views: list[MeshView] = []
    aggregator = Aggregator()
    client: SidecarClient | None = None

    def changed() -> None:
        assert client is not None
        views.append(aggregator.build([client.state(time.monotonic())], time.time()))

    def redis() -> ClusterStats | None:
        return next((c for c in views[-1].clusters if c.name == "redis"), None) if views else None

    od = {"consecutive_5xx": 1, "interval": 60, "base_ejection_time": 60}
    dead = dead_endpoint()["port"]
    async with app() as a, sidecar(inbound_config(a.port)) as callee:
        live = callee.listener_port("inbound")
        cfg = caller_config(dead, live, lb="round_robin", outlier_detection=od)
        async with sidecar(cfg) as caller, aiohttp.ClientSession() as session:
            admin = f"http://{LOCALHOST}:{caller.admin_port}"
            client = SidecarClient("web-0", admin, session, interval=0.05, on_change=changed)
            task = asyncio.create_task(client.run())
            try:
                await wait_until(lambda: client.connected and client.topology is not None, "up")
                conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
                while len(conns) < 3:
                    r, w = await connect(caller)
                    w.write(b"x" * 1000)
                    try:
                        got = await asyncio.wait_for(r.readexactly(1000), 5)
                    except (asyncio.IncompleteReadError, ConnectionResetError):
                        w.close()
                        continue  # the dead host's connect failed: it is ejected now
                    assert got == b"x" * 1000
                    conns.append((r, w))

                def seen() -> bool:
                    c = redis()
                    return c is not None and c.cx_active == 3 and c.ejected == 1

                await wait_until(seen, lambda: f"redis open and ejected: {redis()}")
                c = redis()
                assert c is not None
                assert c.protocol == "tcp"
                assert c.endpoints == 2 and c.healthy == 1
                # Only the connection limit applies to relayed connections.
                assert [lim.name for lim in c.limits] == ["max_connections"]
                assert c.limits[0].active == 3
                assert c.rps == 0.0 and c.success_pct is None
                hosts = {h.address: h for h in views[-1].hosts if h.cluster == "redis"}
                assert hosts[f"{LOCALHOST}:{dead}"].ejected
                assert hosts[f"{LOCALHOST}:{live}"].rq_active == 3
                assert {h.protocol for h in hosts.values()} == {"tcp"}
                # A tcp cluster's failed connect belongs to no route.
                assert not views[-1].routes
                assert "UF" not in views[-1].unattributed_flags
                for _, w in conns:
                    w.close()
                await wait_until(lambda: (redis() or c).cx_active == 0, "closed")
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
    # Over the views: every connection once, its bytes both ways, the failed connect.
    per_view = [
        (x, v.at) for v in views for x in v.clusters if x.name == "redis" and x.protocol == "tcp"
    ]
    assert per_view
    assert max(x.cx_per_s for x, _ in per_view) > 0
    assert max(x.bytes_per_s for x, _ in per_view) > 0
    assert max(x.connect_fail_per_s for x, _ in per_view) > 0
