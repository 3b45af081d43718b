"""The Traces view's words without Textual: bars, the waterfall, the explanations, and which
trace a failing route or event leads to."""

from __future__ import annotations

from meshdev.config import load_mesh
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.aggregation.traces import Trace, parse_spans
from meshdev.telemetry.aggregation.view import Event
from meshdev.testing.sample_spans import request_spans, trace_id
from meshdev.testing.sample_views import sample_view
from meshdev.tui.logic import traces as words
from tests.support import DEMO_MESH


def one(n: int, **kw: object) -> Trace:
    store = TraceStore()
    store.add(parse_spans(request_spans(n, **kw))[0])  # type: ignore[arg-type]
    trace = store.get(trace_id(n))
    assert trace is not None
    return trace


def test_bars_are_placed_and_sized_by_time_and_never_vanish() -> None:
    assert words.bar(0, 100, 100, 10) == "#" * 10
    assert words.bar(50, 50, 100, 10) == " " * 5 + "#" * 5
    assert words.bar(99, 1, 100, 10) == " " * 9 + "#"  # a 1 µs span still shows
    assert words.bar(0, 0, 0, 4) == "#   "
    assert all(len(words.bar(o, 7, 100, 12)) == 12 for o in range(0, 100, 7))


def test_the_waterfall_has_a_line_per_span_indented_with_timings() -> None:
    trace = one(1, tries=2)
    lines = words.waterfall(trace, width=20).plain.splitlines()
    assert len(lines) == trace.span_count == 7
    assert lines[0].startswith("ingress in ")
    assert lines[3].startswith("      frontend out backend.v1")
    assert "503" in lines[3] and "try 2" in lines[5]
    assert lines[0].split()[-1] == "200"
    assert "+  0.0ms" in lines[0]


def test_failures_are_explained_by_the_mesh_once_each() -> None:
    mesh = load_mesh(DEMO_MESH)
    trace = one(2, status=503, flags="UO")
    found = words.causes(trace, mesh)
    assert [(s.service, c.flag) for s, c in found] == [("frontend", "UO")]
    text = words.detail_text(trace, mesh).plain
    assert "503 UO" in text and "policies.backend.circuit_breaker.max_pending_requests: 5" in text
    # A retried 503 from the app: no flag, the app's own answer.
    retried = one(3, tries=2)
    own = words.causes(retried, mesh)
    assert [(s.service, c.status, c.flag) for s, c in own] == [
        ("frontend", "503", "retried"),
        ("backend", "503", ""),
    ]
    text = words.detail_text(retried, mesh).plain
    assert "answered so by backend's app itself" in text
    assert "503 retried ← routes.backend[1].retries.attempts: 2" in text.replace("<-", "←")
    assert "1 failed try was retried; the caller got 200 from the last" in text
    # Retries that did not help are URX's to explain, not a hidden failure.
    exhausted = one(5, tries=3, status=503, flags="URX")
    assert sorted(c.flag for _, c in words.causes(exhausted, mesh)) == ["", "URX"]
    assert "nothing failed" in words.detail_text(one(4), None).plain


def test_a_failing_route_or_event_leads_to_its_newest_failed_trace() -> None:
    traces = [one(1, status=503, flags="UO"), one(2), one(3, status=503, flags="UO")]
    items = sample_view(4).routes[0]
    assert items.key == "backend/items"
    found = words.trace_for_route(traces, items)
    assert found is not None and found.trace_id == trace_id(3)
    # A route with no failed trace: its newest trace at all.
    ok_only = [one(2)]
    fallback = words.trace_for_route(ok_only, items)
    assert fallback is not None and fallback.trace_id == trace_id(2)
    events = [
        Event(1.0, "breaker", "breaker backend open", cluster="backend"),
        Event(2.0, "ejection", "payments-0 ejected", cluster="payments"),
        Event(3.0, "reload", "v2"),
    ]
    chosen = words.trace_for_events(traces, events)
    assert chosen is not None and chosen.trace_id == trace_id(3)
    assert words.trace_for_events(traces, events[1:]) is None


def test_orders_cycle() -> None:
    assert [words.next_order(o) for o in ("newest", "slowest", "failed")] == [
        "slowest",
        "failed",
        "newest",
    ]
