"""Sending finished spans to collectors: Zipkin v2 JSON and OTLP/HTTP JSON, batched.

An exporter queues the spans it is offered (at most MAX_QUEUE; past it a span is dropped and
counted) and posts them in batches of up to BATCH spans, one report in flight at a time: when
BATCH spans wait, or FLUSH_INTERVAL after the first of them. Nothing of this runs on a
request's path but `offer` (an append and, now and then, a timer), so a slow or absent
collector never delays a request: its spans wait in the queue, then are dropped and counted.

It posts with the sidecar's own HTTP/1.1 client (upstream/), on a keep-alive connection.
Its stats, Envoy's names for its tracers:
- Zipkin, `tracing.zipkin.`: `spans_sent` (spans in the reports posted), `timer_flushed`
  (reports the timer started), `reports_sent` (accepted: a 2xx), `reports_dropped` (answered
  with anything else), `reports_failed` (no answer: refused, reset, timed out);
- OTLP, `tracing.opentelemetry.`: `spans_sent`, `timer_flushed`, `http_reports_sent` (posted),
  `http_reports_success` (2xx), `http_reports_failed` (anything else, or no answer);
- both, meshdev's own: `spans_dropped`, spans that never reached the collector (a full queue,
  or a report dropped or failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

from meshdev.common import trace_wire as tw
from meshdev.common.sidecar_config import collector_address
from meshdev.sidecar.stats.store import Counter, Store
from meshdev.sidecar.tracing.span import (
    CLIENT,
    ID,
    KIND,
    PARENT_ID,
    SERVER,
    TRACE_ID,
    Span,
    duration_us,
    is_error,
    remote_endpoint,
    span_name,
    tags,
    timestamp_us,
)
from meshdev.sidecar.upstream import (
    ConnectFailure,
    ConnectionBudget,
    PendingOverflow,
    ResponseTooLarge,
    UpstreamPool,
    UpstreamReset,
)

log = logging.getLogger(__name__)

MAX_QUEUE: Final = 5000
BATCH: Final = 200
FLUSH_INTERVAL: Final = 1.0
CONNECT_TIMEOUT: Final = 1.0
# A report not answered in this long counts as failed (its connection is closed).
REPORT_TIMEOUT: Final = 5.0
# A collector's answer is read and thrown away; a huge one is not read at all.
ANSWER_LIMIT: Final = 64 * 1024

Format = Literal["zipkin", "otlp"]
# Who this sidecar is in its spans: localEndpoint / service.name, and node_id.
Identity = Callable[[], tuple[tw.Endpoint, str]]

# Reports are written as text rather than built as dicts and encoded: a dict per span and the
# encoder's walk cost 5 µs a span for Zipkin and 30 for OTLP, these about a tenth of that.
# Every string that can hold anything (names, URLs, tags) goes through json's own quoting, ASCII
# escaped so that no character can make the body invalid UTF-8; ids are hex and kinds, times
# and numbers are ours.
_q = json.encoder.encode_basestring_ascii
# Tag names, quoted once.
_KEYS: Final = {
    k: _q(k)
    for k in (
        tw.TAG_COMPONENT, tw.TAG_NODE, tw.TAG_METHOD, tw.TAG_URL, tw.TAG_PROTOCOL, tw.TAG_FLAGS,
        tw.TAG_STATUS, tw.TAG_REQUEST_ID, tw.TAG_ROUTE, tw.TAG_CLUSTER, tw.TAG_UPSTREAM,
        tw.TAG_PEER, tw.TAG_ATTEMPT, tw.TAG_ERROR,
    )
}  # fmt: skip


def _endpoint(e: tw.Endpoint) -> str:
    if "port" in e:
        return f'{{"serviceName":{_q(e["serviceName"])},"ipv4":{_q(e["ipv4"])},"port":{e["port"]}}}'
    return f'{{"serviceName":{_q(e["serviceName"])}}}'


def zipkin_json(span: Span, local: str, service: str, node: str) -> str:
    """One Zipkin v2 span as JSON (`local`: the localEndpoint object, already JSON)."""
    parent = span[PARENT_ID]
    remote = remote_endpoint(span)
    return "".join(
        (
            '{"traceId":"',
            span[TRACE_ID],
            '","id":"',
            span[ID],
            f'","parentId":"{parent}",' if parent is not None else '",',
            '"name":',
            _q(span_name(span, service)),
            ',"kind":"',
            SERVER if span[KIND] == SERVER else CLIENT,
            f'","timestamp":{timestamp_us(span)},"duration":{duration_us(span)},"localEndpoint":',
            local,
            "" if remote is None else f',"remoteEndpoint":{_endpoint(remote)}',
            ',"tags":{',
            ",".join([f"{_KEYS[k]}:{_q(v)}" for k, v in tags(span, node)]),
            "}}",
        )
    )


def zipkin_body(spans: list[Span], local: tw.Endpoint, node: str) -> bytes:
    """POST /api/v2/spans: a JSON list of Zipkin v2 spans."""
    local_json, service = _endpoint(local), local["serviceName"]
    return f"[{','.join([zipkin_json(s, local_json, service, node) for s in spans])}]".encode()


_OTLP_KIND: Final = {SERVER: 2, CLIENT: 3}
_OTLP_ERROR: Final = 2


def otlp_json(span: Span, service: str, node: str) -> str:
    """One span in OTLP/JSON: hex ids (W3C's 32-digit trace ids), times in ns as strings (the
    protobuf JSON mapping of 64-bit integers), kind and status as enum numbers (OTLP/JSON
    requires enum values as integers: 2 SPAN_KIND_SERVER, 3 SPAN_KIND_CLIENT), tags as string
    attributes."""
    start = timestamp_us(span) * 1000
    parent = span[PARENT_ID]
    attributes = ",".join(
        [f'{{"key":{_KEYS[k]},"value":{{"stringValue":{_q(v)}}}}}' for k, v in tags(span, node)]
    )
    return "".join(
        (
            '{"traceId":"',
            span[TRACE_ID].rjust(32, "0"),
            '","spanId":"',
            span[ID],
            f'","parentSpanId":"{parent}",' if parent is not None else '",',
            '"name":',
            _q(span_name(span, service)),
            f',"kind":{_OTLP_KIND[span[KIND]]},"startTimeUnixNano":"{start}",',
            f'"endTimeUnixNano":"{start + duration_us(span) * 1000}","attributes":[',
            attributes,
            '],"status":',
            f'{{"code":{_OTLP_ERROR}}}' if is_error(span) else "{}",
            "}",
        )
    )


def otlp_body(spans: list[Span], local: tw.Endpoint, node: str) -> bytes:
    """POST /v1/traces: an ExportTraceServiceRequest in OTLP/JSON."""
    service = _q(local["serviceName"])
    return "".join(
        (
            '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":',
            f'{{"stringValue":{service}}}}}]}},"scopeSpans":[{{"scope":{{"name":"meshdev"}},',
            '"spans":[',
            ",".join([otlp_json(s, local["serviceName"], node) for s in spans]),
            "]}]}]}",
        )
    ).encode()


class Exporter:
    """One collector: a bounded queue of spans and the reports that carry them."""

    def __init__(self, fmt: Format, url: str, store: Store, identity: Identity) -> None:
        self.format = fmt
        self.url = url
        self._identity = identity
        host, port, self._target = collector_address(url)
        self._pool = UpstreamPool(host, port, ConnectionBudget(1, 1))
        self._queue: deque[Span] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self._closed = False
        p = "tracing.zipkin." if fmt == "zipkin" else "tracing.opentelemetry."
        self.spans_sent: Counter = store.counter(p + "spans_sent")
        self.timer_flushed: Counter = store.counter(p + "timer_flushed")
        self.spans_dropped: Counter = store.counter(p + "spans_dropped")
        if fmt == "zipkin":
            self._posted = None
            self._ok = store.counter(p + "reports_sent")
            self._refused = store.counter(p + "reports_dropped")
            self._failed = store.counter(p + "reports_failed")
        else:
            self._posted = store.counter(p + "http_reports_sent")
            self._ok = store.counter(p + "http_reports_success")
            self._refused = self._failed = store.counter(p + "http_reports_failed")
        # Spans this exporter lost, for GET /spans' `dropped` (the counter is shared by
        # exporters of one format over swaps; this is this one's own).
        self.dropped = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, span: Span) -> None:
        """Queue a finished span (on the event loop; never waits)."""
        queue = self._queue
        if len(queue) >= MAX_QUEUE or self._closed:
            self._drop(1)
            return
        queue.append(span)
        if self._sending is not None:
            return  # the report in flight sends the rest when it ends
        if len(queue) >= BATCH:
            self._flush(by_timer=False)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._flush)

    def _drop(self, n: int) -> None:
        self.spans_dropped.value += n
        self.dropped += n

    def _flush(self, by_timer: bool = True) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None or not self._queue:
            return
        if by_timer:
            self.timer_flushed.value += 1
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
        self._sending = asyncio.get_running_loop().create_task(
            self._send(batch), name=f"meshdev-{self.format}-report"
        )

    async def _send(self, batch: list[Span]) -> None:
        try:
            await self._report(batch)
        finally:
            self._sending = None
            if self._queue and not self._closed:
                if len(self._queue) >= BATCH:
                    self._flush(by_timer=False)
                elif self._timer is None:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(FLUSH_INTERVAL, self._flush)

    async def _report(self, batch: list[Span]) -> None:
        local, node = self._identity()
        encode = zipkin_body if self.format == "zipkin" else otlp_body
        body = encode(batch, local, node)
        self.spans_sent.value += len(batch)
        if self._posted is not None:
            self._posted.value += 1
        headers = [("content-type", "application/json")]
        try:
            async with asyncio.timeout(REPORT_TIMEOUT):
                resp = await self._pool.request(
                    "POST", self._target, headers, body, connect_timeout=CONNECT_TIMEOUT
                )
                with contextlib.suppress(ResponseTooLarge):
                    await resp.read_all(ANSWER_LIMIT)
        except (ConnectFailure, UpstreamReset, PendingOverflow, TimeoutError, OSError) as exc:
            self._failed.value += 1
            self._drop(len(batch))
            log.debug("%s report to %s failed: %s", self.format, self.url, exc)
            return
        if 200 <= resp.status < 300:
            self._ok.value += 1
        else:
            self._refused.value += 1
            self._drop(len(batch))
            log.debug("%s collector %s answered %s", self.format, self.url, resp.status)

    async def aclose(self, grace: float = 1.0) -> None:
        """Send what is queued (one last batch, within `grace`), then stop."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                if self._sending is not None:
                    await asyncio.shield(self._sending)
                if self._queue:
                    self._flush(by_timer=False)
                    if self._sending is not None:
                        await asyncio.shield(self._sending)
        self._closed = True
        sending = self._sending
        if sending is not None:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
        self._drop(len(self._queue))
        self._queue.clear()
        await self._pool.close()
