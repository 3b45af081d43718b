"""Every panel against a fake source and session: what arrives is what is shown, tables are
updated by key (never rebuilt), stale views are dropped, and failures are told."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable

from textual.geometry import Region
from textual.message import Message
from textual.widgets import RichLog, Static

from meshdev.control import ReloadReport, RollReport
from meshdev.runtime.base import PodState
from meshdev.telemetry.aggregation.view import Event
from meshdev.testing.sample_views import sample_view
from meshdev.tui.app import GC_YOUNG_THRESHOLD
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.pacer import FramePacer
from meshdev.tui.messages import ViewReady, WorkerFailed
from meshdev.tui.screens.help import HelpScreen
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.tables.keyed import KeyedTable
from meshdev.tui.widgets.header import ReloadBanner
from meshdev.tui.widgets.keys_bar import KeysBar
from tests.support import wait_until
from tests.tui.tuifakes import FakeSession, FakeSource, make_app, started, up


async def test_routes_clusters_and_hosts_show_the_view(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(160, 50)) as pilot:
        await started(pilot, app, source)
        view = sample_view(4)  # the backend breaker is open in this tick
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        d = app.dashboard
        assert d.routes.keys == [r.key for r in view.routes]
        items = view.routes[0]
        assert d.routes.cell_text(items.key, "p99").strip() == fmt.ms(items.p99)
        # Per second, as RPS: the sample's interval is a quarter of one.
        assert d.routes.cell_text(items.key, "flags") == f"UO {items.flags['UO'] * 4}"
        assert d.clusters.cell_text("backend", "breaker").strip() == "OPEN"
        assert d.clusters.cell_text("backend", "trips").strip() == "7.0"
        assert "pend 5/5" in d.clusters.cell_text("backend", "limits")
        assert d.clusters.cell_text("frontend", "breaker") == "closed"
        hosts = {h.key: h for h in view.hosts}
        assert sorted(d.hosts.keys) == sorted(hosts)
        assert all(d.hosts.cell_text(k, "state") == "ok" for k in hosts)
        # Eight ticks later one host is ejected and comes back in 8 s.
        later = sample_view(8)
        source.emit(later)
        await wait_until(lambda: app.view is later, "the later view", pause=pilot.pause)
        ejected = next(h for h in later.hosts if h.ejected)
        assert d.hosts.cell_text(ejected.key, "state") == "EJECTED"
        assert d.hosts.cell_text(ejected.key, "returns") == "8s"
        # Not open now, but it tripped seconds ago: momentary trips stay visible a while.
        assert d.clusters.cell_text("backend", "breaker") == "tripped"
        assert d.clusters.cell_text("backend", "ejected") == "1"


async def test_tables_are_updated_cell_by_cell_never_rebuilt(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(160, 50)) as pilot:
        await started(pilot, app, source)
        first = sample_view(1)
        source.emit(first)
        await wait_until(lambda: app.view is first, "first view", pause=pilot.pause)
        routes = app.dashboard.routes
        routes.focus()
        await pilot.press("down", "down")
        assert routes.cursor_row == 2
        row_objects = dict(routes.rows)
        after_add = routes.updates
        # The same numbers again: nothing to change.
        same = dataclasses.replace(first, at=first.at + 1)
        source.emit(same)
        await wait_until(lambda: app.view is same, "same view", pause=pilot.pause)
        assert routes.updates == after_add
        # One route's p99 changes: exactly that cell is updated, rows stay the same objects.
        changed = list(first.routes)
        changed[3] = dataclasses.replace(changed[3], p99=999.0)
        nxt = dataclasses.replace(first, routes=tuple(changed), at=first.at + 2)
        source.emit(nxt)
        await wait_until(lambda: app.view is nxt, "changed view", pause=pilot.pause)
        assert routes.updates == after_add + 1
        assert routes.cell_text(changed[3].key, "p99") == "999ms"
        assert dict(routes.rows) == row_objects
        assert routes.cursor_row == 2
        # A route that goes away is removed; the others stay.
        fewer = dataclasses.replace(first, routes=first.routes[:-1], at=first.at + 3)
        source.emit(fewer)
        await wait_until(lambda: app.view is fewer, "fewer routes", pause=pilot.pause)
        assert routes.keys == [r.key for r in first.routes[:-1]]


async def test_a_view_repaints_only_the_lines_of_the_rows_it_changed(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(160, 50)) as pilot:
        await started(pilot, app, source)
        first = sample_view(1)
        source.emit(first)
        await wait_until(lambda: app.view is first, "first view", pause=pilot.pause)
        d = app.dashboard
        tables = (d.routes, d.clusters, d.hosts)
        await wait_until(
            lambda: all(t.lines_rendered for t in tables), "painted", pause=pilot.pause
        )
        await pilot.pause(0.2)
        before = [t.lines_rendered for t in tables]
        # One route's p99 changes: one line of one table is rendered again, nothing else.
        changed = list(first.routes)
        changed[3] = dataclasses.replace(changed[3], p99=999.0)
        nxt = dataclasses.replace(first, routes=tuple(changed), at=first.at + 1)
        source.emit(nxt)
        await wait_until(lambda: app.view is nxt, "changed view", pause=pilot.pause)
        await wait_until(
            lambda: d.routes.lines_rendered > before[0], "repainted", pause=pilot.pause
        )
        await pilot.pause(0.2)
        assert [t.lines_rendered - n for t, n in zip(tables, before, strict=True)] == [1, 0, 0]
        y = d.routes.keys.index(changed[3].key) + d.routes.header_height
        line = d.routes.render_line(y)  # the line the frame showed (Textual keeps it)
        assert "999ms" in line.text


async def test_a_burst_of_views_paints_only_the_newest_and_keeps_every_event(
    session: FakeSession, source: FakeSource
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        before = sum(isinstance(m, ViewReady) for m in seen)
        views = [
            dataclasses.replace(
                sample_view(i), events=(Event(1_700_000_000.0 + i, "info", f"event {i}"),)
            )
            for i in range(10)
        ]
        for view in views:  # faster than any frame: no pause in between
            source.emit(view)
        await wait_until(lambda: app.view is views[-1], "the newest view", pause=pilot.pause)
        assert sum(isinstance(m, ViewReady) for m in seen) - before == 1
        assert app.mailbox.dropped == 9
        texts = app.dashboard.events.texts
        assert [t.split()[-1] for t in texts if "event" in t] == [str(i) for i in range(10)]


async def test_once_up_the_app_has_the_collector_pass_over_fewer_young_objects(
    session: FakeSession, source: FakeSource
) -> None:
    gc.set_threshold(700, 10, 10)  # Python's default
    app = make_app(source, session)
    async with app.run_test() as pilot:
        await started(pilot, app, source)
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0


async def test_route_detail_explains_failures_by_the_field_behind_them(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(140, 45)) as pilot:
        await started(pilot, app, source)
        view = sample_view(4)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        app.dashboard.routes.focus()
        await pilot.press("enter")
        await wait_until(
            lambda: isinstance(app.screen, RouteDetailScreen), "detail", pause=pilot.pause
        )
        body = str(app.screen.query_one("#detail-body", Static).render())
        assert "backend/items" in body
        assert "503 UO" in body
        assert "policies.backend.circuit_breaker.max_pending_requests: 5" in body
        assert "-> backend.v1 90, backend.v2 10" in body
        # It follows the live view: the next tick's count shows up.
        nxt = sample_view(5)
        source.emit(nxt)
        await wait_until(lambda: app.view is nxt, "next view", pause=pilot.pause)
        body = str(app.screen.query_one("#detail-body", Static).render())
        assert f"{nxt.routes[0].flags['UO']:>6}  503 UO" in body
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.screen is app.dashboard


async def test_reload_toast_and_a_banner_that_stays_until_a_good_save(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await started(pilot, app, source)
        banner = app.dashboard.query_one("#banner", ReloadBanner)
        assert not banner.display
        errors = ["mesh.yaml:14:7 routes.backend[0].timeout: expected a duration like 250ms or 2s"]
        await session.saves.put(errors)
        await wait_until(lambda: banner.display, "the banner", pause=pilot.pause)
        assert banner.errors == tuple(errors)
        assert "mesh.yaml:14:7" in str(banner.render())
        assert not up(app).reload_ok
        # Another bad save replaces the errors; the banner stays.
        await session.saves.put(["mesh.yaml:3:1 services: field required"])
        await wait_until(
            lambda: "3:1" in "".join(banner.errors), "second errors", pause=pilot.pause
        )
        assert banner.display
        # A good save applies: banner gone, header and toast say so.
        report = ReloadReport(2, True, 5, 5, 1, 84.0)
        await session.saves.put(report)
        await wait_until(lambda: not banner.display, "banner cleared", pause=pilot.pause)
        assert up(app).reload_text == report.summary()
        assert "applied v2 to 5/5 sidecars in 84 ms" in str(
            app.dashboard.query_one("#header").render()
        )
        assert any("applied v2" in n.message for n in app._notifications)
        events = app.dashboard.events.texts
        assert any("rejected" in t and "14:7" in t for t in events)
        assert any("reload" in t and "applied v2" in t for t in events)


async def test_code_that_did_not_roll_out_has_a_banner_until_its_service_rolls(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await started(pilot, app, source)
        banner = app.dashboard.query_one("#banner", ReloadBanner)
        error = (
            "pod frontend-0 did not come up: its app exited with code 1; last lines of its log:\n"
            "    RuntimeError: boom"
        )
        await session.rolls.put(RollReport("frontend", False, (), 900.0, error, ("frontend-0",)))
        await wait_until(lambda: banner.display, "the banner", pause=pilot.pause)
        text = str(banner.render())
        assert "frontend's new code not rolled out; its old pods keep serving" in text
        assert "RuntimeError: boom" in text
        events = app.dashboard.events.texts
        assert any("rejected" in t and "frontend-0 keep serving" in t for t in events)
        # Another service's roll leaves it; the mesh file's good save too.
        await session.rolls.put(RollReport("backend", True, (("backend-v1-0", "x"),), 800.0))
        await session.saves.put(ReloadReport(2, True, 5, 5, 1, 84.0))
        await wait_until(
            lambda: any("backend: rolled" in t for t in app.dashboard.events.texts),
            "the other roll",
            pause=pilot.pause,
        )
        await wait_until(lambda: up(app).reload_ok, "the reload", pause=pilot.pause)
        assert banner.display
        # A roll cut short by newer code is an event only: no failure, no toast, and the
        # banner still tells of the last roll that ended.
        toasts = len(app._notifications)
        await session.rolls.put(
            RollReport("frontend", False, (), 300.0, kept=("frontend-0",), superseded=True)
        )
        await wait_until(
            lambda: any("newer code saved" in t for t in app.dashboard.events.texts),
            "the superseded roll's event",
            pause=pilot.pause,
        )
        assert len(app._notifications) == toasts
        assert "RuntimeError: boom" in str(banner.render())
        # Its own roll clears it.
        await session.rolls.put(
            RollReport("frontend", True, (("frontend-0", "frontend-0-r1"),), 700.0)
        )
        await wait_until(lambda: not banner.display, "banner cleared", pause=pilot.pause)
        assert any("roll" in t and "frontend-0 -> frontend-0-r1" in t for t in events)
        assert any(n.title == "frontend: code rolled" for n in app._notifications)


async def test_pods_panel_joins_control_plane_runtime_and_telemetry(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(160, 40)) as pilot:
        session.runtime.states = [
            PodState("backend-v1-0", "backend", "v1", "running", "127.0.0.1", "", restarts=2),
            PodState("frontend-0", "frontend", None, "running", "127.0.0.1", ""),
        ]
        await started(pilot, app, source)
        await pilot.press("2")
        pods = app.dashboard.pods
        await wait_until(lambda: len(pods.keys) == 5, "five pods", pause=pilot.pause)
        await wait_until(
            lambda: pods.cell_text("backend-v1-0", "state") == "running", "s", pause=pilot.pause
        )
        assert pods.cell_text("backend-v1-0", "restarts") == "2"
        assert pods.cell_text("backend-v1-0", "subset") == "v1"
        assert pods.cell_text("backend-v1-0", "ready") == "yes"
        assert pods.cell_text("ingress", "service") == "(ingress)"
        # Telemetry reports the version each sidecar serves.
        source.emit(sample_view(0))
        await wait_until(
            lambda: pods.cell_text("frontend-0", "sidecar") == "stream", "sc", pause=pilot.pause
        )
        assert pods.cell_text("frontend-0", "config") == "v1 3f9a1c2d"
        # The app exits: the panel says so and an event is logged.
        session.runtime.states = [
            dataclasses.replace(session.runtime.states[0], state="exited", detail="exit code 1"),
            session.runtime.states[1],
        ]
        await wait_until(
            lambda: pods.cell_text("backend-v1-0", "state") == "exited", "x", pause=pilot.pause
        )
        assert pods.cell_text("backend-v1-0", "ready") == "no"
        assert any("backend-v1-0 is exited: exit code 1" in t for t in app.dashboard.events.texts)


async def test_logs_follow_a_source_with_a_regex_filter_per_source(
    session: FakeSession, source: FakeSource
) -> None:
    session.runtime.log_lines[("ingress", "sidecar")] = ["GET /items 200", "GET /x 503 UO"]
    session.runtime.log_lines[("frontend-0", "app")] = ["started", "GET /items 200"]
    app = make_app(source, session)
    async with app.run_test(size=(120, 30)) as pilot:
        await started(pilot, app, source)
        await pilot.press("4")
        logs = app.dashboard.logs
        await wait_until(lambda: len(logs.lines) == 2, "ingress lines", pause=pilot.pause)
        assert logs.current == ("ingress", "sidecar")
        assert logs.sources[:3] == [
            ("ingress", "sidecar"),
            ("frontend-0", "app"),
            ("frontend-0", "sidecar"),
        ]
        await pilot.press("slash")
        log_filter = logs.query_one("#log-filter")
        await wait_until(lambda: log_filter.has_focus, "the filter focused", pause=pilot.pause)
        await pilot.press(*"503|uo")
        await wait_until(
            lambda: logs.filters.get(("ingress", "sidecar")) == "503|uo",
            "filter",
            pause=pilot.pause,
        )
        log_view = logs.query_one("#log-lines", RichLog)
        await wait_until(
            lambda: [s.text for s in log_view.lines] == ["GET /x 503 UO"],
            "filtered",
            pause=pilot.pause,
        )
        lines = log_view.lines
        # Matches are highlighted.
        assert any("on yellow" in str(seg.style) for seg in lines[0] if seg.style)
        # Another source has its own (empty) filter; coming back restores this one.
        logs.query_one("#log-sources").focus()
        await pilot.press("down")
        await wait_until(
            lambda: logs.current == ("frontend-0", "app"), "frontend", pause=pilot.pause
        )
        await wait_until(lambda: len(logs.lines) == 2, "frontend lines", pause=pilot.pause)
        assert logs.query_one("#log-filter").value == ""  # type: ignore[attr-defined]
        await pilot.press("up")
        await wait_until(lambda: logs.current == ("ingress", "sidecar"), "back", pause=pilot.pause)
        assert logs.query_one("#log-filter").value == "503|uo"  # type: ignore[attr-defined]
        # A bad regex is reported and the last good filter stays.
        await pilot.press("slash")
        # Keys go to whatever has focus: type only once the filter has it.
        await wait_until(lambda: log_filter.has_focus, "the filter focused", pause=pilot.pause)
        await pilot.press("(")
        status_line = logs.query_one("#log-status", Static)
        await wait_until(
            lambda: "bad regex" in str(status_line.render()), "bad regex", pause=pilot.pause
        )
        assert logs.filters[("ingress", "sidecar")] == "503|uo"


async def test_help_opens_and_closes(session: FakeSession, source: FakeSource) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(100, 40)) as pilot:
        await started(pilot, app, source)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        body = str(app.screen.query_one("#help-body", Static).render())
        for key in ("trip the breaker", "make one replica fail", "runtime", "canary"):
            assert key in body
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.screen is app.dashboard


async def test_sorting_the_routes_by_rate(session: FakeSession, source: FakeSource) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot, app, source)
        view = sample_view(2)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        app.dashboard.routes.focus()
        await pilot.press("s")
        by_rps = [r.key for r in sorted(view.routes, key=lambda r: (-r.rps, r.key))]
        assert app.dashboard.routes.keys == by_rps
        # The order follows new numbers.
        nxt = sample_view(9)
        source.emit(nxt)
        await wait_until(lambda: app.view is nxt, "next", pause=pilot.pause)
        assert app.dashboard.routes.keys == [
            r.key for r in sorted(nxt.routes, key=lambda r: (-r.rps, r.key))
        ]


async def test_a_failing_source_is_reported_and_restarted(session: FakeSession) -> None:
    source = FakeSource(fail_first=1)
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append, notifications=True) as pilot:
        await wait_until(
            lambda: source.runs >= 2 and source.on_view is not None, "retry", pause=pilot.pause
        )
        failed = [m for m in seen if isinstance(m, WorkerFailed)]
        assert failed and failed[0].what == "telemetry"
        assert "stream broke" in failed[0].error
        assert any("telemetry" in t and "stream broke" in t for t in app.dashboard.events.texts)
        assert any("stream broke" in n.message for n in app._notifications)
        # Still alive and rendering.
        view = sample_view(3)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view after retry", pause=pilot.pause)


def _drawn(table: KeyedTable) -> list[str]:
    """The table's lines as drawn (border and header included)."""
    # The crop is in the widget's own coordinates, border included.
    lines = table.render_lines(Region(0, 0, table.outer_size.width, table.outer_size.height))
    return [line.text for line in lines]


async def test_what_is_drawn_follows_every_change_despite_the_cell_cache(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(160, 50)) as pilot:
        await started(pilot, app, source)
        routes = app.dashboard.routes
        first = sample_view(1, routes=6)
        source.emit(first)
        await wait_until(lambda: app.view is first, "first", pause=pilot.pause)
        drawn = _drawn(routes)
        # One cell changes: that row shows the new value, the others are drawn as before.
        changed = list(first.routes)
        changed[3] = dataclasses.replace(
            changed[3], p99=999.0, flags={"UO": 3}, flags_per_s={"UO": 12.0}
        )
        second = dataclasses.replace(first, routes=tuple(changed), at=first.at + 1)
        source.emit(second)
        await wait_until(lambda: app.view is second, "second", pause=pilot.pause)
        after = _drawn(routes)
        row = next(i for i, line in enumerate(after) if changed[3].key in line)
        assert "999ms" in after[row]
        assert "UO 12" in after[row]
        assert [line for i, line in enumerate(after) if i != row] == [
            line for i, line in enumerate(drawn) if i != row
        ]
        # Sorting moves rows: each line still shows its own route's numbers.
        routes.focus()
        assert routes.cursor_key == first.routes[0].key
        await pilot.press("s")  # by RPS, highest first
        await pilot.pause()
        by_rps = sorted(second.routes, key=lambda r: (-r.rps, r.key))
        keys = {r.key for r in second.routes}
        body = [
            line for line in _drawn(routes) if len(line.split()) > 1 and line.split()[1] in keys
        ]
        assert [line.split()[1] for line in body] == [r.key for r in by_rps]
        for line, route in zip(body, by_rps, strict=True):
            assert line.split()[2] == fmt.rate(route.rps)
        # The cursor stayed on its route, wherever the sort put it.
        assert routes.cursor_key == first.routes[0].key
        assert routes.cursor_row == [r.key for r in by_rps].index(first.routes[0].key)


async def test_views_over_the_frame_budget_wait_and_only_the_newest_is_painted(
    session: FakeSession, source: FakeSource
) -> None:
    cpu = [0.0]
    pacer = FramePacer(share=0.1, max_wait=0.5, cpu=lambda: cpu[0])
    app = make_app(source, session, pacer=pacer)
    async with app.run_test() as pilot:
        await started(pilot, app, source)
        first = sample_view(0)
        source.emit(first)
        await wait_until(lambda: app.view is first, "first", pause=pilot.pause)
        cpu[0] += 10.0  # that frame was very expensive: the next waits the longest allowed
        views = [
            dataclasses.replace(sample_view(i), events=(Event(float(i), "info", f"paced {i}"),))
            for i in (1, 2, 3)
        ]
        for view in views:
            source.emit(view)
            await pilot.pause(0.05)
        assert app.view is first  # still waiting for the budget
        await wait_until(lambda: app.view is views[-1], "the newest, later", pause=pilot.pause)
        assert pacer.deferred >= 1
        texts = app.dashboard.events.texts
        assert [t.split()[-1] for t in texts if "paced" in t] == ["1", "2", "3"]


async def test_an_engine_that_stops_is_told_once_and_the_app_keeps_going(
    session: FakeSession, source: FakeSource
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(size=(120, 30), message_hook=seen.append, notifications=True) as pilot:
        await started(pilot, app, source)
        session.runtime.engine_down = True
        await wait_until(
            lambda: any(isinstance(m, WorkerFailed) for m in seen), "fail", pause=pilot.pause
        )
        # Every failed poll is a message (handled in turn: three more after the first)...
        await wait_until(
            lambda: sum(isinstance(m, WorkerFailed) for m in seen) >= 4,
            "three more failed polls",
            pause=pilot.pause,
        )
        # ...and the user is told once (not every 2 s).
        failures = {m.what for m in seen if isinstance(m, WorkerFailed)}
        assert failures == {"pod states"}
        errors = [t for t in app.dashboard.events.texts if "does not answer" in t]
        assert len(errors) == 1
        assert sum("does not answer" in n.message for n in app._notifications) == 1
        # A log that cannot be followed says so in its panel, and as an event.
        await pilot.press("4", "down")  # the next source: following it fails
        await wait_until(
            lambda: "cannot follow" in str(app.dashboard.logs.query_one("#log-status").render()),
            "log failure shown",
            pause=pilot.pause,
        )
        # Still alive: views render, keys work.
        view = sample_view(2)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        await pilot.press("1")
        assert app.dashboard.tabs.active == "traffic"


async def test_a_sidecar_that_dies_shows_in_the_header_and_the_pods(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(160, 40)) as pilot:
        await started(pilot, app, source)
        base = sample_view(0)
        dead = tuple(
            dataclasses.replace(s, connected=False, stale=True, error="connection refused")
            if s.node == "backend-v2-0"
            else s
            for s in base.sidecars
        )
        view = dataclasses.replace(base, sidecars=dead)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        header = str(app.dashboard.query_one("#header").render())
        assert "sidecars 4/5 live" in header
        await pilot.press("2")
        pods = app.dashboard.pods
        await wait_until(
            lambda: pods.cell_text("backend-v2-0", "sidecar") == "down", "pod", pause=pilot.pause
        )
        assert pods.cell_text("backend-v2-0", "ready") == "no admin"


async def test_escape_leaves_the_log_filter_so_the_keys_act_again(
    session: FakeSession, source: FakeSource
) -> None:
    session.runtime.log_lines[("ingress", "sidecar")] = ["GET /items 200"]
    app = make_app(source, session)
    async with app.run_test(size=(120, 30)) as pilot:
        await started(pilot, app, source)
        await pilot.press("slash")
        logs = app.dashboard.logs
        log_filter = logs.query_one("#log-filter")
        await wait_until(lambda: log_filter.has_focus, "the filter focused", pause=pilot.pause)
        await pilot.press("i", "t", "e", "m", "s", "escape")
        await wait_until(lambda: not log_filter.has_focus, "the filter left", pause=pilot.pause)
        # The filter typed so far stays; the next key is the dashboard's again.
        assert logs.filters[("ingress", "sidecar")] == "items"
        await pilot.press("1")
        await wait_until(
            lambda: app.dashboard.tabs.active == "traffic", "traffic tab", pause=pilot.pause
        )


def _width_is(bar: KeysBar, width: int) -> Callable[[], bool]:
    return lambda: bar.size.width == width


async def test_help_and_quit_stay_on_the_keys_bar_at_120_and_80_columns(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(160, 30)) as pilot:
        await started(pilot, app, source)
        bar = app.dashboard.query_one(KeysBar)
        assert "/  filter" in bar.text.plain  # wide enough for every key
        for width in (120, 80):
            await pilot.resize_terminal(width, 30)
            await wait_until(_width_is(bar, width), f"{width}", pause=pilot.pause)
            shown = bar.text.plain
            # What the bar holds past its width is cut off unseen.
            assert len(shown) <= width, shown
            assert shown.rstrip().endswith("?  help  q  quit"), shown
            assert shown.startswith(" 1-6  tabs "), shown


async def test_a_toast_leaves_the_load_line_in_view(
    session: FakeSession, source: FakeSource
) -> None:
    # Textual's toasts sat on the load line for their 4 s, hiding the running load's figures.
    from textual.widgets._toast import Toast

    app = make_app(source, session)
    async with app.run_test(size=(140, 40), notifications=True) as pilot:
        await started(pilot, app, source)
        app.notify("a toast with a long enough text to reach the left", timeout=10)
        await wait_until(lambda: bool(app.screen.query(Toast)), "the toast", pause=pilot.pause)
        await pilot.pause()
        load = app.dashboard.query_one("#load-bar").region
        assert load.height == 1
        for toast in app.screen.query(Toast):
            assert not toast.region.overlaps(load), (toast.region, load)


async def test_the_arrow_keys_move_the_routes_cursor_from_the_start(
    session: FakeSession, source: FakeSource
) -> None:
    # The tab bar had the focus when the dashboard opened: the arrows switched nothing
    # visible and the routes' cursor stayed put until `1` or a click.
    app = make_app(source, session)
    async with app.run_test(size=(120, 40)) as pilot:
        await started(pilot, app, source)
        routes = app.dashboard.routes
        view = sample_view(4)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        assert app.focused is routes
        before = routes.cursor_row
        await pilot.press("down")
        assert routes.cursor_row == before + 1
        chosen = routes.cursor_key
        # Back from a route's detail, the routes table has it still.
        await pilot.press("enter")
        await wait_until(
            lambda: isinstance(app.screen, RouteDetailScreen), "detail", pause=pilot.pause
        )
        await pilot.press("escape")
        assert app.screen is app.dashboard
        assert app.focused is routes and routes.cursor_key == chosen
        await pilot.press("up")
        assert routes.cursor_row == before
