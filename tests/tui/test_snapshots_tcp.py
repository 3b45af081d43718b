"""The traffic tab with a tcp cluster: its request columns dashed, its connections in columns
that only a mesh with tcp clusters shows (`--snapshot-update` to accept)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from meshdev.telemetry.aggregation.view import BreakerLimit, ClusterStats, HostStats, MeshView
from meshdev.testing.sample_views import sample_view
from meshdev.tui.app import MeshdevApp
from tests.support import wait_until
from tests.tui.test_snapshots import SnapCompare, _app
from tests.tui.tuifakes import FakeSource, up


def with_cache(view: MeshView) -> MeshView:
    """The sample mesh plus `cache`, a tcp service (a Redis, say) with one host ejected."""
    cache = ClusterStats(
        "cache",
        2,
        1,
        1,
        (BreakerLimit("max_connections", 48, 50, False),),
        False,
        0.0,
        (),
        protocol="tcp",
        cx_active=48,
        cx_per_s=12.0,
        bytes_per_s=3_400_000.0,
        connect_fail_per_s=0.5,
    )
    hosts = (
        HostStats("cache", "cache-0", "127.0.99.9:15006", 12.0, None, False, 0, 0.0, 48,
                  protocol="tcp"),
        HostStats("cache", "cache-1", "127.0.99.10:15006", 0.0, None, True, 1, 27.0, 0,
                  ejected_by=("frontend-0",), protocol="tcp"),
    )  # fmt: skip
    return dataclasses.replace(view, clusters=(*view.clusters, cache), hosts=(*view.hosts, *hosts))


def _showing(view: MeshView) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, MeshdevApp)
        source = app.source
        assert isinstance(source, FakeSource)
        await wait_until(
            lambda: up(app).started and source.on_view is not None, "start", pause=pilot.pause
        )
        await wait_until(lambda: len(up(app).pod_states) == 5, "pod states", pause=pilot.pause)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        await pilot.pause()

    return run_before


def test_traffic_with_a_tcp_cluster(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    view = with_cache(sample_view(9))
    assert snap_compare(app, terminal_size=(160, 36), run_before=_showing(view))
