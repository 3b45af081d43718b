"""`meshdev up` with the dashboard: run the app, which starts the session inside itself, and
make sure nothing is left running when it ends, however it ends. `meshdev watch`: the same
dashboard on proxies something else runs (it starts and stops nothing)."""

from __future__ import annotations

import asyncio
import sys

from meshdev.config.model import Mesh
from meshdev.session import Session
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.io.source import ProxyTarget, TelemetrySource
from meshdev.telemetry.io.spans import SpanReader
from meshdev.tui.app import MeshdevApp
from meshdev.tui.controllers import SessionController, UpController, WatchController
from meshdev.tui.logic.ports import TraceFeed
from meshdev.tui.session_traces import SessionTraces
from meshdev.tui.session_watch import SessionWatchController


def run_dashboard(session: Session, *, keep: bool) -> int:
    controller = UpController(session, keep=keep)
    # The session's trace history is the Traces view's feed: the sidecars are read once.
    app = MeshdevApp(TelemetrySource(), controller, handle_signals=True, traces=session.history)
    # Progress lines go to the app's start-up screen and events panel, not the terminal.
    terminal = session.send_progress_to(controller.say)
    try:
        app.run()
    finally:
        # Back to the terminal: the app that took the lines is gone.
        session.send_progress_to(terminal)
        if not controller.torn_down and not keep:
            # The app ended without its own tear-down (a crash, or Ctrl-C while stopping):
            # what it started must not outlive it.
            _stop(session)
    return app.return_code or 0


def run_watch(
    targets: list[ProxyTarget],
    interval: float,
    mesh: Mesh | None = None,
    session_of: str | None = None,
    keys_url: str | None = None,
) -> int:
    """`mesh`: the watched mesh's model, when its file was given (`watch --mesh FILE`);
    `session_of`: the name of the mesh whose running `meshdev up` is followed through its
    state file (the pods it adds and removes, its reloads, its pods' states); `keys_url`: where
    that `up` (`--web`) acts on the demo keys (tui/remote_keys.py)."""
    source = TelemetrySource(targets, interval=interval)
    controller: SessionController
    if session_of is not None:
        controller = SessionWatchController(session_of, mesh, keys_url=keys_url)
    else:
        noun = "proxy" if len(targets) == 1 else "proxies"
        controller = WatchController(f"watching {len(targets)} {noun}", mesh)
    traces: TraceFeed = (
        SessionTraces(session_of) if session_of is not None else SpanReader(TraceStore())
    )
    app = MeshdevApp(source, controller, handle_signals=True, traces=traces)
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
