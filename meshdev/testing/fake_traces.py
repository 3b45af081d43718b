"""An in-memory trace feed for tests of the dashboard (the `TraceFeed` of tui/logic/ports.py;
production's is telemetry/io/spans.py's `SpanReader`).

    feed = FakeTraceFeed()
    app = MeshdevApp(source, controller, traces=feed)
    feed.push(request_spans(1))         # into the store; the app is told, as after a poll

`fail_first` runs fail at once, as a feed whose reader broke, to test the app's retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from meshdev.common.trace_wire import ZipkinSpan
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.aggregation.traces import parse_spans
from meshdev.telemetry.io.source import ProxyTarget


class FakeTraceFeed:
    def __init__(self, *, fail_first: int = 0) -> None:
        self.store = TraceStore()
        self.runs = 0
        self.fail_first = fail_first
        self.counts = {"ok": 0, "missing": 0, "error": 0}  # what outcomes() says
        self._targets: Callable[[], Sequence[ProxyTarget]] | None = None
        self._on_new: Callable[[], None] | None = None

    @property
    def running(self) -> bool:
        return self._on_new is not None

    def outcomes(self) -> dict[str, int]:
        return dict(self.counts)

    def targets(self) -> list[ProxyTarget]:
        """What the app would have the feed read now."""
        return list(self._targets()) if self._targets is not None else []

    async def run(
        self, targets: Callable[[], Sequence[ProxyTarget]], on_new: Callable[[], None]
    ) -> None:
        self.runs += 1
        if self.runs <= self.fail_first:
            raise ConnectionError(f"spans reader broke (run {self.runs})")
        self._targets, self._on_new = targets, on_new
        try:
            await asyncio.Event().wait()
        finally:
            self._on_new = None

    def push(self, spans: Iterable[ZipkinSpan], node: str = "") -> int:
        """Keep these spans as if a poll had read them; returns how many were new."""
        added = self.store.add(parse_spans(spans, node)[0])
        if added and self._on_new is not None:
            self._on_new()
        return added
