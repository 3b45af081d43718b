"""`meshdev up` with the dashboard: run the app, which starts the session inside itself, and
make sure nothing is left running when it ends, however it ends. `meshdev watch`: the same
dashboard on proxies something else runs (it starts and stops nothing)."""

from __future__ import annotations

import asyncio
import sys

from meshdev.session import Session
from meshdev.telemetry.io.source import ProxyTarget, TelemetrySource
from meshdev.tui.app import MeshdevApp


def run_dashboard(session: Session, *, keep: bool) -> int:
    app = MeshdevApp(TelemetrySource(), session, keep=keep, handle_signals=True)
    # Progress lines go to the app's start-up screen and events panel, not the terminal.
    say, progress = session.say, session.control.progress
    session.say = app.say
    session.control.progress = app.say
    try:
        app.run()
    finally:
        # Back to the terminal: the app that took the lines is gone.
        session.say, session.control.progress = say, progress
        if not app.torn_down and not keep:
            # The app ended without its own tear-down (a crash, or Ctrl-C while stopping):
            # what it started must not outlive it.
            _stop(session)
    return app.return_code or 0


def run_watch(targets: list[ProxyTarget], interval: float) -> int:
    source = TelemetrySource(targets, interval=interval)
    noun = "proxy" if len(targets) == 1 else "proxies"
    app = MeshdevApp(source, None, title=f"watching {len(targets)} {noun}", handle_signals=True)
    app.run()
    return app.return_code or 0


def _stop(session: Session) -> None:
    try:
        removed = asyncio.run(session.stop())
    except (OSError, RuntimeError) as exc:
        print(
            f"meshdev: tear-down failed ({exc}); run `meshdev down {session.mesh_file}`",
            file=sys.stderr,
        )
        return
    print(f"removed {len(removed)} processes/containers", file=sys.stderr)
