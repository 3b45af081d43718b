"""The main screen: header and reload banner, six tabs (traffic, pods, events, logs,
security, traces), the load generator's line, and the footer of keys. It only renders what
the app hands it."""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static, TabbedContent, TabPane

from meshdev.config.model import Mesh
from meshdev.runtime.base import Container, PodState
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.aggregation.view import Event, MeshView, SidecarStatus
from meshdev.tui.logic.actions import ActionFailed
from meshdev.tui.logic.ports import DemoKeys
from meshdev.tui.logic.recent import RecentFailures
from meshdev.tui.messages import ActionDone
from meshdev.tui.tables.clusters import ClustersTable
from meshdev.tui.tables.hosts import HostsTable
from meshdev.tui.tables.keyed import KeyedTable
from meshdev.tui.tables.pods import PodFacts, PodsTable
from meshdev.tui.tables.routes import RoutesTable
from meshdev.tui.tables.traces import TracesTable
from meshdev.tui.widgets.events_log import EventsLog
from meshdev.tui.widgets.header import HeaderFacts, MeshHeader, ReloadBanner
from meshdev.tui.widgets.keys_bar import KeysBar
from meshdev.tui.widgets.logs_view import LogReader, LogsView
from meshdev.tui.widgets.security_view import SecurityView
from meshdev.tui.widgets.traces_view import TracesView

TABS = ("traffic", "pods", "events", "logs", "security", "traces")
# One line: where the terminal is too narrow for all, the keys before ? and q give way (the
# help lists every one, `t` and `p`/`a` too), so that those two always show.
KEYS = (
    ("1-6", "tabs"),
    ("enter", "detail"),
    ("l", "load"),
    ("+/-", "rate"),
    ("b", "trip breaker"),
    ("x", "fail replica"),
    ("f", "fault"),
    ("w", "canary"),
    ("s", "sort"),
    ("/", "filter"),
    ("?", "help"),
    ("q", "quit"),
)
SHORT = 22  # rows below which the dashboard drops its secondary lines
TINY = 14


class DashboardScreen(Screen[None]):
    # Moving the focus restyles the two widgets concerned, which repaint themselves; the
    # whole screen need not be repainted too (it made every tab key one more full frame).
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
    # The routes table, not the first focusable widget (the tab bar, whose arrow keys only
    # switch tabs): the arrows move the routes' cursor from the first frame, and `f`/`w`
    # act on the route it shows. A screen pushed on top gives the focus back where it was.
    AUTO_FOCUS = "#routes"

    # The demo keys live here, not on the app: they mean nothing while the mesh starts.
    BINDINGS = [
        Binding("1", "app.tab('traffic')", "Traffic", show=False),
        Binding("2", "app.tab('pods')", "Pods", show=False),
        Binding("3", "app.tab('events')", "Events", show=False),
        Binding("4", "app.tab('logs')", "Logs", show=False),
        Binding("5", "app.tab('security')", "Security", show=False),
        Binding("6", "app.tab('traces')", "Traces", show=False),
        Binding("l", "load", "Load"),
        Binding("plus,equals_sign", "rate(1)", "Rate+", key_display="+"),
        Binding("minus", "rate(-1)", "Rate-", key_display="-"),
        Binding("b", "trip_breaker", "Trip breaker"),
        Binding("x", "chaos", "Fail replica"),
        Binding("p", "plaintext", "Plaintext probe", show=False),
        Binding("a", "unauthorized", "Unauthorized caller", show=False),
        Binding("f", "fault", "Fault"),
        Binding("w", "canary", "Canary"),
        Binding("s", "sort", "Sort"),
        Binding("slash", "app.filter_logs", "Filter", show=False),
    ]

    def __init__(self, facts: HeaderFacts, log_reader: LogReader | None) -> None:
        super().__init__(id="dashboard")
        self.facts = facts
        self.log_reader = log_reader
        self.sidecars: dict[str, SidecarStatus] = {}
        self.view: MeshView | None = None
        # Set while the mesh runs, by `meshdev up`'s controller (controllers.py); None while
        # it starts or stops, and while only watching.
        self.commands: DemoKeys | None = None
        self._load_text = Text()
        self._load_bar = Static("", id="load-bar")
        # True between mount and unmount: workers' messages may arrive outside that window
        # (while the app starts or shuts down) and then have nothing to render onto.
        self._mounted = False

    def compose(self) -> ComposeResult:
        yield MeshHeader(self.facts, id="header")
        yield ReloadBanner(id="banner")
        with TabbedContent(initial="traffic", id="tabs"):
            with TabPane("1 Traffic", id="traffic"):
                # Breakers first: their state now is what no other mesh tool shows.
                yield ClustersTable(id="clusters")
                yield RoutesTable(id="routes")
                yield HostsTable(id="hosts")
            with TabPane("2 Pods", id="pods"):
                yield PodsTable(id="pods-table")
            with TabPane("3 Events", id="events"):
                yield EventsLog(id="events-log")
            with TabPane("4 Logs", id="logs"):
                yield LogsView(self.log_reader, id="logs-view")
            with TabPane("5 Security", id="security"):
                yield SecurityView(id="security-view")
            with TabPane("6 Traces", id="traces"):
                yield TracesView(id="traces-view")
        yield self._load_bar
        yield KeysBar(KEYS, id="keys")

    @property
    def live(self) -> bool:
        """Whether its widgets are there to show things on. A shutting-down app removes the
        screen's widgets before the screen's own unmount, and a timer may fire in between:
        it is no longer running from the start of that."""
        return self._mounted and self.app.is_running

    def on_mount(self) -> None:
        self._mounted = True

    def on_unmount(self) -> None:
        self._mounted = False

    def on_resize(self, event: events.Resize) -> None:
        # Small terminals keep the essentials: breakers, routes, keys (see app.tcss).
        self.set_class(event.size.height < SHORT, "-short")
        self.set_class(event.size.height < TINY, "-tiny")

    # -- attributes down ---------------------------------------------------------------------

    @property
    def routes(self) -> RoutesTable:
        return self.query_one("#routes", RoutesTable)

    @property
    def clusters(self) -> ClustersTable:
        return self.query_one("#clusters", ClustersTable)

    @property
    def hosts(self) -> HostsTable:
        return self.query_one("#hosts", HostsTable)

    @property
    def pods(self) -> PodsTable:
        return self.query_one("#pods-table", PodsTable)

    @property
    def events(self) -> EventsLog:
        return self.query_one("#events-log", EventsLog)

    @property
    def logs(self) -> LogsView:
        return self.query_one("#logs-view", LogsView)

    @property
    def security(self) -> SecurityView:
        return self.query_one("#security-view", SecurityView)

    @property
    def traces(self) -> TracesView:
        return self.query_one("#traces-view", TracesView)

    @property
    def banner(self) -> ReloadBanner:
        return self.query_one("#banner", ReloadBanner)

    @property
    def tabs(self) -> TabbedContent:
        return self.query_one("#tabs", TabbedContent)

    def show_view(self, view: MeshView, step: int = 1, trends: bool = True) -> None:
        if not self.live:
            return
        self.view = view
        self.sidecars = {s.node: s for s in view.sidecars}
        self.routes.show(view.routes, step, trends)
        self.clusters.show(view.clusters, step, trends)
        self.hosts.show(view.hosts)

    def show_security(self, mesh: Mesh | None, recent: RecentFailures | None = None) -> None:
        """The security tab, from the newest view (the app calls it while the tab shows);
        `recent`: the refusals of the last seconds, which its explanations keep in sight."""
        if self.live and self.view is not None:
            self.security.show(self.view, mesh, recent)

    def show_traces(
        self, store: TraceStore | None, outcomes: Mapping[str, int] | None = None
    ) -> None:
        """The traces tab, from the trace feed's store (the app calls it while the tab shows)."""
        if self.live:
            self.traces.show(store, outcomes)

    def show_pods(
        self, pods: Sequence[PodFacts], states: Mapping[str, PodState], current: int
    ) -> None:
        if not self.live:
            return
        self.pods.show(pods, states, self.sidecars, current)
        sources: list[tuple[str, Container]] = []
        for pod in pods:
            if pod.service:  # the gateway is a sidecar alone
                sources.append((pod.name, "app"))
            sources.append((pod.name, "sidecar"))
        self.logs.set_sources(sources)

    def show_banner(self, file: str, version: int, errors: Sequence[str]) -> None:
        if self.live:
            self.banner.show_errors(file, version, errors)

    def show_roll_failure(self, service: str, errors: Sequence[str]) -> None:
        if self.live:
            self.banner.show_roll_failure(service, errors)

    def clear_banner(self, about: str | None = None) -> None:
        """Hide the banner if it tells of `about` (a service; None: the mesh file)."""
        if self.live:
            if about is None:
                self.banner.clear()
            else:
                self.banner.clear(about)

    def show_facts(self, facts: HeaderFacts) -> None:
        self.facts = facts
        if not self.live:
            return
        self.query_one("#header", MeshHeader).set_facts(facts)

    def add_events(self, events: Iterable[Event]) -> None:
        if self.live:
            self.events.add(events)

    def show_load(self, text: Text) -> None:
        bar = self._load_bar
        # The 1 s timer may fire while the app shuts down, after the bar is gone.
        changed = text != self._load_text or str(text.style) != str(self._load_text.style)
        if self.live and bar.is_attached and changed:
            self._load_text = text
            # One line, fixed by the stylesheet: no layout pass for a new text.
            bar.update(text, layout=False)

    # -- the demo keys: each runs one DemoKeys method in a worker ---------------------------

    def _act(self, what: str, work: Coroutine[Any, Any, str]) -> None:
        """Run an action in a worker; its sentence (or why it failed) goes up as ActionDone."""

        async def run() -> None:
            try:
                text = await work
            except ActionFailed as exc:
                self.post_message(ActionDone(f"{what}: {exc}", ok=False))
                return
            self.post_message(ActionDone(text))

        self.run_worker(run(), group="actions", exit_on_error=False, description=what)

    def _commands(self) -> DemoKeys | None:
        if self.commands is None:
            self.notify(
                "the mesh is not running here: the demo keys act in the `meshdev up` that runs it",
                severity="warning",
                timeout=3,
            )
        return self.commands

    def _selected(self, table: KeyedTable) -> str | None:
        return table.cursor_key

    def action_load(self) -> None:
        if (commands := self._commands()) is not None:
            self._act("load", commands.toggle_load())

    def action_rate(self, direction: int) -> None:
        if (commands := self._commands()) is not None:
            self._act("load", commands.rate(direction))

    def action_trip_breaker(self) -> None:
        if (commands := self._commands()) is not None:
            self.notify("sending a burst through the ingress...", timeout=2)
            self._act("trip the breaker", commands.trip_breaker())

    def action_chaos(self) -> None:
        if (commands := self._commands()) is not None:
            selected = self.pods.cursor_key if self.tabs.active == "pods" else None
            self._act("fail a replica", commands.chaos(selected))

    def action_plaintext(self) -> None:
        if (commands := self._commands()) is not None:
            # The pod under the Security tab's cursor: the one way to see PERMISSIVE let
            # plaintext in while a STRICT service comes first.
            active = self.tabs.active == "security"
            selected = self.security.pods.cursor_key if active else None
            self._act("plaintext probe", commands.plaintext(selected))

    def action_unauthorized(self) -> None:
        if (commands := self._commands()) is not None:
            self._act("unauthorized caller", commands.unauthorized())

    def action_fault(self) -> None:
        if (commands := self._commands()) is not None:
            selected = self.routes.cursor_key
            if selected is None and self.view is not None and self.view.routes:
                selected = self.view.routes[0].key
            self._act("fault", commands.fault(selected))

    def action_canary(self) -> None:
        if (commands := self._commands()) is not None:
            prefer = [k for k in [self.routes.cursor_key] if k]
            if self.view is not None:
                prefer += [r.key for r in sorted(self.view.routes, key=lambda r: -r.rps)]
            self._act("canary", commands.canary(prefer))

    def action_sort(self) -> None:
        focused = self.focused
        if isinstance(focused, TracesTable) or self.tabs.active == "traces":
            # The traces' order is the view's (newest, slowest, failed), not a column's.
            self.notify(f"traces: {self.traces.cycle_order()}", timeout=2)
            return
        table = focused if isinstance(focused, KeyedTable) else self.routes
        self.notify(f"{table.border_title or 'table'}: by {table.cycle_sort()}", timeout=2)
