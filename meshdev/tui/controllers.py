"""What runs the mesh the dashboard shows: the app's session controller.

`meshdev up` starts its session inside the app, follows mesh.yaml and tears the mesh down on
quit (`UpController`); `meshdev watch` shows proxies something else runs, and starts and
stops nothing (`WatchController`; session_watch.py's for a `meshdev up` of another process,
followed through its state file). The app (app.py) asks its controller instead of knowing
which of the two it runs: what to start once it is ready, what the header and the pods tab
show, what the demo keys act on, and what quitting means. The session's workers run on the
app and post their messages to it; the app hands those to the controller, in order.

What a controller may do with the app is spelled out as `DashboardApp`, which the app
satisfies: this module does not import app.py (which imports this one).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, Protocol

from meshdev.config.model import Mesh
from meshdev.control import ReloadReport, RollReport
from meshdev.runtime.base import PodState, RuntimeFailure
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.tui.logic.commands import Commands
from meshdev.tui.logic.ports import DemoKeys, SessionPort, ViewSource
from meshdev.tui.messages import (
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
    WorkerFailed,
)
from meshdev.tui.tables.pods import down_pod_facts, healed_states, pod_facts
from meshdev.tui.widgets.header import HeaderFacts, header_facts
from meshdev.tui.widgets.logs_view import LogReader
from meshdev.tui.widgets.startup import StartupScreen

if TYPE_CHECKING:
    from textual.message import Message
    from textual.screen import Screen
    from textual.worker import Worker

    from meshdev.tui.screens.dashboard import DashboardScreen

# Say-lines the typed reload messages already report; the events panel shows them once.
_REPORTED = re.compile(
    r"^(applied v\d+ |v\d+ failed: |.*: not applied, still serving |  "
    r"|[a-z0-9-]+: (rolled |no running pod to roll|new code not rolled out|its image did not))"
)
# Worker descriptions: what a WorkerFailed names, and what the controller reacts to.
_STARTING = "meshdev up"
_TEARING_DOWN = "tear down"


class DashboardApp(Protocol):
    """What a session controller may do with the app it works for (`MeshdevApp`)."""

    @property
    def source(self) -> ViewSource: ...

    @property
    def dashboard(self) -> DashboardScreen: ...

    @property
    def screen(self) -> Screen[object]: ...

    def clock(self) -> float:
        """Wall-clock time, as the events panel shows it."""

    def run_telemetry(self) -> object:
        """Start streaming views from the source."""

    def show_header(self) -> None:
        """Paint the header anew (the controller's facts changed)."""

    def add_event(self, kind: str, text: str) -> None: ...

    def forget_failure(self, what: str) -> None:
        """`what` works again: the next time it fails is news."""

    def cancel_workers(self, *groups: str) -> None: ...

    # Textual's, as far as a controller uses them.

    def run_worker(
        self,
        work: Callable[[], Coroutine[Any, Any, None]],
        *,
        group: str,
        description: str,
        exclusive: bool,
        exit_on_error: bool,
    ) -> Worker[None]: ...

    def post_message(self, message: Message) -> bool: ...

    def push_screen(self, screen: Screen[None]) -> object: ...

    def pop_screen(self) -> object: ...

    def set_interval(self, interval: float, callback: Callable[[], None]) -> object: ...

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Literal["information", "warning", "error"] = "information",
        timeout: float | None = None,
    ) -> None: ...

    def exit(
        self, result: int | None = None, return_code: int = 0, message: str | None = None
    ) -> None: ...


class SessionController(Protocol):
    """What the dashboard asks of whatever runs (or does not run) the mesh it shows."""

    @property
    def started(self) -> bool:
        """The mesh is up: a watched one always is, ours once its start succeeded."""

    @property
    def commands(self) -> DemoKeys | None:
        """The demo keys' actions; None where no mesh of ours runs for them to act on."""

    @property
    def log_reader(self) -> LogReader | None:
        """Where the logs tab reads the pods' logs, if anywhere."""

    @property
    def stopped(self) -> bool:
        """What it started is down (or left running on purpose): quitting has nothing left to
        do but end the app."""

    @property
    def ingress_url(self) -> str | None:
        """Where the load generator sends requests, if anywhere."""

    def attach(self, app: DashboardApp) -> None:
        """The app it works for (called once, by the app): its workers run there."""

    def begin(self) -> None:
        """The app is ready: start what there is to start."""

    def handle(self, message: SessionMessage) -> None:
        """A message of the session, or a worker's failure, as the app receives it."""

    def quit(self) -> None:
        """The user quits (once): stop what there is to stop, then end the app."""

    def header(self, view: MeshView | None) -> HeaderFacts:
        """The header's facts, with `view`'s sidecars."""

    def mesh(self) -> Mesh | None:
        """The mesh as it runs now (what explains a route's numbers), if known."""

    def show_pods(self) -> None:
        """Paint the pods tab from what is known of the pods now (if there are any)."""


class WatchController:
    """`meshdev watch`: proxies something else runs, with nothing here to start or stop.
    `mesh`: their mesh file's model when it was given (`watch --mesh FILE`), for what the
    traffic cannot say (authorization policies, the fields behind a route's failures)."""

    def __init__(self, title: str = "", mesh: Mesh | None = None) -> None:
        self.title = title
        self._mesh = mesh
        self._app: DashboardApp | None = None

    @property
    def started(self) -> bool:
        return True

    @property
    def commands(self) -> DemoKeys | None:
        return None

    @property
    def log_reader(self) -> LogReader | None:
        return None

    @property
    def stopped(self) -> bool:
        return True  # it starts nothing

    @property
    def ingress_url(self) -> str | None:
        return None

    def attach(self, app: DashboardApp) -> None:
        self._app = app

    def begin(self) -> None:
        attached(self._app).run_telemetry()

    def handle(self, message: SessionMessage) -> None:
        # No session here: only worker failures arrive, and the app tells those itself.
        return

    def quit(self) -> None:
        attached(self._app).exit(0)

    def header(self, view: MeshView | None) -> HeaderFacts:
        return header_facts(view, mesh=self.title or "(watching)", reload="not running the mesh")

    def mesh(self) -> Mesh | None:
        return self._mesh

    def show_pods(self) -> None:
        # The pods of watched proxies are not ours to list: the tab stays empty.
        return


class UpController:
    """`meshdev up`: the session starts inside the app, follows mesh.yaml while the app runs,
    and is torn down when it quits (or left running with `keep`)."""

    def __init__(
        self, session: SessionPort, *, keep: bool = False, pods_every: float = 2.0
    ) -> None:
        self.session = session
        self.keep = keep
        self.pods_every = pods_every
        self.commands = Commands(session, on_applied=self._key_applied)
        self.started = False
        self.torn_down = False
        self.pod_states: dict[str, PodState] = {}
        # How the last reload went, as the header says it.
        self.reload_text = "starting"
        self.reload_ok = True
        self.reload_at: float | None = None
        self._seen_reload: object = None
        self._pods_worker: Worker[None] | None = None
        self._app: DashboardApp | None = None

    @property
    def app(self) -> DashboardApp:
        return attached(self._app)

    @property
    def log_reader(self) -> LogReader:
        return self.session.runtime.logs

    @property
    def stopped(self) -> bool:
        return self.torn_down

    @property
    def ingress_url(self) -> str | None:
        return self.session.ingress_url

    def attach(self, app: DashboardApp) -> None:
        self._app = app

    def mesh(self) -> Mesh:
        return self.session.control.mesh or self.session.mesh

    def header(self, view: MeshView | None) -> HeaderFacts:
        s = self.session
        return header_facts(
            view,
            mesh=s.mesh.name,
            file=str(s.mesh_file),
            runtime=s.runtime.kind,
            version=s.control.version,
            ingress=s.ingress_url,
            reload=self.reload_text,
            reload_ok=self.reload_ok,
            reload_at=self.reload_at,
        )

    def handle(self, message: SessionMessage) -> None:
        match message:
            case StartupLine(text=text):
                self._startup_line(text)
            case StartupFailed(cause=cause):
                self._startup_failed(cause)
            case RetryStart():
                self._start()
            case StartupFinished(report=report):
                self._startup_finished(report)
            case ReloadApplied(report=report):
                self._reload_applied(report)
            case KeyApplied(report=report):
                self._reloaded(key_applied_text(report), ok=report.ok, event=False)
            case ReloadRejected(version=version, errors=errors):
                self._reload_rejected(version, errors)
            case CodeRolled(report=report):
                self._code_rolled(report)
            case PodStates(states=states):
                self._pod_states(states)
            case TornDown(text=text):
                self._torn_down(text)
            case WorkerFailed(what=what, error=error):
                self._worker_failed(what, error)

    # -- starting ----------------------------------------------------------------------------

    def begin(self) -> None:
        s = self.session
        self._seen_reload = s.last_reload
        title = f"meshdev up: {s.mesh.name} ({s.mesh_file}) on the {s.runtime.kind} runtime"
        self.app.push_screen(StartupScreen(title, s.mesh.pod_count()))
        self._start()

    def _run(
        self,
        work: Callable[[], Coroutine[Any, Any, None]],
        *,
        group: str,
        description: str,
        exclusive: bool = True,
    ) -> Worker[None]:
        # On the app, as its own workers: what fails arrives there as WorkerFailed, and
        # nothing that fails ends the app.
        return self.app.run_worker(
            work, group=group, description=description, exclusive=exclusive, exit_on_error=False
        )

    def _start(self) -> None:
        self._run(self._starting, group="startup", description=_STARTING)

    async def _starting(self) -> None:
        try:
            report = await self.session.start()
        except RuntimeFailure as exc:
            self.app.post_message(StartupFailed(str(exc)))
            return
        if report.ok:
            self.app.post_message(StartupFinished(report))
        else:
            self.app.post_message(StartupFailed(report.summary()))

    def say(self, line: str) -> None:
        """Where the session's progress lines go while the app runs (see launch.py);
        thread-safe, like post_message."""
        self.app.post_message(StartupLine(line))
        self._check_rejected()

    def _check_rejected(self) -> None:
        # Session.follow_file reports a rejected save through `say` and `last_reload`
        # (on_report only gets applied ones): a new last_reload without sidecar counts is one.
        last = self.session.last_reload
        if last is self._seen_reload:
            return
        self._seen_reload = last
        if last is not None and last.get("ok") is False and "sidecars" not in last:
            errors = tuple(str(e) for e in last.get("errors", ()))
            self.app.post_message(ReloadRejected(int(last.get("version", 0)), errors))

    def _startup_line(self, text: str) -> None:
        app = self.app
        if isinstance(app.screen, StartupScreen):
            app.screen.add_line(text)
        elif not _REPORTED.match(text):
            app.add_event("info", text)

    def _startup_failed(self, cause: str) -> None:
        if isinstance(self.app.screen, StartupScreen):
            self.app.screen.show_failure(cause)
        self.app.add_event("error", f"meshdev up failed: {cause}")

    def _worker_failed(self, what: str, error: str) -> None:
        # The app has told it already; what it means for the session is said here.
        app = self.app
        if what == _STARTING and isinstance(app.screen, StartupScreen):
            app.screen.show_failure(error)
        if what == _TEARING_DOWN:
            app.exit(1, return_code=1, message=f"tear down failed: {error}")

    def _startup_finished(self, report: ReloadReport) -> None:
        app = self.app
        self.started = True
        app.dashboard.commands = self.commands
        if isinstance(app.screen, StartupScreen):
            app.pop_screen()
        self._reloaded(report.summary(), ok=True)
        self._set_targets()
        app.run_telemetry()
        if self.session.watch:
            self._follow()
        app.set_interval(self.pods_every, self._poll_pods)
        self._poll_pods()
        gc.freeze()  # as at start (app.py): the session's objects live as long as the app
        self.show_pods()

    # -- reloads -----------------------------------------------------------------------------

    def _follow(self) -> None:
        self._run(self._following, group="follow", description="following the file")
        self._run(self._following_code, group="follow-code", description="following the code")

    async def _following(self) -> None:
        await self.session.follow_file(self._applied)

    async def _following_code(self) -> None:
        await self.session.follow_code(self._rolled)

    def _rolled(self, report: RollReport) -> None:
        self.app.post_message(CodeRolled(report))

    def _code_rolled(self, report: RollReport) -> None:
        # Pods changed names and addresses (also in a roll that failed half way).
        self._set_targets()
        self.show_pods()
        tell_roll(self.app, report)

    def _applied(self, report: ReloadReport) -> None:
        self.app.post_message(ReloadApplied(report))

    def _key_applied(self, report: ReloadReport) -> None:
        self.app.post_message(KeyApplied(report))

    def _reload_applied(self, report: ReloadReport) -> None:
        if report.ok:
            self.app.dashboard.clear_banner()
            self.app.notify(report.summary(), title="mesh.yaml reloaded", timeout=4)
            self._set_targets()
            self.show_pods()
        else:
            self._show_banner(report.version, report.errors)
        self._reloaded(report.summary(), ok=report.ok)

    def _reload_rejected(self, version: int, errors: tuple[str, ...]) -> None:
        self._show_banner(version, errors)
        self._reloaded(rejected_text(errors), ok=False, kind="rejected")
        for error in errors:
            self.app.add_event("rejected", error)

    def _show_banner(self, version: int, errors: tuple[str, ...]) -> None:
        self.app.dashboard.show_banner(self.session.mesh_file.name, version, errors)

    def _reloaded(self, text: str, *, ok: bool, kind: str = "reload", event: bool = True) -> None:
        """`event`: also an event (a key's apply has its own, the action's sentence)."""
        self.reload_text, self.reload_ok, self.reload_at = text, ok, self.app.clock()
        self.app.show_header()
        if event:
            self.app.add_event(kind if ok or kind != "reload" else "rejected", text)

    def _set_targets(self) -> None:
        pods = self.session.control.pods.values()
        self.app.source.set_targets([(p.name, p.started.admin_url) for p in pods])

    # -- pods --------------------------------------------------------------------------------

    def _poll_pods(self) -> None:
        if self._pods_worker is None or self._pods_worker.is_finished:
            self._pods_worker = self._run(
                self._fetch_pods, group="pods", description="pod states", exclusive=False
            )

    async def _fetch_pods(self) -> None:
        states = await self.session.runtime.pod_states()
        self.app.post_message(PodStates(tuple(healed_states(self.session.control, states))))

    def _pod_states(self, states: tuple[PodState, ...]) -> None:
        self.app.forget_failure("pod states")
        before = self.pod_states
        self.pod_states = {s.pod: s for s in states}
        for name, state in self.pod_states.items():
            if (text := left_running(before.get(name), state)) is not None:
                self.app.add_event("exit", text)
        self.show_pods()

    def show_pods(self) -> None:
        control = self.session.control
        facts = pod_facts(control.pods.values()) + down_pod_facts(control)
        self.app.dashboard.show_pods(facts, self.pod_states, control.version)

    # -- tearing down ------------------------------------------------------------------------

    def quit(self) -> None:
        app = self.app
        app.cancel_workers("follow", "pods")  # no reload and no poll while the mesh goes away
        what = "leaving the mesh running (--keep)" if self.keep else "stopping the mesh"
        app.notify(f"{what}...", timeout=30)
        app.add_event("info", what)
        self._run(self._tear_down, group="teardown", description=_TEARING_DOWN)

    async def _tear_down(self) -> None:
        await self.commands.stop_load()
        if self.keep:
            await self.session.leave()
            where = self.session.mesh_file
            text = f"--keep: the mesh keeps running; `meshdev down {where}` removes it"
        else:
            removed = await self.session.stop()
            text = f"removed {len(removed)} processes/containers"
        self.torn_down = True
        self.app.post_message(TornDown(text))

    def _torn_down(self, text: str) -> None:
        # Quitting after a failed start is still a failed `meshdev up`.
        code = 0 if self.started else 1
        self.app.exit(code, return_code=code, message=text)


# -- what both `up`'s dashboard and a dashboard following it say ---------------------------


def tell_roll(app: DashboardApp, report: RollReport, *, toast: bool = True) -> None:
    """A code roll: its banner, event and (unless `toast` is off: old news) its toast."""
    service = report.service
    if report.superseded:
        # Not a failure: the roll of the newest code follows at once, and its report decides
        # the banner.
        app.add_event("roll", report.summary())
        return
    if report.ok:
        app.dashboard.clear_banner(service)
        if toast:
            title = "nothing to roll" if report.unchanged or not report.replaced else "code rolled"
            app.notify(report.summary(), title=f"{service}: {title}", timeout=4)
        app.add_event("roll", report.summary())
        return
    error = report.error or "failed"
    app.dashboard.show_roll_failure(service, tuple(error.splitlines()))
    if toast:
        app.notify(error.splitlines()[0], title=f"{service}: not rolled out", severity="error")
    app.add_event("rejected", report.summary())


def key_applied_text(report: ReloadReport) -> str:
    """The header's words for a config a demo key applied: not the file's, until a save."""
    return f"{report.summary()} (canary key; mesh.yaml unchanged)"


def rejected_text(errors: tuple[str, ...]) -> str:
    """The header's words for a save that did not validate."""
    return f"not applied ({len(errors)} error{'' if len(errors) == 1 else 's'})"


def left_running(before: PodState | None, now: PodState) -> str | None:
    """The event of a pod that went from one state to another that is not running."""
    if before is None or now.state in (before.state, "running"):
        return None
    detail = f": {now.detail}" if now.detail else ""
    return f"pod {now.pod} is {now.state}{detail}"


def attached(app: DashboardApp | None) -> DashboardApp:
    assert app is not None, "the app attaches its controller when it is built"
    return app
