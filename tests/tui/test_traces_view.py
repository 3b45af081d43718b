"""The Traces tab against a fake session, source and trace feed: the list and its orders,
the waterfall with its explanations, t / Enter from a failing route or event, and the feed
restarted after a failure."""

from __future__ import annotations

import dataclasses

from meshdev.telemetry.aggregation.view import Event
from meshdev.testing.fake_traces import FakeTraceFeed
from meshdev.testing.sample_spans import request_spans, trace_id
from meshdev.testing.sample_views import sample_view
from meshdev.tui.screens.dashboard import KEYS
from meshdev.tui.screens.help import HelpScreen, help_text
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.screens.trace_detail import TraceDetailScreen
from meshdev.tui.widgets.keys_bar import keys_text
from meshdev.tui.widgets.traces_view import NO_ANSWER, NO_SPANS_ENDPOINT
from tests.support import wait_until
from tests.tui.tuifakes import FakeSession, FakeSource, make_app, started


async def test_the_traces_tab_lists_newest_first_and_s_cycles_the_order(
    session: FakeSession, source: FakeSource
) -> None:
    feed = FakeTraceFeed()
    app = make_app(source, session, traces=feed)
    async with app.run_test(size=(160, 40)) as pilot:
        await started(pilot, app, source)
        await wait_until(lambda: feed.running, "the feed", pause=pilot.pause)
        # The feed reads the sidecars the source watches.
        assert feed.targets() == source.targets and feed.targets()
        await pilot.press("6")
        view = app.dashboard.traces
        assert app.dashboard.tabs.active == "traces"
        assert view.line_text.startswith("no traces yet")
        feed.push(request_spans(1, backend_ms=90))
        feed.push(request_spans(2, status=503, flags="UO"))
        feed.push(request_spans(3))
        table = view.table
        await wait_until(lambda: len(table.keys) == 3, "three rows", pause=pilot.pause)
        assert table.keys == [trace_id(3), trace_id(2), trace_id(1)]
        assert table.cell_text(trace_id(2), "status") == "503 UO"
        assert table.cell_text(trace_id(1), "services") == "ingress → frontend → backend"
        assert "3 shown of 3 kept, 1 failed" in view.line_text
        await pilot.press("s")
        assert str(view.order) == "slowest"
        assert table.keys[0] == trace_id(1)
        await pilot.press("s")
        assert str(view.order) == "failed" and table.keys == [trace_id(2)]
        # New spans while the tab shows are painted without a key.
        feed.push(request_spans(4, status=503, flags="UH"))
        await wait_until(
            lambda: table.keys == [trace_id(4), trace_id(2)], "news", pause=pilot.pause
        )
        await pilot.press("s")
        assert str(view.order) == "newest" and len(table.keys) == 4


async def test_enter_on_a_trace_opens_its_waterfall_with_the_failure_explained(
    session: FakeSession, source: FakeSource
) -> None:
    feed = FakeTraceFeed()
    app = make_app(source, session, traces=feed)
    async with app.run_test(size=(100, 40)) as pilot:
        await started(pilot, app, source)
        await wait_until(lambda: feed.running, "the feed", pause=pilot.pause)
        feed.push(request_spans(1))
        feed.push(request_spans(2, status=503, flags="UO", tries=1))
        await pilot.press("6")
        table = app.dashboard.traces.table
        await wait_until(lambda: len(table.keys) == 2, "rows", pause=pilot.pause)
        await pilot.press("enter")  # the newest: the one the breaker refused
        screen = await wait_until(
            lambda: app.screen if isinstance(app.screen, TraceDetailScreen) else None,
            "the trace",
            pause=pilot.pause,
        )
        assert screen.trace.trace_id == trace_id(2)
        text = screen.text
        assert f"trace {trace_id(2)}" in text
        assert "frontend out backend.v1" in text  # the CLIENT span of frontend's sidecar
        assert "503 UO" in text
        # The explanation is the route detail's, from the mesh the session runs.
        assert "policies.backend.circuit_breaker.max_pending_requests" in text
        # No waterfall line is wider than the box (the bars take what is left).
        body = screen.query_one("#trace-body")
        bars = [line for line in screen.text.splitlines() if "####" in line]
        assert len(bars) == 4 and max(len(line) for line in bars) <= body.size.width
        await pilot.press("escape")
        await wait_until(lambda: app.screen is app.dashboard, "back", pause=pilot.pause)


async def test_t_on_a_failing_route_and_enter_on_events_jump_to_an_example_trace(
    session: FakeSession, source: FakeSource
) -> None:
    feed = FakeTraceFeed()
    app = make_app(source, session, traces=feed)
    async with app.run_test(size=(160, 40)) as pilot:
        await started(pilot, app, source)
        await wait_until(lambda: feed.running, "the feed", pause=pilot.pause)
        view = dataclasses.replace(
            sample_view(4),  # backend/items overflows its breaker in this tick
            events=(Event(1_700_000_000.0, "breaker", "breaker backend open", "backend"),),
        )
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        assert view.routes[0].key == "backend/items"
        app.dashboard.routes.focus()
        await pilot.press("t")
        assert not isinstance(app.screen, TraceDetailScreen)  # none yet: a warning says so
        feed.push(request_spans(1, status=503, flags="UO"))
        feed.push(request_spans(2))  # newer, but it did not fail
        await pilot.press("t")
        screen = await wait_until(
            lambda: app.screen if isinstance(app.screen, TraceDetailScreen) else None,
            "the route's trace",
            pause=pilot.pause,
        )
        assert screen.trace.trace_id == trace_id(1)
        await pilot.press("escape")
        # From the route detail too.
        await pilot.press("enter")
        await wait_until(
            lambda: isinstance(app.screen, RouteDetailScreen), "detail", pause=pilot.pause
        )
        await pilot.press("t")
        await wait_until(
            lambda: isinstance(app.screen, TraceDetailScreen), "trace", pause=pilot.pause
        )
        await pilot.press("escape")
        await wait_until(
            lambda: isinstance(app.screen, RouteDetailScreen), "detail again", pause=pilot.pause
        )
        await pilot.press("escape")
        # Enter in the events tab: the breaker's cluster.
        await pilot.press("3", "enter")
        screen = await wait_until(
            lambda: app.screen if isinstance(app.screen, TraceDetailScreen) else None,
            "the breaker's trace",
            pause=pilot.pause,
        )
        assert screen.trace.trace_id == trace_id(1)


async def test_the_feed_is_restarted_after_a_failure_and_keys_and_help_list_the_tab(
    session: FakeSession, source: FakeSource
) -> None:
    feed = FakeTraceFeed(fail_first=1)
    app = make_app(source, session, traces=feed)
    async with app.run_test(size=(160, 40)) as pilot:
        await started(pilot, app, source)
        await wait_until(lambda: feed.running and feed.runs == 2, "restarted", pause=pilot.pause)
        assert any("traces: ConnectionError" in t for t in app.dashboard.events.texts)
        await pilot.press("question_mark")
        await wait_until(lambda: isinstance(app.screen, HelpScreen), "help", pause=pilot.pause)
    assert " 1-6  tabs " in keys_text(KEYS).plain
    help_plain = help_text().plain
    assert "traffic, pods, events, logs, security, traces" in help_plain
    assert "Traces" in help_plain


async def test_without_a_feed_the_tab_says_so(session: FakeSession, source: FakeSource) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(120, 30)) as pilot:
        await started(pilot, app, source)
        await pilot.press("6")
        assert app.dashboard.traces.line_text == "no trace source here"
        await pilot.press("1", "t")
        assert app.screen is app.dashboard


async def test_proxies_without_spans_are_told_apart_from_no_traffic(
    session: FakeSession, source: FakeSource
) -> None:
    feed = FakeTraceFeed()
    feed.counts = {"ok": 0, "missing": 2, "error": 0}  # Envoys, say
    app = make_app(source, session, traces=feed)
    async with app.run_test(size=(160, 40)) as pilot:
        await started(pilot, app, source)
        await pilot.press("6")
        assert app.dashboard.traces.line_text == NO_SPANS_ENDPOINT
        feed.counts = {"ok": 0, "missing": 0, "error": 3}
        await pilot.press("1", "6")
        assert app.dashboard.traces.line_text == NO_ANSWER
        feed.counts = {"ok": 3, "missing": 0, "error": 0}
        await pilot.press("1", "6")
        assert app.dashboard.traces.line_text.startswith("no traces yet")


async def test_the_list_keeps_the_newest_in_view_unless_a_row_was_chosen(
    session: FakeSession, source: FakeSource
) -> None:
    # Under load the list followed its selected row down as new traces came in on top: at
    # 100 requests a second it showed traces 2 s old, at 20 a second 10 s old.
    feed = FakeTraceFeed()
    app = make_app(source, session, traces=feed)
    async with app.run_test(size=(160, 40)) as pilot:
        await started(pilot, app, source)
        await wait_until(lambda: feed.running, "the feed", pause=pilot.pause)
        await pilot.press("6")
        table = app.dashboard.traces.table
        for n in range(1, 61):
            feed.push(request_spans(n))
        await wait_until(lambda: len(table.keys) == 60, "60 rows", pause=pilot.pause)
        assert table.cursor_key == trace_id(60)
        for n in range(61, 91):
            feed.push(request_spans(n))
        await wait_until(lambda: table.keys[:1] == [trace_id(90)], "newer rows", pause=pilot.pause)
        assert table.cursor_row == 0 and table.cursor_key == trace_id(90)
        assert table.scroll_y == 0
        # A row chosen below the top is kept in view as rows come in above it.
        await pilot.press("down", "down")
        assert table.cursor_key == trace_id(88)
        for n in range(91, 101):
            feed.push(request_spans(n))
        await wait_until(lambda: table.keys[:1] == [trace_id(100)], "more rows", pause=pilot.pause)
        assert table.cursor_key == trace_id(88) and table.cursor_row == 12
