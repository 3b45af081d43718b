"""The meshdev dashboard: paints the telemetry source's views, and takes the keys.

What runs the mesh is the app's session controller (controllers.py): `meshdev up` starts the
session inside the app, `meshdev watch` shows proxies started elsewhere. The app asks the
controller what to start once it is ready, what the header and the pods tab show, what the
demo keys act on and what quitting means, and hands it the session's messages.

Workers fetch (stream views here; start the session, follow the file, poll pod states, run
the one-key actions elsewhere) and post typed messages (messages.py); handlers render them
onto the screens. No worker may end the app: each runs with exit_on_error=False and what goes
wrong arrives as WorkerFailed, which is shown as a toast and an event.

Views pass through a one-slot mailbox, so a slow terminal drops stale views instead of
queueing them, and are painted at the frame pacer's pace. Spans come apart from views: a trace
feed (ports.TraceFeed) reads the same sidecars' /spans about once a second into its store,
and the Traces tab is painted from that store while it shows.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable
from textual.worker import Worker, WorkerState

from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.view import Event, MeshView
from meshdev.tui.controllers import SessionController
from meshdev.tui.logic.load_control import load_route, watching_text
from meshdev.tui.logic.mailbox import ViewMailbox
from meshdev.tui.logic.pacer import FramePacer
from meshdev.tui.logic.ports import TraceFeed, ViewSource
from meshdev.tui.logic.recent import RecentFailures
from meshdev.tui.logic.traces import trace_for_events, trace_for_route
from meshdev.tui.messages import (
    ActionDone,
    CodeRolled,
    KeyApplied,
    PodStates,
    ReloadApplied,
    ReloadRejected,
    RetryStart,
    SessionMessage,
    StartupFailed,
    StartupFinished,
    StartupLine,
    TornDown,
    TracesChanged,
    ViewReady,
    WorkerFailed,
)
from meshdev.tui.screens.dashboard import TABS, DashboardScreen
from meshdev.tui.screens.help import HelpScreen
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.screens.trace_detail import TraceDetailScreen

TELEMETRY_RETRY_S = 2.0
# After the terminal closed and the mesh is down: how long Textual's shut-down may take.
HUNG_UP_GRACE_S = 5.0
# Failure events remembered for `t` in the events tab (the newest one with a trace wins).
FAILURE_EVENTS = 50
# The collector's youngest generation, once the app is up (Python's default: 700). Each view
# of a 41-pod mesh allocates thousands of short-lived objects; at 700 the collector passed
# over them ~50 times a second and promoted enough to run a full pass every few seconds: 12-16 %
# of the dashboard's CPU, ~4 % at 10,000, where most are freed by their reference counts
# before a pass sees them (benchmarks/README.md, Dashboard telemetry at 41 sidecars).
GC_YOUNG_THRESHOLD = 10_000
# How long after a toast's timeout the screen is repainted (its removal takes a moment).
TOAST_REPAINT_AFTER_S = 0.3


class MeshdevApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "meshdev"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
        # On the app, not the dashboard: the events log's Enter and the route detail's t
        # ask for it too.
        Binding("t", "trace", "Trace"),
    ]

    def __init__(
        self,
        source: ViewSource,
        controller: SessionController,
        *,
        handle_signals: bool = False,
        clock: Callable[[], float] = time.time,
        pacer: FramePacer | None = None,
        traces: TraceFeed | None = None,
    ) -> None:
        super().__init__()
        # No sliding tab underlines or smooth scrolling: each animation is a train of
        # frames, and a key should cost one.
        self.animation_level = "none"
        self.source = source
        self.traces = traces
        self.controller = controller
        self.handle_signals = handle_signals
        self.clock = clock  # wall-clock time of events; fixed in snapshot tests
        self.mailbox = ViewMailbox()
        # The 403s and failed handshakes of the last seconds, for the explanations of them.
        self.recent = RecentFailures()
        self.pacer = pacer or FramePacer()
        self.painted = 0  # views painted (the rest were replaced while waiting)
        self._trend_second = -1
        self._paced: Timer | None = None
        self.view: MeshView | None = None
        self.quitting = False
        self._failures: dict[str, str] = {}
        self._quit_pressed_at: float | None = None
        self._failure_events: deque[Event] = deque(maxlen=FAILURE_EVENTS)
        # The mesh whose load route the routes table was last told of (a save may move it).
        self._routed_for: Mesh | None = None
        controller.attach(self)
        self.dashboard = DashboardScreen(controller.header(None), controller.log_reader)

    def get_default_screen(self) -> Screen[None]:
        return self.dashboard

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)
        # An expired toast is removed without a repaint of what it covered, and the tables
        # repaint only the rows whose figures changed (tables/fast.py): the rest of the toast
        # stayed on screen, over the Hosts table, until a resize. A repaint once it is gone.
        wait = self.NOTIFICATION_TIMEOUT if timeout is None else timeout
        self.set_timer(wait + TOAST_REPAINT_AFTER_S, self._repaint_under_toasts)

    def _repaint_under_toasts(self) -> None:
        self.screen.refresh()

    def on_ready(self) -> None:
        # Ready, not mount: the default screen's widgets exist only from here on.
        if self.handle_signals:
            # SIGTERM (e.g. from `meshdev down` or a service manager) quits like `q`, and so
            # does SIGHUP (the terminal window closed): its default, dying at once, left every
            # pod running, detached, with the ingress port taken.
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, lambda: self.call_later(self.action_quit))
            loop.add_signal_handler(signal.SIGHUP, self._hung_up)
        self.set_interval(1.0, self._show_load)
        self._show_load()
        # What exists now (modules, widgets, styles) lives as long as the app: out of the
        # collector's full passes, which otherwise stall a key press by 30-60 ms every few
        # seconds (benchmarks/README.md, Dashboard).
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        if self.traces is not None:
            self.run_traces()
        self.controller.begin()

    # -- telemetry ---------------------------------------------------------------------------

    @work(group="telemetry", exclusive=True, exit_on_error=False, description="telemetry")
    async def run_telemetry(self) -> None:
        """Stream views into the mailbox until cancelled (restarted after a failure)."""
        await self.source.run(self._on_view)

    @work(group="traces", exclusive=True, exit_on_error=False, description="traces")
    async def run_traces(self) -> None:
        """Read the watched sidecars' spans into the feed's store until cancelled."""
        assert self.traces is not None
        await self.traces.run(lambda: self.source.targets, self._on_spans)

    def _on_spans(self) -> None:
        self.post_message(TracesChanged())

    @on(TracesChanged)
    def _traces_changed(self) -> None:
        if self.traces is None or not self.dashboard.live:
            return
        store = self.traces.store
        if self.dashboard.tabs.active == "traces":
            self.dashboard.show_traces(store, self.traces.outcomes())
        if isinstance(self.screen, TraceDetailScreen):
            trace = store.get(self.screen.trace.trace_id)
            if trace is not None:
                self.screen.show(trace)

    def _on_view(self, view: MeshView) -> None:
        # Every view, also one the mailbox will drop: a sparse 403 may be in that one only.
        self.recent.observe(view, security=self._security_shown())
        if self.mailbox.put(view):
            self.post_message(ViewReady())

    def _security_shown(self) -> bool:
        """Whether the security tab or a route detail shows what the views' edges say."""
        if isinstance(self.screen, RouteDetailScreen):
            return True
        return self.dashboard.live and self.dashboard.tabs.active == "security"

    @on(ViewReady)
    def _view_ready(self) -> None:
        wait = self.pacer.delay()
        if wait > 0:
            # Over the frame budget: the view waits in the mailbox (newer ones replace it).
            if self._paced is None:
                self._paced = self.set_timer(wait, self._paced_view)
            return
        view, events = self.mailbox.take()
        if view is None or not self.dashboard.live:
            return
        self.pacer.painted()
        self.painted += 1
        self.view = view
        self._failure_events.extend(e for e in events if e.cluster)
        # Trends get a bar per second, redrawn when a new second starts.
        step = max(1, round(1.0 / self.source.interval))
        second = math.floor(view.at)
        trends, self._trend_second = second != self._trend_second, second
        mesh = self.controller.mesh()
        if mesh is not self._routed_for:
            self._routed_for = mesh
            self.dashboard.routes.home = load_route(mesh)
        with self.batch_update():
            self.dashboard.show_view(view, step, trends)
            self.dashboard.add_events(events)
            self.show_header()
            active = self.dashboard.tabs.active
            if self.controller.started and active == "pods":
                self.controller.show_pods()
            elif active == "security":
                self.dashboard.show_security(self.controller.mesh(), self.recent)
            if isinstance(self.screen, RouteDetailScreen):
                self.screen.show(view, self.controller.mesh())

    def _paced_view(self) -> None:
        self._paced = None
        self._view_ready()

    # -- what the controller paints with -----------------------------------------------------

    def show_header(self) -> None:
        self.dashboard.show_facts(self.controller.header(self.view))

    def add_event(self, kind: str, text: str) -> None:
        self.dashboard.add_events([Event(self.clock(), kind, text)])

    def forget_failure(self, what: str) -> None:
        """`what` works again: the next time it fails is news (a toast and an event)."""
        self._failures.pop(what, None)

    def cancel_workers(self, *groups: str) -> None:
        """Cancel the app's workers of these groups (the controller's run on the app too)."""
        for group in groups:
            self.workers.cancel_group(self, group)

    def _show_load(self) -> None:
        commands = self.controller.commands
        if commands is not None:
            self.dashboard.show_load(commands.load_text())
        else:
            self.dashboard.show_load(watching_text())

    # -- the session's messages: its controller's to handle ---------------------------------

    @on(StartupLine)
    @on(StartupFailed)
    @on(RetryStart)
    @on(StartupFinished)
    @on(ReloadApplied)
    @on(KeyApplied)
    @on(ReloadRejected)
    @on(CodeRolled)
    @on(PodStates)
    @on(TornDown)
    def _session_message(self, message: SessionMessage) -> None:
        self.controller.handle(message)

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
            self.add_event("error", f"{message.what}: {message.error}")
        if message.what == "telemetry" and not self.quitting:
            self.set_timer(TELEMETRY_RETRY_S, self.run_telemetry)
        if message.what == "traces" and not self.quitting:
            self.set_timer(TELEMETRY_RETRY_S, self.run_traces)
        self.controller.handle(message)

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        self._show_load()  # the load keys' effect shows at once, not at the next tick
        self.notify(message.text, severity="information" if message.ok else "error", timeout=4)
        self.add_event("action" if message.ok else "error", message.text)

    # -- keys (the demo keys are the dashboard screen's) -----------------------------------------

    def action_tab(self, tab: str) -> None:
        if tab not in TABS or self.screen is not self.dashboard:
            return
        first = {
            "traffic": "#routes",
            "pods": "#pods-table",
            "events": "#events-log",
            "security": "#edges",
            "traces": "#traces-table",
        }
        target = self.dashboard.query_one(first.get(tab, "#log-sources"))
        # One frame for the switch: the tab, its content and the focus change together
        # (`Widget.focus` would move the focus a callback later, repainting the screen again).
        with self.batch_update():
            self.dashboard.tabs.active = tab
            if tab == "pods":
                self.controller.show_pods()
            elif tab == "security":
                self.dashboard.show_security(self.controller.mesh(), self.recent)
            elif tab == "traces":
                feed = self.traces
                if feed is None:
                    self.dashboard.show_traces(None)
                else:
                    self.dashboard.show_traces(feed.store, feed.outcomes())
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
            self.push_screen(
                RouteDetailScreen(route, self.controller.mesh(), self.view, self.recent)
            )

    @on(DataTable.RowSelected, "#traces-table")
    def _trace_selected(self, event: DataTable.RowSelected) -> None:
        trace = self.dashboard.traces.selected()
        if trace is not None:
            self.push_screen(TraceDetailScreen(trace, self.controller.mesh()))

    def action_trace(self) -> None:
        """`t`: an example trace of what is selected: the route of the route detail or of
        the routes table (its newest failed trace, else its newest), or, in the events tab,
        the newest failed trace through the cluster of the newest breaker or ejection."""
        if self.traces is None:
            self.notify("no trace source here", severity="warning", timeout=3)
            return
        traces = self.traces.store.traces()
        screen = self.screen
        if isinstance(screen, TraceDetailScreen):
            return
        if isinstance(screen, RouteDetailScreen):
            found, what = trace_for_route(traces, screen.route), f"route {screen.route.key}"
        elif screen is self.dashboard and self.dashboard.tabs.active == "events":
            found, what = trace_for_events(traces, self._failure_events), "a breaker or ejection"
        elif screen is self.dashboard and self.dashboard.tabs.active == "traffic":
            key = self.dashboard.routes.cursor_key
            route = next((r for r in self.view.routes if r.key == key), None) if self.view else None
            if route is None:
                self.notify("select a route first", severity="warning", timeout=3)
                return
            found, what = trace_for_route(traces, route), f"route {route.key}"
        else:
            return
        if found is None:
            self.notify(f"no trace of {what} yet", severity="warning", timeout=3)
            return
        self.push_screen(TraceDetailScreen(found, self.controller.mesh()))

    # -- quitting ------------------------------------------------------------------------------

    def _hung_up(self) -> None:
        """The terminal closed: quit as q does, then make sure the process ends. Textual's
        shut-down still writes to the terminal that is gone; once its output thread has died
        on that (EIO), a write blocks for ever on the full queue, and `up` stayed alive, its
        mesh down, its pid still in the mesh's state (so the next `up` was refused)."""
        self.call_later(self.action_quit)
        threading.Thread(target=self._end_once_stopped, name="hung-up", daemon=True).start()

    def _end_once_stopped(self) -> None:
        while not self.controller.stopped:
            time.sleep(0.1)
        time.sleep(HUNG_UP_GRACE_S)  # a shut-down that goes well ends the process first
        os._exit(128 + signal.SIGHUP)  # as a shell reports a death by SIGHUP

    async def action_quit(self) -> None:
        if self.quitting:
            self.notify("still stopping; Ctrl-C again leaves it to `meshdev down`", timeout=3)
            if self._quit_pressed_at and time.monotonic() - self._quit_pressed_at > 0.5:
                self.exit(130, return_code=130, message="interrupted while stopping")
            return
        self.quitting = True
        self.dashboard.commands = None  # no demo key acts while the mesh goes away
        self._quit_pressed_at = time.monotonic()
        self.cancel_workers("telemetry", "traces", "logs")
        self.dashboard.logs.workers.cancel_group(self.dashboard.logs, "logs")
        self.controller.quit()
