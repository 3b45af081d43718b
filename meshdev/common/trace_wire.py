"""The contract for spans between a sidecar and whoever reads its recent traces.

A sidecar makes spans as Envoy's Zipkin tracer does (a SERVER span per inbound request, a CLIENT
span per upstream attempt) and keeps the most recent ones in a bounded ring. The ring is read on
the admin API with GET /spans?since=N: a JSON `SpansAnswer` whose `spans` are Zipkin v2 spans
(the same JSON a Zipkin collector receives: hex ids, µs timestamps and durations) numbered from
`first`; `next` is the number to ask for next time. Spans older than the ring are gone; a
reader that asks for them gets what is left (and sees the gap as `first` > its `since`).

meshdev's CLI (`meshdev traces`) and the dashboard gather the spans of every sidecar and join
them by trace id: no collector is needed to see a trace.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

SPANS_PATH = "/spans"
# What a relay of many sidecars' spans (the session's trace history, which answers GET /spans
# in the same shape, each span naming its sidecar in its node_id tag) is called by its readers.
RELAY_NODE = "meshdev up"

# Tag names: Envoy's where Envoy has one (so a trace reads the same in Jaeger as one from Istio).
TAG_METHOD = "http.method"
TAG_URL = "http.url"
TAG_PROTOCOL = "http.protocol"
TAG_STATUS = "http.status_code"
TAG_FLAGS = "response_flags"
TAG_CLUSTER = "upstream_cluster"
TAG_UPSTREAM = "upstream_address"
TAG_REQUEST_ID = "guid:x-request-id"
TAG_NODE = "node_id"
TAG_COMPONENT = "component"
TAG_ERROR = "error"
TAG_PEER = "peer.address"
# meshdev's own: the route that matched and which try of it a CLIENT span is (1 = the first).
TAG_ROUTE = "route_name"
TAG_ATTEMPT = "retry.attempt"

SpanKind = Literal["SERVER", "CLIENT"]


class Endpoint(TypedDict):
    serviceName: str
    ipv4: NotRequired[str]
    port: NotRequired[int]


class ZipkinSpan(TypedDict):
    traceId: str  # 32 hex digits (W3C and 128-bit B3), or 16 for a 64-bit B3 trace id
    id: str  # 16 hex digits
    parentId: NotRequired[str]
    name: str
    kind: SpanKind
    timestamp: int  # µs since the epoch
    duration: int  # µs, at least 1
    localEndpoint: Endpoint
    remoteEndpoint: NotRequired[Endpoint]
    tags: dict[str, str]
    shared: NotRequired[bool]


class SpansAnswer(TypedDict):
    node: str
    first: int  # the number of spans[0]
    next: int
    dropped: int  # spans the exporters could not send (queue full, collector down)
    spans: list[ZipkinSpan]
