"""The dashboard's load line: ok is 2xx/3xx only, and what is not ok is said apart, within 80
columns (the load goes through the real load generator to the loopback pods server)."""

from __future__ import annotations

import re
from pathlib import Path

from textual.message import Message

from meshdev.tui.logic.commands import Commands
from tests.support import DEMO_MESH, wait_until
from tests.tui.logic.test_actions import done
from tests.tui.tuifakes import FakeSession, FakeSource, PodsServer, make_app, started


async def test_a_load_path_that_404s_is_not_shown_as_ok_on_80_columns(
    server: PodsServer, source: FakeSource, tmp_path: Path
) -> None:
    # The pods server routes /items only: a load to /nothing-here gets a 404 for each request,
    # which the line called "ok 100.0%".
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(
        DEMO_MESH.read_text().replace("  load_path: /items\n", "  load_path: /nothing-here\n")
    )
    session = FakeSession(server, mesh_file=mesh_file)
    seen: list[Message] = []
    app = make_app(source, session)
    try:
        async with app.run_test(size=(80, 30), message_hook=seen.append) as pilot:
            await started(pilot, app, source)
            await pilot.press("l")
            commands = app.controller.commands
            assert isinstance(commands, Commands)

            def shown() -> str:
                return str(app.dashboard.query_one("#load-bar").render())

            await wait_until(
                lambda: re.search(r"sent [1-9]", shown()) is not None, "requests", pause=pilot.pause
            )
            line = shown()
            assert "-> /nothing-here  sent " in line, line
            assert "ok 0.0%  4xx 100.0%" in line, line
            # All of it before the 80th column, where the bar is cut off.
            assert line.index("4xx 100.0%") + len("4xx 100.0%") <= 80, line
            assert "5xx" not in line and "err" not in line
            await pilot.press("l")
            await wait_until(
                lambda: any(m.text.startswith("load stopped:") for m in done(seen)),
                "the stop's sentence",
                pause=pilot.pause,
            )
            (stopped,) = [m for m in done(seen) if m.text.startswith("load stopped:")]
            assert stopped.text.endswith("requests, ok 0.0%  4xx 100.0%"), stopped.text
            last = shown()
            assert "last run: " in last and "ok 0.0%  4xx 100.0%" in last, last
    finally:
        await session.control.down()
