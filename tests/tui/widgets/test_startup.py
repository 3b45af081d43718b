"""Start-up inside the app, its failure and retry, and quitting (tear-down unless --keep)."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.message import Message
from textual.widgets import ProgressBar, RichLog, Static

from meshdev.tui.messages import StartupFailed, StartupFinished, StartupLine, TornDown
from meshdev.tui.screens.dashboard import DashboardScreen
from meshdev.tui.widgets.startup import StartupScreen
from tests.support import wait_until
from tests.tui.tuifakes import FakeSession, FakeSource, make_app, started, up


async def test_startup_shows_progress_then_the_dashboard(
    session: FakeSession, source: FakeSource
) -> None:
    session.start_delay = 0.02
    session.gate = asyncio.Event()
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        await wait_until(
            lambda: isinstance(app.screen, StartupScreen), "start-up screen", pause=pilot.pause
        )
        startup = app.screen
        assert isinstance(startup, StartupScreen)
        await wait_until(lambda: len(startup.ready) == 5, "every pod ready", pause=pilot.pause)
        # Every pod's "ready" line advanced the bar to the full count.
        assert startup.ready == list(session.control.pods)
        bar = startup.query_one("#pods-bar", ProgressBar)
        assert (bar.progress, bar.total) == (5, 5)
        assert "starting 5 pods" in startup.query_one("#startup-log", RichLog).lines[1].text
        session.gate.set()
        await started(pilot, app, source)
        assert isinstance(app.screen, DashboardScreen)
        lines = [m.text for m in seen if isinstance(m, StartupLine)]
        assert "starting 5 pods" in lines
        assert any(isinstance(m, StartupFinished) for m in seen)
        # Telemetry watches every pod's sidecar.
        assert sorted(source.targets) == sorted(
            (p.name, p.started.admin_url) for p in session.control.pods.values()
        )
        assert "applied v1 to 5/5" in up(app).reload_text


async def test_a_failed_start_shows_its_cause_and_the_way_out(
    session: FakeSession, source: FakeSource
) -> None:
    session.fail = "pod backend-v1-0: app exited with code 1 at start"
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        await wait_until(
            lambda: any(isinstance(m, StartupFailed) for m in seen), "fail", pause=pilot.pause
        )
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, StartupScreen)
        error = screen.query_one("#startup-error", Static)
        assert error.display
        text = str(error.render())
        assert "app exited with code 1" in text
        assert "q quits" in text
        assert "r to retry" in text
        # The way out: fix the cause, press r, and the mesh starts.
        session.fail = None
        await pilot.press("r")
        await started(pilot, app, source)
        assert isinstance(app.screen, DashboardScreen)


async def test_quit_tears_the_mesh_down(session: FakeSession, source: FakeSource) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        await pilot.press("q")
        await wait_until(lambda: up(app).torn_down, "tear-down", pause=pilot.pause)
    assert session.stopped == 1
    done = [m for m in seen if isinstance(m, TornDown)]
    assert done and "removed 5" in done[0].text
    assert app.return_code == 0


async def test_quit_with_keep_leaves_the_mesh_running(
    session: FakeSession, source: FakeSource
) -> None:
    seen: list[Any] = []
    app = make_app(source, session, keep=True)
    async with app.run_test(message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        await pilot.press("q")
        await wait_until(lambda: up(app).torn_down, "quit", pause=pilot.pause)
    assert (session.stopped, session.left) == (0, 1)  # what up runs for the mesh stops
    assert any(isinstance(m, TornDown) and "--keep" in m.text for m in seen)


async def test_quit_during_a_failed_start_still_cleans_up(
    session: FakeSession, source: FakeSource
) -> None:
    session.fail = "no Docker engine answers"
    app = make_app(source, session)
    async with app.run_test() as pilot:
        await wait_until(
            lambda: isinstance(app.screen, StartupScreen), "start-up", pause=pilot.pause
        )
        await wait_until(
            lambda: app.screen.query_one("#startup-error").display, "error", pause=pilot.pause
        )
        await pilot.press("q")
        await wait_until(lambda: up(app).torn_down, "tear-down", pause=pilot.pause)
    assert session.stopped == 1
    assert app.return_code == 1
