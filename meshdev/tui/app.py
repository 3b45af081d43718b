"""The meshdev dashboard: wires the session and the telemetry source to the screens.

Workers fetch (start the session, follow the file, stream views, poll pod states, run the
one-key actions) and post typed messages (messages.py); handlers render them onto the
screens. No worker may end the app: each runs with exit_on_error=False and what goes wrong
arrives as WorkerFailed, which is shown as a toast and an event.

The app is built in layers, each a module: app_live.py (its state, live views and pod states),
app_session.py (`meshdev up`'s session: start, reloads, tear down), and this one: start-up,
failures, keys and quitting.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time

from textual import on
from textual.binding import Binding
from textual.widgets import DataTable
from textual.worker import Worker, WorkerState

from meshdev.tui.app_session import SessionApp
from meshdev.tui.messages import ActionDone, WorkerFailed
from meshdev.tui.screens.dashboard import TABS
from meshdev.tui.screens.help import HelpScreen
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.widgets.startup import StartupScreen

TELEMETRY_RETRY_S = 2.0


class MeshdevApp(SessionApp):
    CSS_PATH = "app.tcss"
    TITLE = "meshdev"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def on_ready(self) -> None:
        # Ready, not mount: the default screen's widgets exist only from here on.
        if self.handle_signals:
            # SIGTERM (e.g. from `meshdev down` or a service manager) quits like `q`.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: self.call_later(self.action_quit)
            )
        self.set_interval(1.0, self._show_load)
        self._show_load()
        # What exists now (modules, widgets, styles) lives as long as the app: out of the
        # collector's full passes, which otherwise stall a key press by 30-60 ms every few
        # seconds (benchmarks/README.md, Dashboard).
        gc.freeze()
        if self.session is None:
            self._run_telemetry()
            return
        self._seen_reload = self.session.last_reload
        self.push_screen(StartupScreen(self._startup_title(), self.session.mesh.pod_count()))
        self._start_session()

    # -- failures ----------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR:
            error = worker.error
            self.post_message(
                WorkerFailed(worker.description or worker.name, f"{type(error).__name__}: {error}")
            )

    @on(WorkerFailed)
    def _worker_failed(self, message: WorkerFailed) -> None:
        if self._failures.get(message.what) != message.error:
            self._failures[message.what] = message.error
            self.notify(message.error, title=f"{message.what} failed", severity="error")
            self._event("error", f"{message.what}: {message.error}")
        if message.what == "meshdev up" and isinstance(self.screen, StartupScreen):
            self.screen.show_failure(message.error)
        if message.what == "telemetry" and not self.quitting:
            self.set_timer(TELEMETRY_RETRY_S, self._run_telemetry)
        if message.what == "tear down":
            self.exit(1, return_code=1, message=f"tear down failed: {message.error}")

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self._show_load()  # the load keys' effect shows at once, not at the next tick
        self.notify(message.text, severity="information" if message.ok else "error", timeout=4)
        self._event("action" if message.ok else "error", message.text)

    # -- keys (the demo keys are the dashboard screen's) -----------------------------------------

    def action_tab(self, tab: str) -> None:
        if tab not in TABS or self.screen is not self.dashboard:
            return
        first = {"traffic": "#routes", "pods": "#pods-table", "events": "#events-log"}
        target = self.dashboard.query_one(first.get(tab, "#log-sources"))
        # One frame for the switch: the tab, its content and the focus change together
        # (`Widget.focus` would move the focus a callback later, repainting the screen again).
        with self.batch_update():
            self.dashboard.tabs.active = tab
            if tab == "pods":
                self._show_pods()
            self.dashboard.set_focus(target)

    def action_filter_logs(self) -> None:
        self.action_tab("logs")
        self.dashboard.logs.focus_filter()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        # Installed once and kept: composing it anew made every `?` a slower frame.
        if not self.is_screen_installed("help"):
            self.install_screen(HelpScreen(), name="help")
        self.push_screen("help")

    @on(DataTable.RowSelected, "#routes")
    def _route_selected(self, event: DataTable.RowSelected) -> None:
        if self.view is None:
            return
        key = str(event.row_key.value)
        route = next((r for r in self.view.routes if r.key == key), None)
        if route is not None:
            self.push_screen(RouteDetailScreen(route, self._mesh(), self.view))

    # -- quitting ------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        if self.quitting:
            self.notify("still stopping; Ctrl-C again leaves it to `meshdev down`", timeout=3)
            if self._quit_pressed_at and time.monotonic() - self._quit_pressed_at > 0.5:
                self.exit(130, return_code=130, message="interrupted while stopping")
            return
        self.quitting = True
        self.dashboard.commands = None  # no demo key acts while the mesh goes away
        self._quit_pressed_at = time.monotonic()
        for group in ("telemetry", "follow", "pods", "logs"):
            self.workers.cancel_group(self, group)
        self.dashboard.logs.workers.cancel_group(self.dashboard.logs, "logs")
        if self.session is None:
            self.exit(0)
            return
        what = "leaving the mesh running (--keep)" if self.keep else "stopping the mesh"
        self.notify(f"{what}...", timeout=30)
        self._event("info", what)
        self._tear_down()
