"""The dashboard's base: the app's state, and the live data it paints onto the dashboard.

Views pass through a one-slot mailbox, so a slow terminal drops stale views instead of
queueing them, and are painted at the frame pacer's pace; pod states are polled by a worker.
The session's lifecycle (app_session.py) and the keys (app.py) build on this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from textual import on, work
from textual.app import App
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker

from meshdev.config.model import Mesh
from meshdev.runtime.base import PodState
from meshdev.telemetry.aggregation.view import Event, MeshView
from meshdev.tui.logic.commands import Commands
from meshdev.tui.logic.load_control import load_line
from meshdev.tui.logic.mailbox import ViewMailbox
from meshdev.tui.logic.pacer import FramePacer
from meshdev.tui.logic.ports import SessionPort, ViewSource
from meshdev.tui.messages import PodStates, ViewReady
from meshdev.tui.screens.dashboard import DashboardScreen
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.tables.pods import pod_facts
from meshdev.tui.widgets.header import HeaderFacts, header_facts
from meshdev.tui.widgets.logs_view import LogReader


class LiveApp(App[int]):
    """All of the app's state is set here, so that every layer above reads it typed."""

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

    def get_default_screen(self) -> Screen[None]:
        return self.dashboard

    def _log_reader(self) -> LogReader | None:
        return self.session.runtime.logs if self.session is not None else None

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
