"""The trace store: bounded, deduplicating, re-assembling only what changed, and its orders."""

from __future__ import annotations

import pytest

from meshdev.telemetry.aggregation.trace_store import TraceStore, example_trace, select
from meshdev.telemetry.aggregation.traces import Span, parse_spans
from meshdev.testing.sample_spans import request_spans, trace_id


def spans_of(n: int, **kw: object) -> list[Span]:
    return parse_spans(request_spans(n, **kw))[0]  # type: ignore[arg-type]


def test_spans_read_twice_count_once() -> None:
    store = TraceStore()
    assert store.add(spans_of(1)) == 5
    assert store.add(spans_of(1)) == 0
    assert store.duplicates == 5
    trace = store.get(trace_id(1))
    assert trace is not None and trace.span_count == 5
    assert store.span_count == 5 and len(store) == 1


def test_a_trace_is_assembled_again_only_when_a_span_of_it_arrived() -> None:
    store = TraceStore()
    first, rest = spans_of(1)[:2], spans_of(1)[2:]
    store.add(first)
    partial = store.get(trace_id(1))
    assert partial is not None and partial.span_count == 2
    assert store.get(trace_id(1)) is partial  # cached
    store.add(spans_of(2))
    assert store.get(trace_id(1)) is partial  # another trace's spans do not touch it
    store.add(rest)
    whole = store.get(trace_id(1))
    assert whole is not partial and whole is not None and whole.span_count == 5


def test_the_newest_traces_are_kept_and_old_stragglers_do_not_push_them_out() -> None:
    store = TraceStore(max_traces=3)
    for n in range(1, 6):
        store.add(spans_of(n))
    assert len(store) == 3
    assert {t.trace_id for t in store.traces()} == {trace_id(n) for n in (3, 4, 5)}
    assert store.evicted == 2
    assert store.add(spans_of(1)) == 0  # older than every kept trace: dropped
    assert {t.trace_id for t in store.traces()} == {trace_id(n) for n in (3, 4, 5)}


def test_span_caps_bound_one_trace_and_the_whole_store() -> None:
    store = TraceStore(max_spans_per_trace=3)
    store.add(spans_of(1, tries=3))  # 9 spans
    trace = store.get(trace_id(1))
    assert trace is not None and trace.span_count == 3 and trace.truncated == 6
    small = TraceStore(max_spans=12)
    for n in range(1, 5):
        small.add(spans_of(n))  # 5 spans each
    assert small.span_count <= 12
    assert [t.trace_id for t in small.select()] == [trace_id(4), trace_id(3)]
    with pytest.raises(ValueError, match="at least 1"):
        TraceStore(max_traces=0)


def test_orders_newest_slowest_and_failed() -> None:
    store = TraceStore()
    store.add(spans_of(1, backend_ms=50))
    store.add(spans_of(2, status=503, flags="UO"))
    store.add(spans_of(3, backend_ms=2))
    store.add(spans_of(4, tries=2))
    newest = [t.trace_id for t in store.select("newest")]
    assert newest == [trace_id(n) for n in (4, 3, 2, 1)]
    slowest = store.select("slowest")
    assert slowest[0].trace_id == trace_id(1)
    assert [t.duration_us for t in slowest] == sorted(
        (t.duration_us for t in slowest), reverse=True
    )
    assert [t.trace_id for t in store.select("failed")] == [trace_id(4), trace_id(2)]
    assert [t.trace_id for t in store.select("slowest", failed_only=True, limit=1)] == [trace_id(4)]
    assert select([], "slowest") == []
    assert store.select(limit=0) == []


def test_an_example_trace_is_the_newest_failed_one_of_that_route_or_cluster() -> None:
    store = TraceStore()
    store.add(spans_of(1, status=503, flags="UO"))
    store.add(spans_of(2, status=503, flags="UO"))
    store.add(spans_of(3))
    store.add(spans_of(4, status=503, flags="UO", route="canary"))
    traces = store.traces()
    found = example_trace(traces, route="items", service="backend")
    assert found is not None and found.trace_id == trace_id(2)
    assert example_trace(traces, route="items", service="payments") is None
    assert example_trace(traces, route="nothing") is None
    canary = example_trace(traces, route="canary", service="backend")
    assert canary is not None and canary.trace_id == trace_id(4)
    by_cluster = example_trace(traces, cluster="backend")
    assert by_cluster is not None and by_cluster.trace_id == trace_id(4)
    ok = example_trace(traces, route="items", service="backend", failed=False)
    assert ok is not None and ok.trace_id == trace_id(3)


def test_a_full_store_takes_a_flood_of_new_traces_quickly() -> None:
    import time

    store = TraceStore(max_traces=500)
    batches = [spans_of(n) for n in range(1, 3001)]  # 15,000 spans
    began = time.perf_counter()
    for n in range(0, len(batches), 100):  # as a poll would: many spans per add
        store.add(s for batch in batches[n : n + 100] for s in batch)
        store.select("slowest", limit=20)
    elapsed = time.perf_counter() - began
    assert len(store) == 500
    assert store.select()[0].trace_id == trace_id(3000)
    assert elapsed < 5.0


def test_spans_since_a_version_are_the_whole_traces_that_changed_after_it() -> None:
    store = TraceStore()
    assert store.spans_since(0) == (0, [])
    store.add(spans_of(1) + spans_of(2)[:2])
    mark = store.version
    reached, spans = store.spans_since(0)
    assert reached == mark and {s.trace_id for s in spans} == {trace_id(1), trace_id(2)}
    assert store.spans_since(mark) == (mark, [])
    store.add(spans_of(2)[2:])  # the rest of trace 2: all of it is answered again
    reached, again = store.spans_since(mark)
    assert reached == store.version and [s.trace_id for s in again] == [trace_id(2)] * 5
    store.add(spans_of(1))  # read twice: nothing kept, nothing changed
    assert store.spans_since(store.version) == (store.version, [])
    store.add(spans_of(3))
    # In the order they changed: 2, then 3.
    _, both = store.spans_since(mark)
    assert [s.trace_id for s in both][::5] == [trace_id(2), trace_id(3)]


def test_a_page_of_changes_ends_between_two_adds_never_inside_one() -> None:
    store = TraceStore()
    store.add(spans_of(1) + spans_of(2))  # one add: both traces change together
    store.add(spans_of(3))
    store.add(spans_of(4))
    reached, page = store.spans_since(0, limit=3)
    # The first change is two traces: both are served, though they pass the limit.
    assert reached == 1 and {s.trace_id for s in page} == {trace_id(1), trace_id(2)}
    reached, page = store.spans_since(reached, limit=3)
    assert reached == 2 and {s.trace_id for s in page} == {trace_id(3)}
    reached, page = store.spans_since(reached, limit=3)
    assert reached == store.version == 3 and {s.trace_id for s in page} == {trace_id(4)}
    assert store.spans_since(reached, limit=3) == (3, [])


def test_a_trace_evicted_after_it_changed_is_not_answered() -> None:
    store = TraceStore(max_traces=2)
    store.add(spans_of(1))
    store.add(spans_of(2) + spans_of(3))
    assert {s.trace_id for s in store.spans_since(0)[1]} == {trace_id(2), trace_id(3)}
