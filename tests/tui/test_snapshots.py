"""Snapshots of the main screens with deterministic data (`--snapshot-update` to accept).

The fake session's URLs point at a port nothing listens on: these screens never call out.
Clock, time zone (conftest) and views are fixed, so every run draws the same frames.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from textual.pilot import Pilot

from meshdev.runtime.base import PodState
from meshdev.testing.sample_views import EPOCH, sample_view
from meshdev.tui.app import MeshdevApp
from meshdev.tui.widgets.startup import StartupScreen
from tests.support import wait_until
from tests.tui.tuifakes import FakeSession, FakeSource, PodsServer, make_app, up


class SnapCompare(Protocol):
    def __call__(
        self,
        app: MeshdevApp,
        press: tuple[str, ...] = (),
        terminal_size: tuple[int, int] = (80, 24),
        run_before: Callable[[Pilot[Any]], Awaitable[None]] | None = None,
    ) -> bool: ...


def _app(*, fail: str | None = None) -> tuple[MeshdevApp, FakeSession, FakeSource]:
    server = PodsServer(url="http://127.0.0.1:8000")
    session = FakeSession(server, fail=fail)
    # Only the header's label: the mesh is FakeSession's fixture (tests/fixtures/demo), shown
    # under the path a user types, the same on every machine.
    session.mesh_file = Path("examples/flask-app/mesh.yaml")
    session.runtime.states = [
        PodState(p.name, p.service, p.subset, "running", "127.0.99.2", "")
        for p in _pod_specs(session)
    ]
    source = FakeSource()
    return make_app(source, session, clock=lambda: EPOCH), session, source


def _pod_specs(session: FakeSession) -> list[Any]:
    from meshdev import plan

    return plan.pods(session.mesh)


def _showing(tick: int, *keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, MeshdevApp)
        source = app.source
        assert isinstance(source, FakeSource)
        await wait_until(
            lambda: up(app).started and source.on_view is not None, "start", pause=pilot.pause
        )
        await wait_until(lambda: len(up(app).pod_states) == 5, "pod states", pause=pilot.pause)
        view = sample_view(tick)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        presses = list(keys)
        if presses[:1] == ["routes"]:
            app.dashboard.routes.focus()
            presses = presses[1:]
        if presses:
            await pilot.press(*presses)
        await pilot.pause()

    return run_before


def test_traffic_with_the_breaker_open(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(120, 36), run_before=_showing(4))


def test_traffic_with_a_host_ejected(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(120, 36), run_before=_showing(9))


def test_route_detail(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(120, 36), run_before=_showing(4, "routes", "enter"))


def test_pods(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(120, 24), run_before=_showing(4, "2"))


def test_events(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(100, 24), run_before=_showing(8, "3"))


def test_help(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(100, 30), run_before=_showing(0, "question_mark"))


def test_rejected_save_banner(snap_compare: SnapCompare) -> None:
    app, session, _ = _app()

    async def run_before(pilot: Pilot[Any]) -> None:
        await _showing(1)(pilot)
        await session.saves.put(
            ["mesh.yaml:14:7 routes.backend[0].timeout: expected a duration like 250ms or 2s"]
        )
        await wait_until(lambda: not up(app).reload_ok, "rejection", pause=pilot.pause)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 30), run_before=run_before)


def test_failed_start(snap_compare: SnapCompare) -> None:
    app, _, _ = _app(
        fail="pod backend-v1-0: app exited with code 1 at start; last lines:\n"
        "  ModuleNotFoundError: No module named 'flask'"
    )

    async def run_before(pilot: Pilot[Any]) -> None:
        def shown() -> bool:
            screen = pilot.app.screen
            return isinstance(screen, StartupScreen) and screen.failed

        await wait_until(shown, "failure shown", pause=pilot.pause)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


def test_tiny_terminal(snap_compare: SnapCompare) -> None:
    app, _, _ = _app()
    assert snap_compare(app, terminal_size=(40, 10), run_before=_showing(4))
