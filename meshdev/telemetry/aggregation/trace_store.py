"""The recent traces, kept in bounded memory, and the orders they are listed in.

    store = TraceStore(max_traces=500)
    store.add(spans)                       # from any sidecar, any number of times
    store.select("slowest", limit=20)      # assembled traces, slowest first
    store.get(trace_id)
    store.spans_since(version, limit=N)    # the traces that changed since: what a relay serves

Readers re-read: a dashboard that reconnects, a sidecar that restarted its numbering, the CLI
asking from the start. Spans are deduplicated by (trace id, span id, kind), so a span read
twice counts once. Memory is bounded three ways: at most `max_traces` traces (the newest by
start are kept; a span of a trace older than every kept one is dropped when the store is
full, so an old straggler cannot push out a new trace), at most `max_spans_per_trace` spans in
one trace (the rest counted as truncated), and at most `max_spans` in all. A trace is
assembled again only when a span of it arrived since it was last asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from meshdev.telemetry.aggregation.traces import Span, Trace, assemble

Order = Literal["newest", "slowest", "failed"]
ORDERS: tuple[Order, ...] = ("newest", "slowest", "failed")
MAX_TRACES = 500
MAX_SPANS_PER_TRACE = 2000
MAX_SPANS = 50_000


@dataclass
class _Entry:
    spans: dict[tuple[str, str], Span] = field(default_factory=dict)
    start_us: int | None = None
    truncated: int = 0
    assembled: Trace | None = None
    touched: int = 0  # the store's version when a span of it was last kept


class TraceStore:
    def __init__(
        self,
        *,
        max_traces: int = MAX_TRACES,
        max_spans_per_trace: int = MAX_SPANS_PER_TRACE,
        max_spans: int = MAX_SPANS,
    ) -> None:
        if max_traces < 1 or max_spans_per_trace < 1 or max_spans < 1:
            raise ValueError("the store's limits must be at least 1")
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self.max_spans = max_spans
        self._entries: dict[str, _Entry] = {}
        self._span_count = 0
        self.duplicates = 0  # spans read again, for diagnostics and tests
        self.evicted = 0  # traces pushed out by newer ones
        self.version = 0  # goes up whenever a new span is kept

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def span_count(self) -> int:
        return self._span_count

    def add(self, spans: Iterable[Span]) -> int:
        """Keep these spans; returns how many were new."""
        added = 0
        touched: list[_Entry] = []
        # Once per call, not per span: a full store meets a new trace at every span.
        floor = self._oldest_start()
        for span in spans:
            entry = self._entries.get(span.trace_id)
            if entry is None:
                if (
                    len(self._entries) >= self.max_traces
                    and floor is not None
                    and span.start_us is not None
                    and span.start_us < floor
                ):
                    continue
                entry = self._entries[span.trace_id] = _Entry()
            key = (span.span_id, span.kind)
            if key in entry.spans:
                self.duplicates += 1
                continue
            if len(entry.spans) >= self.max_spans_per_trace:
                entry.truncated += 1
                entry.assembled = None
                continue
            entry.spans[key] = span
            entry.assembled = None
            touched.append(entry)
            if span.start_us is not None and (
                entry.start_us is None or span.start_us < entry.start_us
            ):
                entry.start_us = span.start_us
            self._span_count += 1
            added += 1
        if added:
            self.version += 1
            for entry in touched:
                entry.touched = self.version
            self._evict()
        return added

    def spans_since(self, version: int, limit: int | None = None) -> tuple[int, list[Span]]:
        """Every span of the traces that got a span after the store's `version` (whole
        traces: a reader that keeps its own store deduplicates what it had), in the order
        they changed, and the version they bring a reader to. With `limit`, the traces of
        the oldest changes until `limit` spans are reached, never part of one change (the
        traces one `add` touched go together, or a reader asking on from the version
        returned would miss the rest): what a relay answers, page by page."""
        changed = sorted(
            (e for e in self._entries.values() if e.touched > version), key=lambda e: e.touched
        )
        out: list[Span] = []
        reached = version
        for i, entry in enumerate(changed):
            if limit is not None and len(out) >= limit and entry.touched != changed[i - 1].touched:
                return reached, out
            out.extend(entry.spans.values())
            reached = entry.touched
        return self.version, out

    def _oldest_start(self) -> int | None:
        """The start of the oldest trace kept, when every kept trace has one (a trace whose
        spans have no time could be of any age)."""
        if len(self._entries) < self.max_traces:
            return None
        starts = [e.start_us for e in self._entries.values()]
        if any(s is None for s in starts):
            return None
        return min(s for s in starts if s is not None)

    def _evict(self) -> None:
        over_traces = len(self._entries) - self.max_traces
        if over_traces <= 0 and self._span_count <= self.max_spans:
            return
        # Oldest first; a trace with no timed span yet is the least useful to keep.
        by_age = sorted(
            self._entries, key=lambda t: (self._entries[t].start_us or 0, t), reverse=True
        )
        while by_age and (
            len(self._entries) > self.max_traces or self._span_count > self.max_spans
        ):
            gone = self._entries.pop(by_age.pop())
            self._span_count -= len(gone.spans)
            self.evicted += 1

    def get(self, trace_id: str) -> Trace | None:
        entry = self._entries.get(trace_id)
        if entry is None:
            return None
        if entry.assembled is None:
            entry.assembled = assemble(trace_id, list(entry.spans.values()), entry.truncated)
        return entry.assembled

    def traces(self) -> list[Trace]:
        out: list[Trace] = []
        for trace_id in self._entries:
            trace = self.get(trace_id)
            if trace is not None:
                out.append(trace)
        return out

    def select(
        self, order: Order = "newest", *, limit: int | None = None, failed_only: bool = False
    ) -> list[Trace]:
        return select(self.traces(), order, limit=limit, failed_only=failed_only)


def select(
    traces: Sequence[Trace],
    order: Order = "newest",
    *,
    limit: int | None = None,
    failed_only: bool = False,
) -> list[Trace]:
    """`newest` by start, `slowest` by total duration, `failed`: only failed ones, newest
    first. Ties go to the newer trace, then the trace id, so a listing is stable."""
    chosen = [t for t in traces if t.failed] if failed_only or order == "failed" else list(traces)
    if order == "slowest":
        chosen.sort(key=lambda t: (t.duration_us, t.start_us, t.trace_id), reverse=True)
    else:
        chosen.sort(key=lambda t: (t.start_us, t.trace_id), reverse=True)
    return chosen if limit is None else chosen[: max(0, limit)]


def example_trace(
    traces: Sequence[Trace],
    *,
    route: str | None = None,
    service: str | None = None,
    cluster: str | None = None,
    failed: bool = True,
) -> Trace | None:
    """The newest trace with a span on this route (of the destination `service`: the route's
    vhost) or to this cluster, failed there when `failed`: what Enter on a failing route or
    a breaker's event opens. A route's name alone may match another service's route of the
    same name, so the span's cluster must belong to `service` when one is given."""
    for trace in select(traces, "newest"):
        for span in trace.spans():
            if failed and not span.failed:
                continue
            if route is not None and not _route_matches(span, route, service):
                continue
            if cluster is not None and not _cluster_matches(span.cluster, cluster):
                continue
            return trace
    return None


def _route_matches(span: Span, route: str, service: str | None) -> bool:
    name = span.route
    if service is not None and name == f"{service}/{route}":
        return True
    if name != route:
        return False
    if service is None or not span.cluster:
        return True
    return _cluster_matches(span.cluster, service)


def _cluster_matches(cluster: str, wanted: str) -> bool:
    """`backend` matches the clusters of backend's subsets too (`backend.v1`)."""
    return cluster == wanted or cluster.startswith(wanted + ".")
