"""End to end with the real data plane: requests through a sidecar, numbers in MeshViews.

Every snapshot the client receives is taken and aggregated at once, so each interval is in
exactly one view and the views add up to exactly what was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from meshdev.telemetry.aggregation.mesh import Aggregator
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.client import SidecarClient
from tests.support import LOCALHOST, free_port, wait_until

INTERVAL = 0.05


@dataclass
class Upstream:
    """Answers `?status=N` (200 by default); `/hold` waits until released."""

    port: int = 0
    held: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    async def start(self) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOCALHOST, 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.startswith("/hold"):
            self.held += 1
            await self.release.wait()
        return web.Response(status=int(request.query.get("status", "200")), text="ok")

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


def config(upstream: Upstream) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "version": 4,
            "mesh": "test",
            "node": "frontend-0",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "access_log": "off",
            "listeners": [
                {"name": "outbound", "kind": "outbound", "address": LOCALHOST, "port": free_port()}
            ],
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["backend"],
                    "routes": [
                        {
                            "name": "limited",
                            "match": {"prefix": "/limited"},
                            "clusters": [{"cluster": "backend", "weight": 1}],
                            "rate_limit": {"requests_per_second": 0.001, "burst": 2},
                        },
                        {
                            "name": "main",
                            "match": {"prefix": "/"},
                            "clusters": [{"cluster": "backend", "weight": 1}],
                        },
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "endpoints": [{"address": LOCALHOST, "port": upstream.port, "pod": "b-0"}],
                    "circuit_breaker": {"max_requests": 1},
                }
            ],
        }
    )


@dataclass
class Watch:
    """A client whose every snapshot becomes a view, and the running sums of those views."""

    client: SidecarClient | None = None
    aggregator: Aggregator = field(default_factory=Aggregator)
    views: list[MeshView] = field(default_factory=list)
    seen: int = 0

    def changed(self) -> None:
        client = self.client
        if client is not None and client.snapshots != self.seen:
            self.seen = client.snapshots
            view = self.aggregator.build([client.state(time.monotonic())], time.time())
            self.views.append(view)

    def route_sum(self, key: str, what: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for v in self.views:
            for r in v.routes:
                if r.key == key:
                    out.update(getattr(r, what))
        return out

    def total(self, key: str) -> int:
        return sum(r.total for v in self.views for r in v.routes if r.key == key)


@asynccontextmanager
async def watched_sidecar() -> AsyncIterator[tuple[Sidecar, Upstream, Watch, str]]:
    upstream = await Upstream().start()
    sidecar = Sidecar(config(upstream), token="t")
    await sidecar.start()
    admin = f"http://{LOCALHOST}:{sidecar.admin_port}"
    proxy = f"http://{LOCALHOST}:{sidecar.listener_port('outbound')}"
    async with aiohttp.ClientSession() as session:
        watch = Watch()
        client = SidecarClient(
            "frontend-0", admin, session, interval=INTERVAL, on_change=watch.changed
        )
        watch.client = client
        task = asyncio.create_task(client.run())
        try:
            await wait_until(lambda: client.connected and client.topology is not None, "stream")
            yield sidecar, upstream, watch, proxy
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await sidecar.stop(grace=0.1)
            await upstream.stop()


async def send(session: aiohttp.ClientSession, url: str, host: str = "backend") -> int:
    async with session.get(url, headers={"Host": host}) as resp:
        await resp.read()
        return resp.status


async def test_requests_through_the_real_sidecar_add_up_in_the_views() -> None:
    async with watched_sidecar() as (_, upstream, watch, proxy), aiohttp.ClientSession() as s:
        statuses = [await send(s, f"{proxy}/items?status={st}") for st in (200,) * 6 + (503,) * 2]
        limited = [await send(s, f"{proxy}/limited") for _ in range(5)]
        unrouted = await send(s, f"{proxy}/x", host="nowhere")
        # One request holds the only `max_requests` slot; three more overflow at once.
        held = asyncio.create_task(send(s, f"{proxy}/hold"))
        await wait_until(lambda: upstream.held == 1, "the held request")
        overflowed = [await send(s, f"{proxy}/items") for _ in range(3)]
        upstream.release.set()
        assert await held == 200

        expected_main = Counter(str(x) for x in [*statuses, *overflowed, 200])
        await wait_until(
            lambda: (
                watch.route_sum("backend/main", "codes") == expected_main
                and watch.total("backend/limited") == 5
                and sum(v.unattributed_flags.get("NR", 0) for v in watch.views) == 1
            ),
            "every request in the views",
        )

    assert (limited.count(200), limited.count(429), unrouted) == (2, 3, 404)
    assert overflowed == [503, 503, 503]
    assert watch.total("backend/main") == 12
    assert watch.route_sum("backend/main", "flags") == {"UO": 3}
    # The 429s are the limited route's (the only one with a rate limit), and no server error.
    assert watch.route_sum("backend/limited", "codes") == {"200": 2, "429": 3}
    assert watch.route_sum("backend/limited", "flags") == {"RL": 3}
    assert sum(c.trips_per_s > 0 for v in watch.views for c in v.clusters) >= 1
    last = watch.views[-1]
    (status,) = last.sidecars
    assert (status.config_version, status.mode, status.connected) == (4, "stream", True)
    main = next(r for r in watch.views[-1].routes if r.key == "backend/main")
    assert main.vhost == "backend"
    busy = [r for v in watch.views for r in v.routes if r.key == "backend/main" and r.total]
    assert all(r.p50 is not None for r in busy if r.codes.get("200"))
