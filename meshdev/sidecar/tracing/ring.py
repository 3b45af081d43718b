"""The ring of recent finished spans that GET /spans reads (common/trace_wire.py).

Spans are numbered from 0 in the order they finished; the ring keeps the last `size` of them
and forgets older ones. A reader asks for the spans from number `since` and gets what is left
of them, numbered from `first`, and `next` to ask for next time.

Small on purpose: keeping a span costs the request that made it, and more the bigger the ring
(a span is a tuple of about 0.5 KB with its strings; each new one replaces one that left the
CPU's caches long ago). A ring of 2048 was about a fifth of tracing's cost, one of 256 met the
budget (benchmarks/README.md K). 256 is a poll's worth: the session reads every ring each
second, a busy one every 0.2 s (telemetry/io/spans.py), and keeps the history itself
(observability/trace_history.py).
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Final

from meshdev.sidecar.tracing.span import Span

RING_SIZE: Final = 256
# One answer carries at most this many spans (a reader catches up in a few calls), so an
# answer stays well under a megabyte of JSON.
MAX_ANSWER: Final = 1000


class SpanRing:
    __slots__ = ("_spans", "next")

    def __init__(self, size: int = RING_SIZE) -> None:
        self._spans: deque[Span] = deque(maxlen=size)
        # The number the next finished span gets.
        self.next = 0

    def append(self, span: Span) -> None:
        self._spans.append(span)
        self.next += 1

    @property
    def first(self) -> int:
        """The number of the oldest span still kept."""
        return self.next - len(self._spans)

    def since(self, since: int, limit: int = MAX_ANSWER) -> tuple[int, list[Span]]:
        """The kept spans numbered `since` and up (at most `limit`), with the first's number."""
        first = max(since, self.first)
        if first >= self.next:
            return self.next, []
        spans = self._spans
        start = first - self.first
        end = min(len(spans), start + limit)
        return first, list(islice(spans, start, end))
