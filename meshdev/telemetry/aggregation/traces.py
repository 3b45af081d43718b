"""Spans of many sidecars -> traces: a tree per trace id, its figures, and a waterfall.

Sidecars answer GET /spans with Zipkin v2 spans (meshdev/common/trace_wire.py). Each sidecar
only knows its own hops, so a trace exists nowhere until the spans of every sidecar it crossed
are joined by trace id. `parse_span` checks one span off the wire (a span without a trace id
or an id is dropped; other missing fields get neutral values), `assemble` builds one trace:

- the tree by `parentId`; a SERVER span that shares its id with the CLIENT span that called it
  (Zipkin's B3 `shared` spans, as Envoy makes by default) is that CLIENT span's child, and a
  span whose parent id names such a pair hangs under its SERVER side, where the work was;
- spans whose parent never arrived (an older sidecar, a ring that wrapped, a sampled-out hop)
  are kept at the root as orphans, and so is a span whose parents form a cycle (bad ids from
  a buggy client): every span is shown exactly once, whatever the ids say;
- children in start order; the trace's start, total duration, service crossings (hops), the
  services in the order the request reached them, whether anything failed, and the span with
  the most time of its own (its duration minus its children's), which is where a slow trace
  spent it.

Pure: no I/O, so adversarial inputs are tested on plain data (tests/telemetry/aggregation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshdev.common import trace_wire as tw

# Response flags that mean a request failed; DI (a delay injected on purpose) alone does not.
_NOT_FAILURES = frozenset({"", "-", "DI"})
# Order of the kinds among spans sharing an id: the SERVER side is where a child's work was.
_PARENT_PREFERENCE = ("SERVER", "", "CLIENT")


@dataclass(frozen=True, slots=True)
class Span:
    """One Zipkin v2 span as checked off the wire; `node` is the sidecar that reported it."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str  # "SERVER", "CLIENT", or "" when the span did not say
    service: str
    start_us: int | None  # None when the span had no usable timestamp
    duration_us: int
    tags: Mapping[str, str] = field(default_factory=dict)
    node: str = ""
    shared: bool = False
    remote_service: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes a span unique: a shared CLIENT/SERVER pair has one id and two kinds."""
        return (self.trace_id, self.span_id, self.kind)

    @property
    def end_us(self) -> int | None:
        return None if self.start_us is None else self.start_us + self.duration_us

    @property
    def status(self) -> int | None:
        raw = self.tags.get(tw.TAG_STATUS, "")
        return int(raw) if raw.isdigit() else None

    @property
    def flags(self) -> tuple[str, ...]:
        """Envoy's response flags (`UO,URX`), without its `-` for none."""
        raw = self.tags.get(tw.TAG_FLAGS, "")
        return tuple(f for f in raw.replace(",", " ").split() if f != "-")

    @property
    def route(self) -> str:
        return self.tags.get(tw.TAG_ROUTE, "")

    @property
    def cluster(self) -> str:
        return self.tags.get(tw.TAG_CLUSTER, "")

    @property
    def failed(self) -> bool:
        status = self.status
        if status is not None and status >= 500:
            return True
        flags = self.flags
        if any(f not in _NOT_FAILURES for f in flags):
            return True
        # Zipkin marks a failed span by the presence of `error` (its value is a message). A
        # tracer that sets it for any response flag would make a request that was only
        # delayed on purpose (DI) and then answered fine a failure: it is not one.
        if tw.TAG_ERROR in self.tags and self.tags[tw.TAG_ERROR].lower() != "false":
            return not (flags and status is not None and status < 500)
        return False


def normalize_id(raw: object, lengths: tuple[int, ...]) -> str | None:
    """Lower-case hex of one of these lengths, else None. A 128-bit trace id whose high half
    is zero is the 64-bit one a B3 caller sent: both spellings join the same trace."""
    if not isinstance(raw, str):
        return None
    value = raw.strip().lower()
    if len(value) not in lengths or any(c not in "0123456789abcdef" for c in value):
        return None
    if len(value) == 32 and value.startswith("0" * 16):
        value = value[16:]
    return value


def _int(obj: object) -> int | None:
    if isinstance(obj, bool):
        return None
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float) and math.isfinite(obj) and abs(obj) < 2**62:
        return int(obj)
    return None


def _service(obj: object) -> str:
    if isinstance(obj, dict):
        name = obj.get("serviceName")
        if isinstance(name, str):
            return name
    return ""


def parse_span(obj: object, node: str = "") -> Span | None:
    """A span from a sidecar's answer, or None when it cannot be placed in any trace."""
    if not isinstance(obj, dict):
        return None
    trace_id = normalize_id(obj.get("traceId"), (16, 32))
    span_id = normalize_id(obj.get("id"), (16,))
    if trace_id is None or span_id is None:
        return None
    parent_id = normalize_id(obj.get("parentId"), (16,))
    kind = obj.get("kind")
    start = _int(obj.get("timestamp"))
    duration = _int(obj.get("duration"))
    raw_tags = obj.get("tags")
    tags: dict[str, str] = {}
    if isinstance(raw_tags, dict):
        tags = {str(k): v if isinstance(v, str) else str(v) for k, v in raw_tags.items()}
    name = obj.get("name")
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id if parent_id != span_id else None,
        name=name if isinstance(name, str) else "",
        kind=kind if kind in ("SERVER", "CLIENT") else "",
        service=_service(obj.get("localEndpoint")),
        start_us=start if start is not None and start > 0 else None,
        duration_us=max(0, duration) if duration is not None else 0,
        tags=tags,
        # A relay (the session's history) serves the spans of many sidecars: each names its
        # own in its node_id tag, as meshdev's sidecars and Envoy tag theirs.
        node=node or tags.get(tw.TAG_NODE, ""),
        shared=obj.get("shared") is True,
        remote_service=_service(obj.get("remoteEndpoint")),
    )


def span_wire(span: Span) -> dict[str, Any]:
    """The span as Zipkin v2 JSON again, for a relay: what `parse_span` reads back as the same
    span, its node in the node_id tag (set there when the span had none)."""
    tags = dict(span.tags)
    if span.node:
        tags.setdefault(tw.TAG_NODE, span.node)
    out: dict[str, Any] = {
        "traceId": span.trace_id,
        "id": span.span_id,
        "name": span.name,
        "localEndpoint": {"serviceName": span.service},
        "duration": span.duration_us,
        "tags": tags,
    }
    if span.parent_id is not None:
        out["parentId"] = span.parent_id
    if span.kind:
        out["kind"] = span.kind
    if span.start_us is not None:
        out["timestamp"] = span.start_us
    if span.shared:
        out["shared"] = True
    if span.remote_service:
        out["remoteEndpoint"] = {"serviceName": span.remote_service}
    return out


def parse_spans(objs: Iterable[Any], node: str = "") -> tuple[list[Span], int]:
    """The spans that could be parsed, and how many could not."""
    spans: list[Span] = []
    bad = 0
    for obj in objs:
        span = parse_span(obj, node)
        if span is None:
            bad += 1
        else:
            spans.append(span)
    return spans, bad


@dataclass(frozen=True, slots=True)
class TraceNode:
    """A span in its trace's tree. `orphan`: its parent never arrived (or the parent ids
    formed a cycle), so it hangs at the root."""

    span: Span
    depth: int
    children: tuple[TraceNode, ...]
    orphan: bool = False


@dataclass(frozen=True, slots=True)
class WaterfallRow:
    """One line of a waterfall: the span at its depth, where it starts relative to the trace
    and for how long (µs); `offset_us` + `width_us` never pass the trace's duration."""

    span: Span
    depth: int
    offset_us: int
    width_us: int
    orphan: bool = False
    self_us: int = 0


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    roots: tuple[TraceNode, ...]  # real roots first, then orphans, each in start order
    start_us: int
    duration_us: int
    span_count: int
    hops: int  # calls from one service to another (a retry is one more)
    services: tuple[str, ...]  # in the order the request reached them
    failed: bool
    slowest: Span | None  # the span with the most time of its own
    slowest_self_us: int
    orphans: int
    truncated: int = 0  # spans beyond the store's per-trace cap, not kept

    @property
    def root(self) -> Span | None:
        return self.roots[0].span if self.roots else None

    @property
    def status(self) -> int | None:
        """What the first caller got: the root's status (else the first span that has one)."""
        for span in self.spans():
            if span.status is not None:
                return span.status
        return None

    @property
    def flags(self) -> tuple[str, ...]:
        """Every response flag of any span, each once, in the order they appear."""
        seen: dict[str, None] = {}
        for span in self.spans():
            for f in span.flags:
                seen.setdefault(f, None)
        return tuple(seen)

    @property
    def route(self) -> str:
        """What the trace was for: the root's method and path, else its name."""
        root = self.root
        if root is None:
            return ""
        url = root.tags.get(tw.TAG_URL, "")
        path = _path_of(url) if url else ""
        method = root.tags.get(tw.TAG_METHOD, "")
        if path:
            return f"{method} {path}".strip()
        return root.name

    def spans(self) -> list[Span]:
        """Every span, depth first in display order."""
        return [row.span for row in self.rows()]

    def rows(self) -> list[WaterfallRow]:
        """The waterfall: every span once, depth first, children in start order."""
        out: list[WaterfallRow] = []
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            start = node.span.start_us if node.span.start_us is not None else self.start_us
            offset = min(max(0, start - self.start_us), self.duration_us)
            width = min(node.span.duration_us, self.duration_us - offset)
            out.append(
                WaterfallRow(node.span, node.depth, offset, width, node.orphan, _self_time(node))
            )
            stack.extend(reversed(node.children))
        return out


def _path_of(url: str) -> str:
    # Envoy's http.url is the full URL; the path is what a reader recognises.
    rest = url.split("://", 1)[1] if "://" in url else url
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def _self_time(node: TraceNode) -> int:
    """Its duration minus the time covered by its children (their union, clipped to it)."""
    span = node.span
    if span.start_us is None:
        return span.duration_us
    lo, hi = span.start_us, span.start_us + span.duration_us
    covered = 0
    cursor = lo
    intervals = sorted(
        (max(lo, c.span.start_us), min(hi, c.span.start_us + c.span.duration_us))
        for c in node.children
        if c.span.start_us is not None
    )
    for a, b in intervals:
        begin = max(a, cursor)
        if b > begin:
            covered += b - begin
            cursor = b
    return max(0, span.duration_us - covered)


def _order(span: Span) -> tuple[int, str, str]:
    start = span.start_us if span.start_us is not None else -1
    # A CLIENT span and the SERVER span it caused may start in the same µs: caller first.
    return (start, "0" if span.kind == "CLIENT" else "1", span.span_id)


def assemble(trace_id: str, spans: Sequence[Span], truncated: int = 0) -> Trace:
    """One trace from its spans (deduplicated by id and kind here too: the last one wins)."""
    unique: dict[tuple[str, str], Span] = {}
    for s in spans:
        unique[(s.span_id, s.kind)] = s
    by_id: dict[str, dict[str, Span]] = {}
    for (span_id, kind), s in unique.items():
        by_id.setdefault(span_id, {})[kind] = s

    def parent_of(s: Span) -> tuple[str, str] | None:
        if s.kind == "SERVER" and "CLIENT" in by_id.get(s.span_id, {}):
            # The SERVER half of a shared id: its caller is the CLIENT half.
            return (s.span_id, "CLIENT")
        if s.parent_id is None:
            return None
        kinds = by_id.get(s.parent_id)
        if not kinds:
            return None
        for kind in _PARENT_PREFERENCE:
            if kind in kinds and (s.parent_id, kind) != (s.span_id, s.kind):
                return (s.parent_id, kind)
        return None

    parents: dict[tuple[str, str], tuple[str, str] | None] = {
        key: parent_of(s) for key, s in unique.items()
    }
    _break_cycles(parents, unique)
    children: dict[tuple[str, str], list[tuple[str, str]]] = {}
    roots: list[tuple[str, str]] = []
    for key, parent in parents.items():
        if parent is None:
            roots.append(key)
        else:
            children.setdefault(parent, []).append(key)

    def is_orphan(key: tuple[str, str]) -> bool:
        # A root that names a parent: the parent is missing, or its ids made a cycle.
        s = unique[key]
        return s.parent_id is not None or (s.kind == "SERVER" and s.shared)

    roots.sort(key=lambda k: (is_orphan(k), _order(unique[k])))
    nodes = tuple(_build_iter(k, unique, children, is_orphan(k)) for k in roots)
    return _summarize(trace_id, nodes, len(unique), truncated)


def _build_iter(
    root: tuple[str, str],
    unique: Mapping[tuple[str, str], Span],
    children: Mapping[tuple[str, str], list[tuple[str, str]]],
    orphan: bool,
) -> TraceNode:
    """The subtree under `root`, without recursion (a chain of 10,000 spans must not hit
    Python's recursion limit)."""
    # Post-order: a node is built once all of its children are.
    order: list[tuple[tuple[str, str], int]] = []
    stack = [(root, 0)]
    while stack:
        key, depth = stack.pop()
        order.append((key, depth))
        for kid in children.get(key, ()):
            stack.append((kid, depth + 1))
    built: dict[tuple[str, str], TraceNode] = {}
    for key, depth in reversed(order):
        kids = sorted(children.get(key, ()), key=lambda k: _order(unique[k]))
        built[key] = TraceNode(
            unique[key], depth, tuple(built[k] for k in kids), orphan and key == root
        )
    return built[root]


def _break_cycles(
    parents: dict[tuple[str, str], tuple[str, str] | None],
    unique: Mapping[tuple[str, str], Span],
) -> None:
    """Cut every cycle of parent links at its earliest span, which becomes a root."""
    state: dict[tuple[str, str], int] = {}  # 1: on the current walk, 2: known to reach a root
    for start in parents:
        walk: list[tuple[str, str]] = []
        key: tuple[str, str] | None = start
        while key is not None and state.get(key, 0) == 0:
            state[key] = 1
            walk.append(key)
            key = parents[key]
        if key is not None and state.get(key) == 1:
            cycle = walk[walk.index(key) :]
            cut = min(cycle, key=lambda k: _order(unique[k]))
            parents[cut] = None
        for k in walk:
            state[k] = 2


def _summarize(trace_id: str, roots: tuple[TraceNode, ...], count: int, truncated: int) -> Trace:
    starts: list[int] = []
    ends: list[int] = []
    services: dict[str, None] = {}
    hops = 0
    failed = False
    slowest: Span | None = None
    slowest_self = -1
    orphans = 0
    # Preorder, so services come in the order the request reached them.
    stack: list[tuple[TraceNode, Span | None]] = [(r, None) for r in reversed(roots)]
    while stack:
        node, parent = stack.pop()
        s = node.span
        if node.orphan:
            orphans += 1
        if s.start_us is not None:
            starts.append(s.start_us)
            ends.append(s.start_us + s.duration_us)
        if s.service:
            services.setdefault(s.service, None)
        if parent is not None and parent.service != s.service:
            hops += 1
        failed = failed or s.failed
        own = _self_time(node)
        if own > slowest_self:
            slowest, slowest_self = s, own
        stack.extend((c, s) for c in reversed(node.children))
    start = min(starts) if starts else 0
    duration = max(ends) - start if ends else 0
    if not starts:
        # No span had a time: the longest one's duration is the best guess of the total.
        duration = max((r.span.duration_us for r in roots), default=0)
    return Trace(
        trace_id=trace_id,
        roots=roots,
        start_us=start,
        duration_us=duration,
        span_count=count,
        hops=hops,
        services=tuple(services),
        failed=failed,
        slowest=slowest,
        slowest_self_us=max(0, slowest_self),
        orphans=orphans,
        truncated=truncated,
    )
