"""Trace assembly on plain data: spans of many sidecars joined into trees, their figures and
waterfall, and what bad ids do (they must never lose, repeat or hang on a span)."""

from __future__ import annotations

import random
import time
from typing import Any

from meshdev.common import trace_wire as tw
from meshdev.telemetry.aggregation.traces import (
    Span,
    Trace,
    assemble,
    normalize_id,
    parse_span,
    parse_spans,
    span_wire,
)
from meshdev.testing.sample_spans import EPOCH_US, request_spans, split_by_node, trace_id

T = "0af7651916cd43dd8448eb211c80319c"


def mk(
    span_id: str,
    parent: str | None = None,
    *,
    kind: str = "SERVER",
    service: str = "svc",
    start: int | None = 1_000,
    duration: int = 10,
    tags: dict[str, str] | None = None,
    shared: bool = False,
) -> Span:
    return Span(
        trace_id=T,
        span_id=span_id.rjust(16, "0"),
        parent_id=parent.rjust(16, "0") if parent else None,
        name=f"op-{span_id}",
        kind=kind,
        service=service,
        start_us=start,
        duration_us=duration,
        tags=tags or {},
        shared=shared,
    )


def ids(trace: Trace) -> list[tuple[int, str, str]]:
    return [(r.depth, r.span.span_id.lstrip("0"), r.span.kind) for r in trace.rows()]


def test_a_request_through_three_services_is_one_tree_with_its_figures() -> None:
    raw = request_spans(1)
    by_node = split_by_node(raw)
    assert set(by_node) == {"ingress", "frontend-0", "backend-v1-0"}
    spans = [s for node, docs in by_node.items() for s in parse_spans(docs, node)[0]]
    random.Random(1).shuffle(spans)  # sidecars answer in any order
    trace = assemble(trace_id(1), spans)
    assert [(r.depth, r.span.service, r.span.kind) for r in trace.rows()] == [
        (0, "ingress", "SERVER"),
        (1, "ingress", "CLIENT"),
        (2, "frontend", "SERVER"),
        (3, "frontend", "CLIENT"),
        (4, "backend", "SERVER"),
    ]
    assert trace.services == ("ingress", "frontend", "backend")
    assert trace.hops == 2
    assert trace.span_count == 5
    assert trace.orphans == 0
    assert not trace.failed
    assert trace.status == 200
    assert trace.route == "GET /items"
    assert trace.start_us == EPOCH_US + 1_000_000
    root = trace.root
    assert root is not None and trace.duration_us == root.duration_us
    # Backend's 4 ms is where the time went: the span with the most time of its own.
    assert trace.slowest is not None and trace.slowest.service == "backend"
    assert trace.slowest_self_us == 4000


def test_retries_are_siblings_in_start_order_and_a_failure_is_seen_anywhere() -> None:
    spans, _ = parse_spans(request_spans(7, tries=3))
    trace = assemble(trace_id(7), spans)
    attempts = [r.span for r in trace.rows() if r.span.kind == "CLIENT" and r.depth == 3]
    assert [s.tags[tw.TAG_ATTEMPT] for s in attempts] == ["1", "2", "3"]
    assert [s.status for s in attempts] == [503, 503, 200]
    assert trace.hops == 4  # ingress->frontend, and three tries of frontend->backend
    # The caller got 200, but two tries failed: the trace counts as failed (it hides a
    # flaky backend, which is what a failed filter is for).
    assert trace.status == 200
    assert trace.failed


def test_flags_errors_and_status_mark_failures_but_a_delay_does_not() -> None:
    assert mk("1", tags={tw.TAG_STATUS: "503"}).failed
    assert mk("1", tags={tw.TAG_FLAGS: "UO"}).failed
    assert mk("1", tags={tw.TAG_ERROR: "upstream reset"}).failed
    assert not mk("1", tags={tw.TAG_ERROR: "false"}).failed
    assert not mk("1", tags={tw.TAG_FLAGS: "DI", tw.TAG_STATUS: "200"}).failed
    # Delayed on purpose, then fine: not a failure, even where the tracer tagged it `error`.
    delayed = {tw.TAG_FLAGS: "DI", tw.TAG_STATUS: "200", tw.TAG_ERROR: "true"}
    assert not mk("1", tags=delayed).failed
    assert mk("1", tags={**delayed, tw.TAG_STATUS: "503"}).failed
    assert mk("1", tags={tw.TAG_ERROR: "true"}).failed  # no answer at all
    assert not mk("1", tags={tw.TAG_FLAGS: "-", tw.TAG_STATUS: "404"}).failed
    assert mk("1", tags={tw.TAG_FLAGS: "DI,UT"}).flags == ("DI", "UT")
    trace = assemble(T, parse_spans(request_spans(2, status=503, flags="UO"))[0])
    assert trace.failed and trace.status == 503 and trace.flags == ("UO",)
    assert "backend" not in trace.services  # the breaker answered: backend never saw it


def test_shared_span_ids_hang_the_server_half_under_its_client_half() -> None:
    # Zipkin B3 with shared spans (Envoy's default): the callee's SERVER span reuses the
    # caller's CLIENT id; the callee's own calls name that id as their parent.
    spans = [
        mk("a", kind="SERVER", service="ingress", start=0, duration=100),
        mk("b", "a", kind="CLIENT", service="ingress", start=10, duration=80),
        mk("b", "a", kind="SERVER", service="frontend", start=20, duration=60, shared=True),
        mk("c", "b", kind="CLIENT", service="frontend", start=30, duration=30),
    ]
    trace = assemble(T, spans)
    assert ids(trace) == [(0, "a", "SERVER"), (1, "b", "CLIENT"), (2, "b", "SERVER"),
                          (3, "c", "CLIENT")]  # fmt: skip
    assert trace.orphans == 0 and trace.hops == 1


def test_orphans_hang_at_the_root_marked_after_the_real_root() -> None:
    spans = [
        mk("9", "dead", start=50, service="backend"),  # its parent never arrived
        mk("1", start=100, service="ingress", duration=200),
        mk("2", "1", start=120, service="ingress", kind="CLIENT"),
    ]
    trace = assemble(T, spans)
    assert [(r.span.span_id.lstrip("0"), r.depth, r.orphan) for r in trace.rows()] == [
        ("1", 0, False),
        ("2", 1, False),
        ("9", 0, True),
    ]
    assert trace.root is not None and trace.root.service == "ingress"
    assert trace.orphans == 1
    # The orphan started before the root: the trace's start and the offsets say so.
    assert trace.start_us == 50
    assert {r.span.span_id.lstrip("0"): r.offset_us for r in trace.rows()}["1"] == 50


def test_cycles_of_parent_ids_are_cut_and_every_span_shows_once() -> None:
    spans = [
        mk("1", "3", start=10),
        mk("2", "1", start=20),
        mk("3", "2", start=30),
        mk("4", "4", start=40),  # its own parent: parse_span drops that, assemble must too
        mk("5", "4", start=50),
    ]
    trace = assemble(T, spans)
    # The cycle is cut at its earliest span, which becomes a marked root; the span that was
    # its own parent is a marked root too.
    assert [(r.depth, r.span.span_id.lstrip("0"), r.orphan) for r in trace.rows()] == [
        (0, "1", True),
        (1, "2", False),
        (2, "3", False),
        (0, "4", True),
        (1, "5", False),
    ]
    assert trace.orphans == 2


def test_duplicates_count_once_and_the_same_id_of_two_kinds_is_two_spans() -> None:
    once = mk("1", start=0, duration=100)
    spans = [once, once, mk("2", "1", start=5), mk("2", "1", start=5)]
    trace = assemble(T, spans)
    assert trace.span_count == 2
    assert len(trace.rows()) == 2
    both = assemble(T, [mk("1", kind="CLIENT"), mk("1", kind="SERVER", shared=True)])
    assert both.span_count == 2 and both.orphans == 0


def test_missing_fields_get_neutral_values_and_unplaceable_spans_are_dropped() -> None:
    good: dict[str, Any] = {"traceId": T.upper(), "id": "00f067aa0ba902b7"}
    span = parse_span(good, "n1")
    assert span is not None
    assert (span.trace_id, span.name, span.kind, span.service) == (T, "", "", "")
    assert (span.start_us, span.duration_us, span.tags, span.node) == (None, 0, {}, "n1")
    bad: list[Any] = [
        None,
        [],
        "span",
        {"id": "00f067aa0ba902b7"},
        {"traceId": T},
        {"traceId": "xyz", "id": "00f067aa0ba902b7"},
        {"traceId": T, "id": "short"},
        {"traceId": 12, "id": 34},
    ]
    spans, dropped = parse_spans([*bad, good])
    assert dropped == len(bad) and len(spans) == 1
    odd = parse_span(
        {
            **good,
            "parentId": "not-hex",
            "kind": "PRODUCER",
            "timestamp": "yesterday",
            "duration": -5,
            "tags": {"http.status_code": 503, "x": None},
            "localEndpoint": "frontend",
        }
    )
    assert odd is not None
    assert (odd.parent_id, odd.kind, odd.start_us, odd.duration_us) == (None, "", None, 0)
    assert odd.status == 503 and odd.tags["x"] == "None"
    # A trace of spans without times still assembles: offsets 0, the longest as its length.
    untimed = assemble(T, [mk("1", start=None, duration=30), mk("2", "1", start=None)])
    assert untimed.duration_us == 30
    assert [(r.offset_us, r.width_us) for r in untimed.rows()] == [(0, 30), (0, 10)]


def test_a_span_sent_on_by_a_relay_reads_back_as_the_same_span_of_the_same_node() -> None:
    spans, _ = parse_spans(request_spans(1, tries=2, status=503, flags="UO"), "")
    assert spans and all(s.node for s in spans)  # named by their node_id tags
    for span in spans:
        assert parse_span(span_wire(span)) == span
    # A reader's name for a sidecar whose spans have no node_id tag (an Envoy's) goes with
    # them, in the tag.
    bare = mk("1", "2", kind="CLIENT", start=None, shared=True)
    named = Span(**{**{f: getattr(bare, f) for f in bare.__slots__}, "node": "envoy-0"})
    back = parse_span(span_wire(named))
    assert back is not None and back.node == "envoy-0"
    assert (back.start_us, back.kind, back.shared, back.parent_id) == (
        None,
        "CLIENT",
        True,
        named.parent_id,
    )
    with_remote = parse_span({**span_wire(named), "remoteEndpoint": {"serviceName": "db"}})
    assert with_remote is not None and parse_span(span_wire(with_remote)) == with_remote
    # The reader's own name wins over a tag's (a sidecar's answer names the sidecar).
    assert (parse_span(span_wire(named), "other") or bare).node == "other"


def test_64_bit_and_padded_128_bit_trace_ids_are_the_same_trace() -> None:
    assert normalize_id("0000000000000000ABCDEF0123456789", (16, 32)) == "abcdef0123456789"
    assert normalize_id("abcdef0123456789", (16, 32)) == "abcdef0123456789"
    assert normalize_id("abcdef012345678", (16, 32)) is None


def test_waterfall_rows_stay_inside_the_trace() -> None:
    spans = [
        mk("1", start=1_000, duration=100),
        # A child that claims to end after its parent and the trace (clock skew between hosts).
        mk("2", "1", start=1_050, duration=500),
        mk("3", "1", start=1_010, duration=20),
    ]
    trace = assemble(T, spans)
    assert trace.duration_us == 550
    rows = {r.span.span_id.lstrip("0"): r for r in trace.rows()}
    assert [r.span.span_id.lstrip("0") for r in trace.rows()] == ["1", "3", "2"]
    for r in rows.values():
        assert r.offset_us >= 0 and r.offset_us + r.width_us <= trace.duration_us
    assert (rows["2"].offset_us, rows["2"].width_us) == (50, 500)
    # Self time: 100 minus what its children cover inside it (10..30 and 50..100 -> 70).
    assert rows["1"].self_us == 30


def test_a_huge_deep_trace_assembles_quickly_without_recursion() -> None:
    n = 20_000
    chain = [mk(f"{i + 1:x}", f"{i:x}" if i else None, start=i, duration=n - i) for i in range(n)]
    random.Random(3).shuffle(chain)
    began = time.perf_counter()
    trace = assemble(T, chain)
    rows = trace.rows()
    elapsed = time.perf_counter() - began
    assert len(rows) == n and rows[-1].depth == n - 1
    assert elapsed < 5.0
    wide = [mk("1", start=0, duration=10)] + [mk(f"{i + 2:x}", "1", start=i) for i in range(n)]
    assert len(assemble(T, wide).rows()) == n + 1
