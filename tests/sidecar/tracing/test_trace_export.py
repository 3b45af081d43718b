"""Exporters against a real collector on loopback: Zipkin v2 and OTLP/HTTP JSON bodies, the
batching, the bounded queue and its drops, a collector that is down, slow or refusing, and
the Envoy-named stats of each."""

from __future__ import annotations

import asyncio
import json
import time

from meshdev.common import trace_wire as tw
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.tracing import RequestTrace, Span
from meshdev.sidecar.tracing.export import (
    BATCH,
    MAX_QUEUE,
    Exporter,
    Format,
    otlp_body,
    zipkin_body,
)
from meshdev.sidecar.tracing.span import finished, zipkin
from tests.sidecar.helpers import client, get, listener_url, sidecar, simple_config, upstreams
from tests.sidecar.tracing.collector import collector, wait_for
from tests.sidecar.tracing.test_trace_spans import traced
from tests.support import LOCALHOST, free_port

LOCAL: tw.Endpoint = {"serviceName": "frontend"}


class _Sink:
    def record(self, span: Span) -> None:
        pass


def make_span(
    n: int,
    *,
    kind: str = "CLIENT",
    status: int = 200,
    parent: str | None = None,
    trace_id: str | None = None,
) -> Span:
    trace = RequestTrace(
        _Sink(),
        trace_id or f"{n + 1:032x}",
        parent,
        "outbound",
        "GET",
        "b",
        "/x",
        "1.1",
        "",
    )
    trace.routed("backend", "main")
    trace.cluster = "backend.v1"
    return finished(
        trace,
        f"{n + 1:016x}",
        parent,
        kind,
        1_700_000_000_000_000 + n,
        250,
        status,
        "",
        "10.0.0.1:8080",
        1,
        "rid",
    )


def exporter(fmt: Format, url: str, store: Store) -> Exporter:
    return Exporter(fmt, url, store, lambda: (LOCAL, "frontend-0"))


def counters(store: Store, prefix: str) -> dict[str, int]:
    return {
        c.name.removeprefix(prefix): c.value for c in store.counters() if c.name.startswith(prefix)
    }


async def test_zipkin_reports_are_v2_json_batched() -> None:
    store = Store()
    async with collector() as col:
        exp = exporter("zipkin", col.zipkin_url, store)
        for i in range(BATCH + 5):
            exp.offer(make_span(i, parent="00000000000000aa"))
        # A full batch goes at once; the rest after the flush interval.
        await wait_for(lambda: len(col.zipkin) == 1, timeout=0.9)
        assert len(col.zipkin[0]) == BATCH
        await wait_for(lambda: len(col.zipkin) == 2, timeout=5)
        await exp.aclose()
    assert col.content_types[0] == "application/json"
    first = col.zipkin[0][0]
    assert first["traceId"] == f"{1:032x}" and first["id"] == f"{1:016x}"
    assert first["parentId"] == "00000000000000aa" and first["kind"] == "CLIENT"
    assert first["localEndpoint"] == LOCAL
    assert first["remoteEndpoint"] == {"serviceName": "backend", "ipv4": "10.0.0.1", "port": 8080}
    assert first["timestamp"] == 1_700_000_000_000_000 and first["duration"] == 250
    assert first["tags"][tw.TAG_NODE] == "frontend-0"
    assert counters(store, "tracing.zipkin.") == {
        "spans_sent": BATCH + 5,
        "timer_flushed": 1,
        "reports_sent": 2,
        "reports_dropped": 0,
        "reports_failed": 0,
        "spans_dropped": 0,
    }


async def test_otlp_reports_are_otlp_http_json() -> None:
    store = Store()
    async with collector() as col:
        exp = exporter("otlp", col.otlp_url, store)
        exp.offer(make_span(0, kind="SERVER", status=503))
        exp.offer(make_span(1, parent=f"{1:016x}"))
        await wait_for(lambda: len(col.otlp) == 1, timeout=5)
        await exp.aclose()
    [report] = col.otlp
    [resource_spans] = report["resourceSpans"]
    assert resource_spans["resource"]["attributes"] == [
        {"key": "service.name", "value": {"stringValue": "frontend"}}
    ]
    server, client_span = resource_spans["scopeSpans"][0]["spans"]
    assert server["traceId"] == f"{1:032x}" and server["spanId"] == f"{1:016x}"
    assert server["kind"] == 2 and client_span["kind"] == 3  # SPAN_KIND_SERVER, _CLIENT
    assert "parentSpanId" not in server and client_span["parentSpanId"] == f"{1:016x}"
    assert server["startTimeUnixNano"] == str(1_700_000_000_000_000 * 1000)
    assert server["endTimeUnixNano"] == str((1_700_000_000_000_000 + 250) * 1000)
    attrs = {a["key"]: a["value"]["stringValue"] for a in server["attributes"]}
    assert attrs[tw.TAG_STATUS] == "503" and attrs[tw.TAG_ERROR] == "true"
    assert server["status"] == {"code": 2} and client_span["status"] == {}
    assert counters(store, "tracing.opentelemetry.") == {
        "spans_sent": 2,
        "timer_flushed": 1,
        "http_reports_sent": 1,
        "http_reports_success": 1,
        "http_reports_failed": 0,
        "spans_dropped": 0,
    }


async def test_a_64_bit_trace_id_is_padded_for_otlp() -> None:
    async with collector() as col:
        exp = exporter("otlp", col.otlp_url, Store())
        exp.offer(make_span(0, trace_id="a3ce929d0e0e4736"))
        await exp.aclose()
    [sent] = col.otlp_spans()
    assert sent["traceId"] == "0000000000000000a3ce929d0e0e4736"


async def test_a_collector_that_is_down_costs_the_drop_counter_only() -> None:
    store = Store()
    exp = exporter("zipkin", f"http://{LOCALHOST}:{free_port()}/api/v2/spans", store)
    started = time.perf_counter()
    for i in range(BATCH):
        exp.offer(make_span(i))
    offered = time.perf_counter() - started
    await wait_for(lambda: exp.dropped == BATCH, timeout=5)
    await exp.aclose()
    assert offered < 0.05  # offering never waits for the collector
    got = counters(store, "tracing.zipkin.")
    assert got["reports_failed"] == 1 and got["reports_sent"] == 0
    assert got["spans_dropped"] == BATCH and got["spans_sent"] == BATCH


async def test_a_refusing_collector_counts_dropped_reports() -> None:
    store = Store()
    async with collector(status=500) as col:
        zipkin = exporter("zipkin", col.zipkin_url, store)
        otlp = exporter("otlp", col.otlp_url, store)
        for e in (zipkin, otlp):
            e.offer(make_span(0))
            await e.aclose()
    assert counters(store, "tracing.zipkin.")["reports_dropped"] == 1
    assert counters(store, "tracing.opentelemetry.")["http_reports_failed"] == 1
    assert zipkin.dropped == otlp.dropped == 1


async def test_the_queue_is_bounded_and_overflow_is_counted() -> None:
    store = Store()
    async with collector(delay=0.5) as col:
        exp = exporter("zipkin", col.zipkin_url, store)
        extra = 300
        total = BATCH + MAX_QUEUE + extra
        for i in range(total):
            exp.offer(make_span(i))
            if i == BATCH - 1:
                # Let the first batch's report start: it is in flight from here on.
                await asyncio.sleep(0)
        assert exp.queued == MAX_QUEUE
        assert exp.dropped == extra
        await exp.aclose(grace=0.1)
    got = counters(store, "tracing.zipkin.")
    # What the slow collector never got is counted, nothing more.
    assert got["spans_dropped"] + len(col.zipkin_spans()) == total


async def test_a_slow_collector_never_slows_a_request() -> None:
    async with upstreams("a") as (a,), collector(delay=2.0) as col:
        cfg = traced(simple_config([a]), zipkin=col.zipkin_url, otlp=col.otlp_url)
        async with sidecar(cfg) as sc, client() as s:
            for _ in range(BATCH + 10):
                await get(s, listener_url(sc), "/")
            started = time.perf_counter()
            for _ in range(20):
                await get(s, listener_url(sc), "/")
            per_request = (time.perf_counter() - started) / 20
            assert sc.plane.tracer.dropped == 0
    assert per_request < 0.05


def test_reports_written_as_text_are_the_json_of_the_spans_whatever_they_hold() -> None:
    odd = 'a"b\\c\n\u00e9\u2028\x00{}\udc80'
    trace = RequestTrace(_Sink(), "ab" * 8, None, "inbound", odd, odd, f"/{odd}", "2", odd)
    trace.routed(odd, odd)
    trace.cluster = f"{odd}.v1"
    spans = [
        finished(trace, "cd" * 8, "ef" * 8, "SERVER", 1, 2, 0, "UF,URX", f"{odd}:1", 0, odd),
        finished(trace, "12" * 8, None, "CLIENT", 3, 4, 503, "", "10.0.0.1:80", 2, ""),
        make_span(7, parent="00000000000000aa"),
    ]
    local: tw.Endpoint = {"serviceName": odd}
    assert json.loads(zipkin_body(spans, local, odd)) == [zipkin(s, local, odd) for s in spans]
    report = json.loads(otlp_body(spans, local, odd))
    [rs] = report["resourceSpans"]
    assert rs["resource"]["attributes"][0]["value"]["stringValue"] == odd
    sent = rs["scopeSpans"][0]["spans"]
    for span, got in zip(spans, sent, strict=True):
        z = zipkin(span, local, odd)
        attrs = {a["key"]: a["value"]["stringValue"] for a in got["attributes"]}
        assert attrs == z["tags"] and got["name"] == z["name"]
        assert got["spanId"] == z["id"] and got.get("parentSpanId") == z.get("parentId")
