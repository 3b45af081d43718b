"""Telemetry through real HTTP on loopback: the real admin app, a killed sidecar, an Envoy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from meshdev.common.histogram import HistogramSnapshot
from meshdev.telemetry.aggregation.view import MeshView, RouteStats
from meshdev.telemetry.io.client import SidecarClient
from meshdev.telemetry.io.source import TelemetrySource
from tests.support import WAIT, wait_until
from tests.telemetry.support import FakeSurface, Server, admin_server, breaker, host

INTERVAL = 0.05
ITEMS = "vhost.backend.route.items."


@asynccontextmanager
async def running(
    source: TelemetrySource, views: list[MeshView] | None = None
) -> AsyncIterator[list[MeshView]]:
    seen: list[MeshView] = views if views is not None else []
    task = asyncio.create_task(source.run(seen.append))
    try:
        yield seen
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def items_route(view: MeshView) -> RouteStats | None:
    return next((r for r in view.routes if r.key == "backend/items"), None)


async def view_where(
    views: list[MeshView], check: Callable[[MeshView], bool], what: str, *, after: int = 0
) -> MeshView:
    """The first view (from index `after` on) that passes `check`, once there is one."""
    await wait_until(lambda: any(check(v) for v in views[after:]), what)
    return next(v for v in views[after:] if check(v))


def all_events(views: list[MeshView]) -> list[str]:
    return [e.text for v in views for e in v.events]


async def test_streams_the_real_admin_app_into_views() -> None:
    surface = FakeSurface()  # routes backend/items to backend.v1 (90) and backend.v2 (10)
    surface.breaker_views = [breaker("backend.v1", rq_open=True)]
    surface.host_views = [host("backend.v1", "10.0.0.3", ejected=True)]
    server = await admin_server(surface).start()
    source = TelemetrySource([("frontend-0", server.url)], interval=INTERVAL)
    try:
        async with running(source) as views:
            await view_where(views, lambda v: v.sidecars[0].connected, "a connection")
            # A burst recorded at once lands in one interval of the stream.
            s = surface.stats
            s.counter(ITEMS + "upstream_rq_total").inc(17)
            s.counter(ITEMS + "upstream_rq_200").inc(15)
            s.counter(ITEMS + "upstream_rq_503").inc(2)
            for _ in range(17):
                s.histogram(ITEMS + "upstream_rq_time").record(12.0)
            s.counter("cluster.backend.v1.upstream_rq_pending_overflow").inc(2)

            def burst(v: MeshView) -> bool:
                r = items_route(v)
                return r is not None and r.total == 17

            view = await view_where(views, burst, "the burst")
    finally:
        await server.stop()
    items = items_route(view)
    assert items is not None
    assert items.codes == {"200": 15, "503": 2}
    assert items.success_pct == pytest.approx(100 * 15 / 17)
    assert items.p50 == pytest.approx(12.0, rel=0.01)
    # The route table came from /config_dump: the cluster's overflows are the route's.
    assert items.flags == {"UO": 2}
    v1 = next(c for c in view.clusters if c.name == "backend.v1")
    assert v1.open_now and v1.ejected == 1
    status = view.sidecars[0]
    assert (status.mode, status.config_version) == ("stream", surface.config.version)
    assert "frontend-0 connected (stream, config v1)" in all_events(views)


async def test_a_killed_sidecar_is_lost_goes_stale_and_comes_back() -> None:
    surface = FakeSurface()
    server = await admin_server(surface).start()
    source = TelemetrySource(
        [("frontend-0", server.url)], interval=INTERVAL, backoff_base=0.02, backoff_cap=0.1
    )
    async with running(source) as views:
        await view_where(views, lambda v: v.sidecars[0].connected, "a connection")
        await server.stop()
        lost = await view_where(
            views, lambda v: not v.sidecars[0].connected and v.sidecars[0].stale, "staleness"
        )
        assert lost.sidecars[0].error  # says why
        await view_where(
            views,
            lambda v: v.sidecars[0].error == "cannot connect: connection refused",
            "the retries' reason",
            after=views.index(lost),
        )
        assert "frontend-0 lost" in " ".join(all_events(views))

        await server.start()  # same port, like a restarted sidecar
        back = await view_where(
            views,
            lambda v: v.sidecars[0].connected and not v.sidecars[0].stale,
            "a reconnection",
            after=views.index(lost),
        )
        await server.stop()
    assert back.sidecars[0].error == ""
    client_connections = [t for t in all_events(views) if "connected" in t]
    assert len(client_connections) == 2


def stream_app(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[], web.Application]:
    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/stats/stream", handler)
        return app

    return make


def snapshot_doc(seq: int = 0) -> dict[str, Any]:
    return {
        "seq": seq,
        "interval_s": INTERVAL,
        "node": {"id": "quiet"},
        "config": {"version": 3, "hash": "abc"},
        "counters": {},
        "counter_deltas": {},
        "gauges": {},
        "histograms": {},
        "hosts": [],
        "breakers": [],
    }


async def test_a_stream_that_goes_silent_is_stale_while_still_connected() -> None:
    async def once_then_silence(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"data: {json.dumps(snapshot_doc())}\n\n".encode())
        await asyncio.sleep(3600)
        return resp

    server = await Server(stream_app(once_then_silence)).start()
    source = TelemetrySource([("quiet", server.url)], interval=INTERVAL)
    try:
        async with running(source) as views:
            view = await view_where(
                views, lambda v: v.sidecars[0].connected and v.sidecars[0].stale, "staleness"
            )
    finally:
        await server.stop()
    assert view.sidecars[0].config_version == 3
    assert "quiet is silent: its numbers are stale" in all_events(views)


async def test_changing_the_interval_reconnects_the_stream_with_it() -> None:
    asked: list[str] = []

    async def recording(request: web.Request) -> web.StreamResponse:
        asked.append(request.query["interval"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        seq = 0
        while True:
            await resp.write(f"data: {json.dumps(snapshot_doc(seq))}\n\n".encode())
            seq += 1
            await asyncio.sleep(INTERVAL)

    server = await Server(stream_app(recording)).start()
    source = TelemetrySource([("n", server.url)], interval=INTERVAL)
    try:
        async with running(source) as views:
            await view_where(views, lambda v: v.sidecars[0].connected, "a connection")
            source.interval = 0.2
            await wait_until(lambda: len(asked) == 2, "a second stream")
            count = len(views)
            await wait_until(lambda: len(views) > count + 1, "views at the new cadence")
    finally:
        await server.stop()
    assert asked == ["50ms", "200ms"]
    # Asking for another cadence is no failure: nothing was lost.
    assert not any("lost" in t for t in all_events(views))


# -- a server without /stats/stream: Envoy, polled ------------------------------------------


class FakeEnvoy:
    """Envoy's admin JSON for one cluster and one route; each poll of /stats sees 5 more."""

    def __init__(self, *, detailed: bool = True) -> None:
        self.detailed = detailed
        self.polls = 0
        self.queries: list[dict[str, str]] = []
        self.latencies: list[float] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/clusters", self.clusters)
        app.router.add_get("/server_info", self.server_info)
        app.router.add_get("/config_dump", self.config_dump)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if request.query.get("histogram_buckets") and not self.detailed:
            return web.Response(status=400, text="usage: ...")
        self.polls += 1
        total = 5 * self.polls
        self.latencies += [7.0] * 5
        cumulative = HistogramSnapshot.from_values(self.latencies)
        buckets = [
            {"lower_bound": lo, "width": w, "count": n} for lo, w, n in cumulative.bucket_data()
        ]
        stats: list[dict[str, Any]] = [
            {"name": "cluster.web.upstream_rq_total", "value": total},
            {"name": "vhost.site.route.home.upstream_rq_total", "value": total},
            {"name": "vhost.site.route.home.upstream_rq_200", "value": total - self.polls},
            {"name": "vhost.site.route.home.upstream_rq_503", "value": self.polls},
            {"name": "cluster.web.upstream_rq_pending_overflow", "value": self.polls},
        ]
        if request.query.get("histogram_buckets") == "detailed":
            hist: dict[str, Any] = {
                "details": [
                    {
                        "name": "vhost.site.route.home.upstream_rq_time",
                        "totals": buckets,
                        "sum": cumulative.sum,
                    }
                ]
            }
        else:
            hist = {
                "supported_quantiles": [50, 95, 99],
                "computed_quantiles": [
                    {
                        "name": "vhost.site.route.home.upstream_rq_time",
                        "values": [{"interval": 7.0, "cumulative": 7.0}] * 3,
                    }
                ],
            }
        stats.append({"histograms": hist})
        return web.json_response({"stats": stats})

    async def clusters(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "cluster_statuses": [
                    {
                        "name": "web",
                        "host_statuses": [
                            {
                                "address": {
                                    "socket_address": {"address": "10.2.0.1", "port_value": 80}
                                },
                                "stats": [{"name": "rq_total", "value": str(5 * self.polls)}],
                                "health_status": {"eds_health_status": "HEALTHY"},
                            }
                        ],
                    }
                ]
            }
        )

    async def server_info(self, request: web.Request) -> web.Response:
        return web.json_response({"state": "LIVE", "node": {"id": "envoy-7"}})

    async def config_dump(self, request: web.Request) -> web.Response:
        route = {"name": "home", "route": {"cluster": "web"}}
        dump = {"virtual_hosts": [{"name": "site", "routes": [route]}]}
        return web.json_response(
            {
                "configs": [
                    {
                        "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                        "static_route_configs": [{"route_config": dump}],
                    }
                ]
            }
        )


@pytest.mark.parametrize("detailed", [True, False])
async def test_a_server_without_the_stream_is_polled_envoy_style(detailed: bool) -> None:
    envoy = FakeEnvoy(detailed=detailed)
    server = await Server(envoy.app).start()
    source = TelemetrySource([("edge", server.url)], interval=INTERVAL)

    def served(v: MeshView) -> bool:
        home = next((r for r in v.routes if r.key == "site/home"), None)
        return home is not None and home.total == 5 and home.p50 is not None

    try:
        async with running(source) as views:
            view = await view_where(views, served, "polled traffic")
    finally:
        await server.stop()
    status = view.sidecars[0]
    assert (status.mode, status.connected, status.config_version) == ("poll", True, None)
    home = next(r for r in view.routes if r.key == "site/home")
    assert home.codes == {"200": 4, "503": 1}
    assert home.p50 == pytest.approx(7.0, rel=0.01)
    assert home.flags == {"UO": 1}  # the cluster's overflow, through the Envoy route table
    web_cluster = next(c for c in view.clusters if c.name == "web")
    assert web_cluster.rps > 0 and web_cluster.endpoints == 1
    (web_host,) = view.hosts
    assert web_host.address == "10.2.0.1:80" and web_host.rps > 0
    buckets = [q.get("histogram_buckets") for q in envoy.queries]
    if detailed:
        assert set(buckets) == {"detailed"}
    else:
        # Asked once for detailed buckets, told 400, and never again.
        assert buckets[0] == "detailed" and set(buckets[1:]) == {None}


async def test_a_client_folds_snapshots_nobody_took() -> None:
    surface = FakeSurface()
    server = await admin_server(surface).start()
    async with (
        web_client_session() as session,
    ):
        client = SidecarClient("frontend-0", server.url, session, interval=INTERVAL)
        task = asyncio.create_task(client.run())
        try:
            await wait_until(lambda: client.snapshots >= 1, "a first snapshot")
            client.take()
            before = client.snapshots
            surface.stats.counter(ITEMS + "upstream_rq_total").inc(7)
            await wait_until(lambda: client.snapshots >= before + 4, "more snapshots")
            folded = client.take()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await server.stop()
    assert folded is not None
    assert folded.parts >= 4
    assert folded.deltas[ITEMS + "upstream_rq_total"] == 7
    assert folded.interval_s >= 3 * INTERVAL * 0.5


@asynccontextmanager
async def web_client_session() -> AsyncIterator[Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session


async def test_targets_follow_set_targets_while_running() -> None:
    servers = [await admin_server(FakeSurface()).start() for _ in range(3)]
    source = TelemetrySource([("a", servers[0].url)], interval=INTERVAL)

    def connected(*nodes: str) -> Callable[[MeshView], bool]:
        def check(v: MeshView) -> bool:
            return [s.node for s in v.sidecars] == list(nodes) and all(
                s.connected for s in v.sidecars
            )

        return check

    try:
        async with running(source) as views:
            await view_where(views, connected("a"), "a")
            source.set_targets([("a", servers[0].url), ("b", servers[1].url)])
            await view_where(views, connected("a", "b"), "a and b")
            # b moves to another address (a restarted pod), a goes away.
            source.set_targets([("b", servers[2].url)])
            view = await view_where(
                views,
                lambda v: connected("b")(v) and v.sidecars[0].admin_url == servers[2].url,
                "b at its new address",
            )
            assert set(source.clients()) == {"b"}
    finally:
        for s in servers:
            await s.stop()
    assert view.sidecars[0].admin_url == servers[2].url


async def test_run_twice_at_once_is_refused() -> None:
    source = TelemetrySource(interval=INTERVAL)
    async with running(source) as views:
        await wait_until(lambda: views, "the first run's first view")
        with pytest.raises(RuntimeError, match="already running"):
            await asyncio.wait_for(source.run(lambda v: None), WAIT)


async def test_a_run_started_while_the_last_is_cancelled_takes_over() -> None:
    # A restarted worker: the new run must not trip over the old one's clean-up.
    server = await admin_server(FakeSurface()).start()
    source = TelemetrySource([("a", server.url)], interval=INTERVAL)
    first: list[MeshView] = []
    second: list[MeshView] = []
    old = asyncio.create_task(source.run(first.append))
    try:
        await view_where(first, lambda v: v.sidecars[0].connected, "the first run's connection")
        old.cancel()
        async with running(source, second):
            await view_where(second, lambda v: v.sidecars[0].connected, "the second run's")
            assert old.cancelled()
    finally:
        await server.stop()


async def test_a_bad_document_is_reported_and_the_stream_goes_on() -> None:
    reported = asyncio.Event()

    async def one_bad(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: {not json\n\n")
        # The good documents only once a view has shown the bad one, which they would clear.
        await reported.wait()
        seq = 0
        while True:
            await resp.write(f"data: {json.dumps(snapshot_doc(seq))}\n\n".encode())
            seq += 1
            await asyncio.sleep(INTERVAL)

    server = await Server(stream_app(one_bad)).start()
    client_views: list[MeshView] = []
    source = TelemetrySource([("n", server.url)], interval=INTERVAL)
    try:
        async with running(source, client_views) as views:
            bad = await view_where(views, lambda v: "bad JSON" in v.sidecars[0].error, "the error")
            reported.set()
            good = await view_where(
                views,
                lambda v: v.sidecars[0].connected and not v.sidecars[0].error,
                "good documents",
                after=views.index(bad),
            )
    finally:
        await server.stop()
    assert good.sidecars[0].config_version == 3
    assert source.clients() == {}  # stopped with the run
