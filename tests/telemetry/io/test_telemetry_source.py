"""The source's coalescing with a slow consumer, and the FakeSource the TUI tests use."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from meshdev.sidecar.admin.server import AdminServer, start_admin
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.source import TelemetrySource, ViewSource
from meshdev.testing.fake_source import FakeSource
from meshdev.testing.synthetic_sidecar import SyntheticSidecar, sidecar_config
from tests.support import WAIT, wait_until
from tests.telemetry.support import FakeSurface

INTERVAL = 0.05
TOTAL = "vhost.backend.route.items.upstream_rq_total"


class ThreadedAdmin:
    """The real admin app on its own event loop, so it keeps streaming while ours is blocked."""

    def __init__(self, surface: FakeSurface) -> None:
        self.surface = surface
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._admin: AdminServer | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._stop())
        self.loop.close()

    async def _start(self) -> None:
        self._admin = await start_admin(
            self.surface, host="127.0.0.1", port=0, token="t", server_info={}
        )
        self.port = self._admin.port

    async def _stop(self) -> None:
        if self._admin is not None:
            await self._admin.close(grace=1.0)

    def burst(self, n: int) -> None:
        # Counted on the server's own loop, between two of its snapshots.
        self.loop.call_soon_threadsafe(self.surface.stats.counter(TOTAL).inc, n)

    @contextmanager
    def running(self) -> Iterator[str]:
        self._thread.start()
        assert self._ready.wait(WAIT)
        try:
            yield f"http://127.0.0.1:{self.port}"
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)


async def test_a_slow_consumer_gets_folded_views_and_never_a_backlog() -> None:
    server = ThreadedAdmin(FakeSurface())
    views: list[MeshView] = []

    def slow(view: MeshView) -> None:
        views.append(view)
        if len(views) == 4:
            server.burst(23)
        # A terminal that takes four intervals to draw (blocking the loop, as a slow render does).
        time.sleep(4 * INTERVAL)

    with server.running() as url:
        source = TelemetrySource([("a", url)], interval=INTERVAL)
        task = asyncio.create_task(source.run(slow))
        try:
            await wait_until(lambda: len(views) >= 10, "ten views")
            client = source.clients()["a"]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    totals = [r.total for v in views for r in v.routes if r.key == "backend/items"]
    # The burst shows once, whole, although it reached us inside one of several snapshots
    # that arrived while the consumer was busy: folded, not dropped, not repeated.
    assert sorted(set(totals)) == [0, 23]
    assert totals.count(23) == 1
    assert client.snapshots >= 2 * len(views)


async def test_fake_source_emits_scripted_then_pushed_views_in_order() -> None:
    scripted = [MeshView(at=float(i)) for i in range(3)]
    source = FakeSource(scripted, interval=0.01)
    source.set_targets([("a", "http://a")])
    source.interval = 0.02
    seen: list[MeshView] = []
    task = asyncio.create_task(source.run(seen.append))
    try:
        await wait_until(lambda: len(seen) == 3, "the script")
        source.push(MeshView(at=99.0))
        await wait_until(lambda: len(seen) == 4, "the pushed view")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [v.at for v in seen] == [0.0, 1.0, 2.0, 99.0]
    assert seen == source.emitted
    assert source.target_updates == [[("a", "http://a")]]
    assert source.interval_updates == [0.02]


async def test_fake_source_aggregates_stream_documents() -> None:
    cfg = sidecar_config("a", {"backend": {"items": {"backend": 1}}}, {})
    sidecar = SyntheticSidecar(cfg)
    source = FakeSource()
    source.push_snapshots({"a": sidecar.snapshot()})
    sidecar.request("backend", "items", "backend", 503, 2.0, count=4)
    view = source.push_snapshots({"a": sidecar.snapshot()}, stale=["b"])
    (items,) = view.routes
    assert (items.total, items.success_pct, items.codes) == (4, 0.0, {"503": 4})
    gone = source.push_snapshots({"a": sidecar.snapshot()}, disconnected=["a"])
    assert [e.text for e in gone.events] == ["a lost"]


@pytest.mark.parametrize("interval", [0.0, 0.01, 61.0])
def test_intervals_out_of_bounds_are_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval must be between"):
        TelemetrySource(interval=interval)
    source = TelemetrySource()
    with pytest.raises(ValueError, match="interval must be between"):
        source.interval = interval


def test_a_node_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        TelemetrySource([("a", "http://x"), ("a", "http://y")])


def test_both_sources_have_the_surface_the_dashboard_uses() -> None:
    # Checked by mypy as much as here: each assignment must type-check against the protocol.
    sources: list[ViewSource] = [TelemetrySource(), FakeSource()]
    for source in sources:
        source.set_targets([("a", "http://127.0.0.1:1/")])
        source.interval = 0.5
        assert source.interval == 0.5
