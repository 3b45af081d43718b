"""The ring of recent spans: numbered, bounded, read from a number on; and the tracer's
sampling decision."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshdev.common import trace_wire as tw
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.http import EMPTY_BODY, Request
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.tracing import RequestTrace, Span, Tracer
from meshdev.sidecar.tracing import span as span_module
from meshdev.sidecar.tracing import tracer as tracer_module
from meshdev.sidecar.tracing.export import otlp_body, zipkin_body
from meshdev.sidecar.tracing.ring import SpanRing
from meshdev.sidecar.tracing.span import duration_us, finished, timestamp_us, zipkin


class _Sink:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def record(self, span: Span) -> None:
        self.spans.append(span)


def _span(n: int) -> Span:
    trace = RequestTrace(_Sink(), f"{n:032x}", None, "inbound", "GET", "", "/", "1.1", "")
    return finished(trace, f"{n + 1:016x}", None, "SERVER", 1, 1, 200, "", "", 0, "")


def test_the_ring_keeps_the_last_spans_numbered() -> None:
    ring = SpanRing(size=4)
    assert ring.since(0) == (0, [])
    spans = [_span(i) for i in range(10)]
    for s in spans:
        ring.append(s)
    assert ring.next == 10 and ring.first == 6
    first, got = ring.since(0)
    assert first == 6 and got == spans[6:]
    assert ring.since(8) == (8, spans[8:])
    assert ring.since(10) == (10, [])
    # A reader ahead of the ring (the sidecar restarted) gets nothing, and next says where.
    assert ring.since(50) == (10, [])
    assert ring.since(6, limit=2) == (6, spans[6:8])


def _config(**tracing: Any) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {"version": 1, "mesh": "m", "node": "frontend-0", "service": "frontend", "tracing": tracing}
    )


def _request(*headers: tuple[str, str]) -> Request:
    return Request(
        "GET",
        "/items?x=1",
        "/items",
        "x=1",
        "backend",
        list(headers),
        True,
        EMPTY_BODY,
        ("127.0.0.1", 5000),
        0.0,
    )


def test_sampling_off_by_default_in_a_sidecar_config() -> None:
    tracer = Tracer(Store(), _config())
    assert not tracer.enabled


def test_sampling_percent_decides_new_traces_and_marks_the_unsampled() -> None:
    tracer = Tracer(Store(), _config(sampling=30))
    decided = [tracer.start(_request(), "outbound") for _ in range(4000)]
    share = sum(t is not None for t in decided) / len(decided)
    assert 0.25 < share < 0.35
    req = _request()
    while tracer.start(req, "outbound") is not None:
        req = _request()
    assert ("x-b3-sampled", "0") in req.headers


def test_a_callers_decision_is_honoured_either_way() -> None:
    tracer = Tracer(Store(), _config(sampling=100))
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    off = _request(("traceparent", f"00-{trace}-00f067aa0ba902b7-00"))
    assert tracer.start(off, "inbound") is None
    assert ("x-b3-sampled", "0") not in off.headers  # the caller's flag goes on as it came
    low = Tracer(Store(), _config(sampling=0.0001))
    on = low.start(_request(("b3", f"{trace}-00f067aa0ba902b7-1")), "inbound")
    assert on is not None and on.trace_id == trace and on.parent_id == "00f067aa0ba902b7"
    assert not on.b3_multi


def test_a_new_trace_starts_at_the_first_hop() -> None:
    tracer = Tracer(Store(), _config(sampling=100))
    got = tracer.start(_request(("x-request-id", "r")), "outbound")
    assert got is not None and len(got.trace_id) == 32 and got.parent_id is None
    assert (got.authority, got.target) == ("backend", "/items?x=1")


def test_http_url_and_protocol_are_formatted_when_read() -> None:
    tags: dict[str, dict[str, str]] = {}
    for target, version in (("http://backend/items?x=1", "1.1"), ("/items?x=1", "2")):
        trace = RequestTrace(
            _Sink(), "a" * 32, None, "outbound", "GET", "backend", target, version, ""
        )
        span = finished(trace, "b" * 16, None, "CLIENT", 1, 1, 200, "", "", 1, "")
        tags[version] = zipkin(span, {"serviceName": "web"}, "web-0")["tags"]
    assert tags["1.1"][tw.TAG_URL] == tags["2"][tw.TAG_URL] == "http://backend/items?x=1"
    assert (tags["1.1"][tw.TAG_PROTOCOL], tags["2"][tw.TAG_PROTOCOL]) == ("HTTP/1.1", "HTTP/2")


def test_a_first_hop_roots_the_trace_on_its_ids_low_half(monkeypatch: pytest.MonkeyPatch) -> None:
    # As Zipkin's tracers do: the root span's id is the trace id's low half, so a first hop
    # draws one id. Its retry, a child of nothing either, draws its own.
    trace_id = "0123456789abcdef" + "00000000000000ab"
    monkeypatch.setattr(tracer_module, "TRACE_IDS", [trace_id])
    sink = _Sink()
    tracer = Tracer(Store(), _config(sampling=100))
    tracer.record = sink.record  # type: ignore[method-assign]
    trace = tracer.start(_request(), "outbound")
    assert trace is not None and trace.trace_id == trace_id
    up = trace.begin_try([("x-request-id", "r")])
    assert up[1:] == [
        ("traceparent", f"00-{trace_id}-00000000000000ab-01"),
        ("b3", f"{trace_id}-00000000000000ab-1"),
    ]
    trace.end_try(503, "", "10.0.0.1:80", "r")
    retry = trace.begin_try(up)[1][1].split("-")[2]
    assert retry not in ("00000000000000ab", "0" * 16) and len(retry) == 16
    trace.finish(200, "", "10.0.0.1:80", "r")
    assert [(s[1], s[2]) for s in sink.spans] == [("00000000000000ab", None), (retry, None)]


def test_a_first_hops_server_span_is_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    trace_id = "0123456789abcdef" + "fedcba9876543210"
    monkeypatch.setattr(tracer_module, "TRACE_IDS", [trace_id])
    trace = Tracer(Store(), _config(sampling=100)).start(_request(), "ingress")
    assert trace is not None and trace.server_id == "fedcba9876543210"
    [(_, traceparent), _] = trace.begin_try([])
    assert traceparent.split("-")[2] != "fedcba9876543210"


def test_a_64_bit_trace_id_is_padded_for_w3c_only() -> None:
    sink = _Sink()
    trace = RequestTrace(sink, "a3ce929d0e0e4736", "00f067aa0ba902b7", "outbound", "GET", "b",
                         "/", "1.1", "")  # fmt: skip
    up = trace.begin_try([])
    span_id = up[0][1].split("-")[2]
    assert up == [
        ("traceparent", f"00-{'0' * 16}a3ce929d0e0e4736-{span_id}-01"),
        ("b3", f"a3ce929d0e0e4736-{span_id}-1-00f067aa0ba902b7"),
    ]
    trace.finish(200, "", "10.0.0.1:80", "r")
    [got] = sink.spans
    assert (got[0], got[1], got[2]) == ("a3ce929d0e0e4736", span_id, "00f067aa0ba902b7")


def test_a_tries_timestamp_is_within_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # The wall clock is read once, when the request starts: a step back of the clock (NTP)
    # after that does not put a try before its request.
    wall = iter([1_700_000_000_000_000_999, 1_699_999_999_000_000_000])
    perf = iter([5_000_000, 5_250_999, 5_900_000])
    monkeypatch.setattr(span_module, "_time_ns", lambda: next(wall))
    monkeypatch.setattr(span_module, "_perf_ns", lambda: next(perf))
    sink = _Sink()
    trace = RequestTrace(sink, "a" * 32, None, "outbound", "GET", "b", "/", "1.1", "")
    trace.begin_try([])
    trace.finish(200, "", "10.0.0.1:80", "r")
    [got] = sink.spans
    # Started 250.999 µs into a request that began at ...000.999 µs; took 649.001 µs.
    assert (timestamp_us(got), duration_us(got)) == (1_700_000_000_000_000 + 251, 649)


def test_times_taken_in_ns_are_reported_in_whole_us(monkeypatch: pytest.MonkeyPatch) -> None:
    # A request that began at ...000.999 µs and took 0.4 µs: Zipkin has it begin at ...000
    # and last 1 µs (its least), OTLP in ns but from those same µs.
    wall = iter([1_700_000_000_000_000_999])
    perf = iter([5_000_000, 5_000_400])
    monkeypatch.setattr(span_module, "_time_ns", lambda: next(wall))
    monkeypatch.setattr(span_module, "_perf_ns", lambda: next(perf))
    sink = _Sink()
    trace = RequestTrace(sink, "a" * 32, "b" * 16, "inbound", "GET", "b", "/", "1.1", "10.0.0.9")
    trace.finish(200, "", "", "r")
    [got] = sink.spans
    local: tw.Endpoint = {"serviceName": "web"}
    z = zipkin(got, local, "web-0")
    assert (z["timestamp"], z["duration"]) == (1_700_000_000_000_000, 1)
    assert json.loads(zipkin_body([got], local, "web-0")) == [z]
    [rs] = json.loads(otlp_body([got], local, "web-0"))["resourceSpans"]
    otlp = rs["scopeSpans"][0]["spans"][0]
    start, end = 1_700_000_000_000_000_000, 1_700_000_000_000_001_000
    assert (otlp["startTimeUnixNano"], otlp["endTimeUnixNano"]) == (str(start), str(end))
