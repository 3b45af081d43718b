"""The meshdev dashboard: wires the session and the telemetry source to the screens.

Workers fetch (start the session, follow the file, stream views, poll pod states, run the
one-key actions) and post typed messages (messages.py); handlers here render them onto the
screens. Views pass through a one-slot mailbox, so a slow terminal drops stale views instead
of queueing them. No worker may end the app: each runs with exit_on_error=False and what goes
wrong arrives as WorkerFailed, which is shown as a toast and an event.
"""

from __future__ import annotations

import asyncio
import math
import re
import signal
import time
from collections.abc import Callable

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable
from textual.worker import Worker, WorkerState

from meshdev.config.model import Mesh
from meshdev.control import ReloadReport
from meshdev.runtime.base import PodState, RuntimeFailure
from meshdev.telemetry.view import Event, MeshView
from meshdev.tui.commands import Commands
from meshdev.tui.dashboard import TABS, DashboardScreen
from meshdev.tui.header import HeaderFacts, header_facts
from meshdev.tui.help_screen import HelpScreen
from meshdev.tui.load_control import load_line
from meshdev.tui.logs_view import LogReader
from meshdev.tui.mailbox import ViewMailbox
from meshdev.tui.messages import (
    ActionDone,
    PodStates,
    ReloadApplied,
    ReloadRejected,
    RetryStart,
    StartupFailed,
    StartupFinished,
    StartupLine,
    TornDown,
    ViewReady,
    WorkerFailed,
)
from meshdev.tui.pacer import FramePacer
from meshdev.tui.pods_table import pod_facts
from meshdev.tui.ports import SessionPort, ViewSource
from meshdev.tui.route_detail import RouteDetailScreen
from meshdev.tui.startup import StartupScreen

TELEMETRY_RETRY_S = 2.0
# Say-lines the typed reload messages already report; the events panel shows them once.
_REPORTED = re.compile(r"^(applied v\d+ |v\d+ failed: |.*: not applied, still serving |  )")


class MeshdevApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "meshdev"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(
        self,
        source: ViewSource,
        session: SessionPort | None = None,
        *,
        keep: bool = False,
        pods_every: float = 2.0,
        handle_signals: bool = False,
        title: str = "",
        clock: Callable[[], float] = time.time,
        pacer: FramePacer | None = None,
    ) -> None:
        super().__init__()
        # No sliding tab underlines or smooth scrolling: each animation is a train of
        # frames, and a key should cost one.
        self.animation_level = "none"
        self.source = source
        self.session = session
        self.keep = keep
        self.pods_every = pods_every
        self.handle_signals = handle_signals
        self.title_text = title
        self.clock = clock  # wall-clock time of events; fixed in snapshot tests
        self.mailbox = ViewMailbox()
        self.pacer = pacer or FramePacer()
        self.painted = 0  # views painted (the rest were replaced while waiting)
        self._trend_second = -1
        self._paced: Timer | None = None
        self.view: MeshView | None = None
        self.pod_states: dict[str, PodState] = {}
        self.commands = Commands(session) if session is not None else None
        self.started = session is None
        self.quitting = False
        self.torn_down = False
        self.exit_text = ""
        self.reload_text = "starting" if session is not None else "not running the mesh"
        self.reload_ok = True
        self.reload_at: float | None = None
        self._seen_reload: object = None
        self._failures: dict[str, str] = {}
        self._pods_worker: Worker[None] | None = None
        self._quit_pressed_at: float | None = None
        self.dashboard = DashboardScreen(self._facts(), self._log_reader())

    # -- setup ------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return self.dashboard

    def on_ready(self) -> None:
        # Ready, not mount: the default screen's widgets exist only from here on.
        if self.handle_signals:
            # SIGTERM (e.g. from `meshdev down` or a service manager) quits like `q`.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: self.call_later(self.action_quit)
            )
        self.set_interval(1.0, self._show_load)
        self._show_load()
        if self.session is None:
            self._run_telemetry()
            return
        self._seen_reload = self.session.last_reload
        self.push_screen(StartupScreen(self._startup_title(), self.session.mesh.pod_count()))
        self._start_session()

    def _startup_title(self) -> str:
        assert self.session is not None
        s = self.session
        return f"meshdev up: {s.mesh.name} ({s.mesh_file}) on the {s.runtime.kind} runtime"

    def _log_reader(self) -> LogReader | None:
        return self.session.runtime.logs if self.session is not None else None

    # -- the session ------------------------------------------------------------------------

    @work(group="startup", exclusive=True, exit_on_error=False, description="meshdev up")
    async def _start_session(self) -> None:
        assert self.session is not None
        try:
            report = await self.session.start()
        except RuntimeFailure as exc:
            self.post_message(StartupFailed(str(exc)))
            return
        if report.ok:
            self.post_message(StartupFinished(report))
        else:
            self.post_message(StartupFailed(report.summary()))

    def say(self, line: str) -> None:
        """Where the session's progress lines go (thread-safe, like post_message)."""
        self.post_message(StartupLine(line))
        if self.session is not None:
            self._check_rejected()

    def _check_rejected(self) -> None:
        # Session.follow_file reports a rejected save through `say` and `last_reload`
        # (on_report only gets applied ones): a new last_reload without sidecar counts is one.
        assert self.session is not None
        last = self.session.last_reload
        if last is self._seen_reload:
            return
        self._seen_reload = last
        if last is not None and last.get("ok") is False and "sidecars" not in last:
            errors = tuple(str(e) for e in last.get("errors", ()))
            self.post_message(ReloadRejected(int(last.get("version", 0)), errors))

    @on(StartupLine)
    def _startup_line(self, message: StartupLine) -> None:
        if isinstance(self.screen, StartupScreen):
            self.screen.add_line(message.text)
        elif not _REPORTED.match(message.text):
            self._event("info", message.text)

    @on(StartupFailed)
    def _startup_failed(self, message: StartupFailed) -> None:
        if isinstance(self.screen, StartupScreen):
            self.screen.show_failure(message.cause)
        self._event("error", f"meshdev up failed: {message.cause}")

    @on(RetryStart)
    def _retry(self) -> None:
        self._start_session()

    @on(StartupFinished)
    def _startup_finished(self, message: StartupFinished) -> None:
        assert self.session is not None
        self.started = True
        self.dashboard.commands = self.commands
        if isinstance(self.screen, StartupScreen):
            self.pop_screen()
        self._reloaded(message.report.summary(), ok=True)
        self._set_targets()
        self._run_telemetry()
        if self.session.watch:
            self._follow()
        self.set_interval(self.pods_every, self._poll_pods)
        self._poll_pods()
        self._show_pods()

    @work(group="follow", exclusive=True, exit_on_error=False, description="following the file")
    async def _follow(self) -> None:
        assert self.session is not None

        def applied(report: ReloadReport) -> None:
            self.post_message(ReloadApplied(report))

        await self.session.follow_file(applied)

    @on(ReloadApplied)
    def _reload_applied(self, message: ReloadApplied) -> None:
        report = message.report
        if report.ok:
            self.dashboard.clear_banner()
            self.notify(report.summary(), title="mesh.yaml reloaded", timeout=4)
            self._set_targets()
            self._show_pods()
        else:
            self._show_banner(report.version, report.errors)
        self._reloaded(report.summary(), ok=report.ok)

    @on(ReloadRejected)
    def _reload_rejected(self, message: ReloadRejected) -> None:
        self._show_banner(message.version, message.errors)
        count = len(message.errors)
        errors = f"{count} error" + ("" if count == 1 else "s")
        self._reloaded(f"not applied ({errors})", ok=False, kind="rejected")
        for error in message.errors:
            self._event("rejected", error)

    def _show_banner(self, version: int, errors: tuple[str, ...]) -> None:
        assert self.session is not None
        self.dashboard.show_banner(self.session.mesh_file.name, version, errors)

    def _reloaded(self, text: str, *, ok: bool, kind: str = "reload") -> None:
        self.reload_text, self.reload_ok, self.reload_at = text, ok, self.clock()
        self.dashboard.show_facts(self._facts())
        self._event(kind if ok or kind != "reload" else "rejected", text)

    def _set_targets(self) -> None:
        if self.session is not None:
            pods = self.session.control.pods.values()
            self.source.set_targets([(p.name, p.started.admin_url) for p in pods])

    # -- telemetry ---------------------------------------------------------------------------

    @work(group="telemetry", exclusive=True, exit_on_error=False, description="telemetry")
    async def _run_telemetry(self) -> None:
        await self.source.run(self._on_view)

    def _on_view(self, view: MeshView) -> None:
        if self.mailbox.put(view):
            self.post_message(ViewReady())

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
        # Trends get a bar per second, redrawn when a new second starts.
        step = max(1, round(1.0 / self.source.interval))
        second = math.floor(view.at)
        trends, self._trend_second = second != self._trend_second, second
        with self.batch_update():
            self.dashboard.show_view(view, step, trends)
            self.dashboard.add_events(events)
            self.dashboard.show_facts(self._facts())
            if self.session is not None and self.started and self.dashboard.tabs.active == "pods":
                self._show_pods()
            if isinstance(self.screen, RouteDetailScreen):
                self.screen.show(view, self._mesh())

    def _paced_view(self) -> None:
        self._paced = None
        self._view_ready()

    # -- pods --------------------------------------------------------------------------------

    def _poll_pods(self) -> None:
        if self._pods_worker is None or self._pods_worker.is_finished:
            self._pods_worker = self._fetch_pods()

    @work(group="pods", exit_on_error=False, description="pod states")
    async def _fetch_pods(self) -> None:
        assert self.session is not None
        states = await self.session.runtime.pod_states()
        self.post_message(PodStates(tuple(states)))

    @on(PodStates)
    def _pod_states(self, message: PodStates) -> None:
        self._failures.pop("pod states", None)
        before = self.pod_states
        self.pod_states = {s.pod: s for s in message.states}
        for name, state in self.pod_states.items():
            old = before.get(name)
            if old is not None and state.state not in (old.state, "running"):
                detail = f": {state.detail}" if state.detail else ""
                self._event("exit", f"pod {name} is {state.state}{detail}")
        self._show_pods()

    def _show_pods(self) -> None:
        if self.session is None:
            return
        control = self.session.control
        self.dashboard.show_pods(pod_facts(control.pods.values()), self.pod_states, control.version)

    # -- what the panels show ----------------------------------------------------------------

    def _mesh(self) -> Mesh | None:
        if self.session is None:
            return None
        return self.session.control.mesh or self.session.mesh

    def _facts(self) -> HeaderFacts:
        return header_facts(
            self.session,
            self.view,
            title=self.title_text,
            reload=self.reload_text,
            reload_ok=self.reload_ok,
            reload_at=self.reload_at,
        )

    def _event(self, kind: str, text: str) -> None:
        self.dashboard.add_events([Event(self.clock(), kind, text)])

    def _show_load(self) -> None:
        load = self.commands.load if self.commands is not None else None
        ingress = self.session.ingress_url if self.session is not None else None
        self.dashboard.show_load(load_line(load, ingress))

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
        if tab in TABS and self.screen is self.dashboard:
            self.dashboard.tabs.active = tab
            if tab == "pods":
                self._show_pods()
            first = {"traffic": "#routes", "pods": "#pods-table", "events": "#events-log"}
            if tab in first:
                self.dashboard.query_one(first[tab]).focus()
            else:
                self.dashboard.query_one("#log-sources").focus()

    def action_filter_logs(self) -> None:
        self.action_tab("logs")
        self.dashboard.logs.focus_filter()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

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

    @work(group="teardown", exclusive=True, exit_on_error=False, description="tear down")
    async def _tear_down(self) -> None:
        assert self.session is not None
        if self.commands is not None:
            await self.commands.stop_load()
        if self.keep:
            where = self.session.mesh_file
            text = f"--keep: the mesh keeps running; `meshdev down {where}` removes it"
        else:
            removed = await self.session.stop()
            text = f"removed {len(removed)} processes/containers"
        self.torn_down = True
        self.post_message(TornDown(text))

    @on(TornDown)
    def _torn_down(self, message: TornDown) -> None:
        self.exit_text = message.text
        # Quitting after a failed start is still a failed `meshdev up`.
        code = 0 if self.started else 1
        self.exit(code, return_code=code, message=message.text)
