"""The security tab, for a mesh with mutual TLS and authorization and for a plaintext one
(`--snapshot-update` to accept)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from meshdev.telemetry.aggregation.view import MeshView
from meshdev.testing.sample_views import sample_view, secured_mesh
from meshdev.tui.app import MeshdevApp
from tests.support import wait_until
from tests.tui.test_snapshots import SnapCompare, _app
from tests.tui.tuifakes import FakeSource, up


def _security_tab(view: MeshView) -> Callable[[Pilot[Any]], Awaitable[None]]:
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
        await pilot.press("5")
        await pilot.pause()

    return run_before


def test_security_with_mtls_and_authorization(snap_compare: SnapCompare) -> None:
    app, session, _ = _app()
    session.mesh = secured_mesh(session.mesh)
    view = sample_view(4, secured=True)
    assert snap_compare(app, terminal_size=(140, 24), run_before=_security_tab(view))


def test_security_of_a_plaintext_mesh(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(120, 16), run_before=_security_tab(sample_view(4)))


def test_route_detail_explains_its_403s(snap_compare: SnapCompare) -> None:
    app, session, _ = _app()
    session.mesh = secured_mesh(session.mesh)
    view = sample_view(4, secured=True)

    async def run_before(pilot: Pilot[Any]) -> None:
        await _security_tab(view)(pilot)
        await pilot.press("1")
        assert isinstance(pilot.app, MeshdevApp)
        pilot.app.dashboard.routes.focus()
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(140, 40), run_before=run_before)
