"""Terminal sizes from 40x10 to 300x100 and back, repeatedly; LANG=C; keys before any data."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

from textual.message import Message

from meshdev.telemetry.aggregation.view import MeshView
from meshdev.testing.sample_views import sample_view
from meshdev.tui.app import MeshdevApp
from meshdev.tui.logic.format import GLYPHS
from meshdev.tui.messages import WorkerFailed
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.tables.clusters import breaker_cell
from tests.support import ROOT, wait_until
from tests.tui.tuifakes import FakeSession, FakeSource, make_app, started

SIZES = [(40, 10), (300, 100), (80, 24), (41, 11), (200, 50), (40, 10), (300, 100)]


async def test_resizing_from_40x10_to_300x100_keeps_every_panel_alive(
    session: FakeSession, source: FakeSource
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        for tick, (width, height) in enumerate(SIZES):
            await pilot.resize_terminal(width, height)
            view = sample_view(tick, routes=20)
            source.emit(view)
            await wait_until(_showing(app, view), f"view at {width}x{height}", pause=pilot.pause)
            assert app.screen.size == (width, height)
            # What is drawn is what the data says, at every size.
            assert app.dashboard.routes.keys == [r.key for r in view.routes]
            breaker = app.dashboard.clusters.cell_text("backend", "breaker").strip()
            assert breaker == breaker_cell(view.clusters[0]).plain.strip()
            assert (breaker == "OPEN") is view.clusters[0].open_now
            short = height < 22
            assert app.dashboard.has_class("-short") is short
            assert app.dashboard.query_one("#hosts").display is not short
            # Keys work at any size: the route detail opens and closes.
            app.dashboard.routes.focus()
            await pilot.press("enter")
            await wait_until(
                lambda: isinstance(app.screen, RouteDetailScreen), "detail", pause=pilot.pause
            )
            await pilot.press("escape")
            await wait_until(lambda: app.screen is app.dashboard, "back", pause=pilot.pause)
        assert not [m for m in seen if isinstance(m, WorkerFailed)]


def _showing(app: MeshdevApp, view: MeshView) -> Callable[[], bool]:
    return lambda: app.view is view


async def test_keys_before_any_data_do_not_fail(session: FakeSession, source: FakeSource) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        # While the mesh starts: only quit and help mean something; the rest are ignored.
        await pilot.press("l", "b", "x", "f", "w", "s", "enter", "1", "4", "2")
        await started(pilot, app, source)
        await pilot.press("enter", "s", "4", "slash", "escape", "3", "1")
        assert app.view is None
        assert not [m for m in seen if isinstance(m, WorkerFailed)]


def test_runs_under_lang_c() -> None:
    """The whole app, headless, in a process whose locale is C: draws, takes keys, exits 0."""
    script = textwrap.dedent(
        """
        import asyncio
        from meshdev.tui.app import MeshdevApp
        from meshdev.tui.controllers import WatchController
        from meshdev.testing.sample_views import SampleSource

        async def main() -> None:
            app = MeshdevApp(SampleSource(hz=20, routes=20), WatchController())
            # 120 columns: at 100 the 20 routes' scrollbar leaves no room for the trend.
            async with app.run_test(size=(120, 30)) as pilot:
                await pilot.pause(0.5)
                await pilot.press("tab", "enter", "escape", "3", "1", "question_mark", "escape")
                await pilot.pause(0.2)
                routes = app.dashboard.routes
                assert len(routes.keys) == 20, routes.keys
                print("trend:", routes.cell_text(routes.keys[0], "trend"))
                await pilot.press("q")
            print("exit:", app.return_code)

        asyncio.run(main())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LANG="C", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exit: 0" in proc.stdout
    trend = next(line for line in proc.stdout.splitlines() if line.startswith("trend:"))
    bars = trend.split(":", 1)[1].strip()
    assert bars  # a sparkline was drawn, in glyphs the terminal was told to expect
    assert set(bars) <= set(GLYPHS)
