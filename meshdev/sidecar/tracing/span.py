"""Spans: one request's trace as this hop builds it (`RequestTrace`) and the finished spans it
hands to the tracer (`Span`), which become Zipkin v2 JSON only when someone reads them.

The shape follows Envoy's Zipkin tracer as Istio runs it, with one CLIENT span per upstream
try as the issue asks (docs/tracing.md):
- an inbound listener makes one SERVER span per request; the app gets the SERVER span's id
  as its parent, so what the app calls next hangs under it;
- an outbound listener (the app calling out) makes one CLIENT span per try, each a child of
  the span the app's headers name (the SERVER span of the request it is serving), each try
  sent upstream with its own span id; a request answered before any try (no route, rate
  limited, a fault, an overflow) gets one CLIENT span;
- the ingress gateway makes a SERVER span for the request from outside and, under it, a
  CLIENT span per try.
A finished span is kept as a plain tuple (about 0.5 KB with its strings), not as the dict a
reader gets, so the ring and the export queues stay small and out of the cycle collector's way.
"""

from __future__ import annotations

import time
from typing import Final, Protocol

from meshdev.common import trace_wire as tw
from meshdev.sidecar.tracing.context import inject, without_propagation
from meshdev.sidecar.tracing.ids import SPAN_IDS, new_span_id

SERVER: Final = "SERVER"
CLIENT: Final = "CLIENT"


# Bound once: the request path calls them several times per sampled request.
_time_ns: Final = time.time_ns
_perf_ns: Final = time.perf_counter_ns


# A finished span: a plain tuple of strings, ints and None, in this order. The cycle collector
# stops tracking such a tuple at its first pass, so the ring's thousands of spans cost the full
# collections nothing (objects with slots would be traversed by each for as long as they live).
# NAME holds the route's virtual host, URL the authority, PROTOCOL the HTTP version and TARGET
# the request-target as it came (formatted into the span's name, http.url and http.protocol
# only when the span is read: `span_name`, `tags`). TIMESTAMP (since the epoch) and DURATION
# are in ns as the clocks gave them, in µs only when read (`timestamp_us`, `duration_us`):
# Python's int division is ~450 instructions, twice per span, and a span is written on every
# sampled request but read by few.
Span = tuple[
    str, str, str | None, str, str, int, int, str, str, str, str, str, str, int, str, str, int,
    str, str,
]  # fmt: skip
TRACE_ID: Final = 0
ID: Final = 1
PARENT_ID: Final = 2
KIND: Final = 3
NAME: Final = 4
TIMESTAMP: Final = 5
DURATION: Final = 6
METHOD: Final = 7
URL: Final = 8
PROTOCOL: Final = 9
PEER: Final = 10
ROUTE: Final = 11
CLUSTER: Final = 12
STATUS: Final = 13
FLAGS: Final = 14
UPSTREAM: Final = 15
ATTEMPT: Final = 16
REQUEST_ID: Final = 17
TARGET: Final = 18


def finished(
    trace: RequestTrace,
    span_id: str,
    parent_id: str | None,
    kind: str,
    timestamp: int,
    duration: int,
    status: int,
    flags: str,
    upstream: str,
    attempt: int,
    request_id: str,
) -> Span:
    """A span of `trace` that has ended (`timestamp` since the epoch and `duration` in µs)."""
    return _ended(
        trace,
        span_id,
        parent_id,
        kind,
        timestamp * 1000,
        duration * 1000,
        status,
        flags,
        upstream,
        attempt,
        request_id,
    )


def _ended(
    trace: RequestTrace,
    span_id: str,
    parent_id: str | None,
    kind: str,
    timestamp_ns: int,
    duration_ns: int,
    status: int,
    flags: str,
    upstream: str,
    attempt: int,
    request_id: str,
) -> Span:
    return (
        trace.trace_id,
        span_id,
        parent_id,
        kind,
        trace.vhost,
        timestamp_ns,
        duration_ns,
        trace.method,
        trace.authority,
        trace.version,
        trace.peer if kind == SERVER else "",
        trace.route,
        trace.cluster,
        status,
        flags,
        upstream,
        attempt,
        request_id,
        trace.target,
    )


def timestamp_us(span: Span) -> int:
    """When the span began, in µs since the epoch."""
    return span[TIMESTAMP] // 1000


def duration_us(span: Span) -> int:
    """How long the span took in µs, at least 1 as Zipkin wants."""
    duration = span[DURATION] // 1000
    return duration if duration > 0 else 1


def _origin_form(target: str) -> str:
    """The request-target as path and query: an absolute-form one (`http://backend/items`, an
    app behind HTTP_PROXY) loses its scheme and authority."""
    if target[:1] == "/" or "://" not in target:
        return target
    rest = target.partition("://")[2]
    slash = rest.find("/")
    return "/" if slash < 0 else rest[slash:]


def span_name(span: Span, service: str) -> str:
    """`<destination>/<route>` (`backend/items`), an inbound hop's `<service>/inbound`, or
    `no_route`: few names, as Istio's route decorators give, so collectors index them well."""
    route = span[ROUTE]
    if not route:
        return "no_route"
    vhost = span[NAME]
    return f"{service}/inbound" if vhost == "inbound" else f"{vhost}/{route}"


def is_error(span: Span) -> bool:
    """Envoy's `error` tag: a 5xx, no answer at all, or a response flag."""
    status = span[STATUS]
    return status >= 500 or status == 0 or bool(span[FLAGS])


def tags(span: Span, node: str) -> list[tuple[str, str]]:
    """The span's tags (common/trace_wire.py's names), those left empty left out."""
    (_, _, _, _, _, _, _, method, authority, version, peer, route, cluster, status, flags,
     upstream, attempt, request_id, target) = span  # fmt: skip
    target = _origin_form(target)
    url = f"http://{authority}{target}" if authority else target
    protocol = "HTTP/2" if version == "2" else f"HTTP/{version}"
    out = [
        (tw.TAG_COMPONENT, "proxy"),
        (tw.TAG_NODE, node),
        (tw.TAG_METHOD, method),
        (tw.TAG_URL, url),
        (tw.TAG_PROTOCOL, protocol),
        (tw.TAG_FLAGS, flags or "-"),
    ]
    if status:
        out.append((tw.TAG_STATUS, str(status)))
    if request_id:
        out.append((tw.TAG_REQUEST_ID, request_id))
    if route:
        out.append((tw.TAG_ROUTE, route))
    if cluster:
        out.append((tw.TAG_CLUSTER, cluster))
    if upstream:
        out.append((tw.TAG_UPSTREAM, upstream))
    if peer:
        out.append((tw.TAG_PEER, peer))
    if attempt:
        out.append((tw.TAG_ATTEMPT, str(attempt)))
    if is_error(span):
        out.append((tw.TAG_ERROR, "true"))
    return out


def remote_endpoint(span: Span) -> tw.Endpoint | None:
    """A CLIENT span's upstream: the cluster's service, and the host's address and port."""
    cluster = span[CLUSTER]
    if span[KIND] != CLIENT or not cluster:
        return None
    remote: tw.Endpoint = {"serviceName": cluster.partition(".")[0]}
    host, _, port = span[UPSTREAM].rpartition(":")
    if host and port.isdigit():
        remote["ipv4"] = host
        remote["port"] = int(port)
    return remote


def zipkin(span: Span, local: tw.Endpoint, node: str) -> tw.ZipkinSpan:
    """The span as Zipkin v2 JSON (common/trace_wire.py)."""
    out: tw.ZipkinSpan = {
        "traceId": span[TRACE_ID],
        "id": span[ID],
        "name": span_name(span, local["serviceName"]),
        "kind": SERVER if span[KIND] == SERVER else CLIENT,
        "timestamp": timestamp_us(span),
        "duration": duration_us(span),
        "localEndpoint": local,
        "tags": dict(tags(span, node)),
    }
    parent_id = span[PARENT_ID]
    if parent_id is not None:
        out["parentId"] = parent_id
    remote = remote_endpoint(span)
    if remote is not None:
        out["remoteEndpoint"] = remote
    return out


class SpanSink(Protocol):
    """Where finished spans go (the tracer: its ring and exporters)."""

    def record(self, span: Span) -> None: ...


class RequestTrace:
    """One sampled request's spans as this hop makes them (see the module doc).

    The proxy calls, in order: `upstream_headers` (inbound) or `begin_try` / `end_try` per try
    (outbound, ingress), then `finish` once the request has ended, which closes whatever is
    still open with the request's outcome (a route timeout, a client that left)."""

    __slots__ = (
        "_base",
        "_first",
        "_ns",
        "_try_id",
        "_try_ns",
        "_wall",
        "authority",
        "b3_multi",
        "cluster",
        "method",
        "parent_id",
        "peer",
        "per_try",
        "route",
        "server_id",
        "sink",
        "strip",
        "target",
        "trace_id",
        "tries",
        "version",
        "vhost",
    )
    # Set by the first begin_try (see __init__).
    _base: int
    _try_ns: int

    def __init__(
        self,
        sink: SpanSink,
        trace_id: str,
        parent_id: str | None,
        listener_kind: str,
        method: str,
        authority: str,
        target: str,
        version: str,
        peer: str,
        b3_multi: bool = False,
        strip: bool = True,
        root: str | None = None,
    ) -> None:
        self.sink = sink
        # Whether the request came with propagation headers to replace (a first hop's has
        # none, and keeps its headers as they are).
        self.strip = strip
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.b3_multi = b3_multi
        # The request's facts, formatted only when a span is read (span_name, tags).
        self.method = method
        self.authority = authority
        self.target = target
        self.version = version
        self.peer = peer
        # An outbound listener makes CLIENT spans only; the others a SERVER span first. The
        # hop's first span takes `root` as its id when given: that span is the trace's root.
        if listener_kind == "outbound":
            self.server_id = None
            self._first = root
        else:
            self.server_id = root or new_span_id()
            self._first = None
        self.per_try = listener_kind != "inbound"
        self.vhost = ""
        self.route = ""
        self.cluster = ""
        self.tries = 0
        # The request's start by the wall clock (its span's timestamp) and the monotonic one
        # (the durations, and its tries' timestamps: the one time_ns a request).
        self._wall = _time_ns()
        self._ns = _perf_ns()
        # The open try's span id. Its start (_try_ns) and where the tries' propagation headers
        # begin in the upstream headers (_base) are left unset until the first try: most
        # requests have one, and every read of them follows it.
        self._try_id: str | None = None

    def routed(self, vhost: str, route: str) -> None:
        """The route taken, which names the spans (span_name)."""
        self.vhost = vhost
        self.route = route

    def upstream_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers of an inbound request to the app, the SERVER span as their parent:
        `headers` (the list made for this request's upstream) changed in place."""
        if self.strip:
            headers[:] = without_propagation(headers)
        assert self.server_id is not None
        inject(headers, self.trace_id, self.server_id, self.parent_id, b3_multi=self.b3_multi)
        return headers

    def begin_try(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Open the CLIENT span of the next try: `headers` (the list made for this request's
        upstream) get its propagation headers in place, replacing the previous try's."""
        if self.tries:
            del headers[self._base :]
            # new_span_id(), inline: this runs once per try of every sampled request.
            span_id = SPAN_IDS.pop() if SPAN_IDS else new_span_id()
        else:
            if self.strip:
                headers[:] = without_propagation(headers)
            self._base = len(headers)
            span_id = self._first or (SPAN_IDS.pop() if SPAN_IDS else new_span_id())
        self.tries += 1
        self._try_id = span_id
        # One clock read: the try's wall-clock start is derived from it in end_try.
        self._try_ns = _perf_ns()
        parent = self.server_id if self.server_id is not None else self.parent_id
        trace_id = self.trace_id
        if self.b3_multi:
            inject(headers, trace_id, span_id, parent, b3_multi=True)
        else:
            # inject(), inline for the usual case: this runs once per try. A 128-bit trace id
            # needs no padding, and a pad in the f-string costs more than the length test.
            w3c = trace_id if len(trace_id) == 32 else f"{trace_id:0>32}"
            headers.append(("traceparent", f"00-{w3c}-{span_id}-01"))
            if parent is None:
                headers.append(("b3", f"{trace_id}-{span_id}-1"))
            else:
                headers.append(("b3", f"{trace_id}-{span_id}-1-{parent}"))
        return headers

    def end_try(self, status: int, flag: str, upstream: str, request_id: str) -> None:
        """Close the open try's span (`status` 0: no answer; `flag`: what ended it)."""
        span_id = self._try_id
        if span_id is None:
            return
        self._try_id = None
        began = self._try_ns
        duration = _perf_ns() - began
        # _ended(), inline: this runs once per try of every sampled request.
        self.sink.record(
            (
                self.trace_id,
                span_id,
                self.server_id if self.server_id is not None else self.parent_id,
                CLIENT,
                self.vhost,
                # A try never starts before its request, whatever the wall clock did since.
                self._wall + (began - self._ns),
                duration,
                self.method,
                self.authority,
                self.version,
                "",
                self.route,
                self.cluster,
                status,
                flag,
                upstream,
                self.tries,
                request_id,
                self.target,
            )
        )

    def finish(self, status: int, flags: str, upstream: str, request_id: str) -> None:
        """The request has ended (the access log record's facts): close a try still open,
        and this hop's own span."""
        if self._try_id is not None:
            self.end_try(status, flags, upstream, request_id)
        if self.server_id is None and self.tries:
            return
        duration = _perf_ns() - self._ns
        if self.server_id is None:
            # An outbound request answered before any try: one CLIENT span says why.
            span_id, kind = self._first or new_span_id(), CLIENT
        else:
            span_id, kind = self.server_id, SERVER
        self.sink.record(
            _ended(
                self,
                span_id,
                self.parent_id,
                kind,
                self._wall,
                duration,
                status,
                flags,
                "" if self.per_try else upstream,
                0,
                request_id,
            )
        )
