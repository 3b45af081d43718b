"""A source of scripted views, for tests of the dashboard (same surface as TelemetrySource).

    source = FakeSource([view1, view2], interval=0.05)   # emitted in order, one per interval
    source.push(view3)                                    # emitted after what is queued
    source.push_snapshots({"frontend-0": doc})            # /stats/stream documents, aggregated
                                                          # by the real Aggregator

Unlike the real source it never drops a view: a test that pushes three sees three.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Mapping

from meshdev.telemetry.aggregation.certs import CertInfo
from meshdev.telemetry.aggregation.mesh import Aggregator, SidecarInput
from meshdev.telemetry.aggregation.topology import Topology
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.source import OnView, ProxyTarget
from meshdev.telemetry.io.stream_reader import StreamReader


class FakeSource:
    def __init__(self, views: Iterable[MeshView] = (), *, interval: float = 0.25) -> None:
        self._queue: deque[MeshView] = deque(views)
        self._interval = interval
        self._wake: asyncio.Event | None = None
        self._aggregator = Aggregator()
        self._readers: dict[str, StreamReader] = {}
        self.targets: list[ProxyTarget] = []
        self.target_updates: list[list[ProxyTarget]] = []
        self.interval_updates: list[float] = []
        self.emitted: list[MeshView] = []

    @property
    def interval(self) -> float:
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._interval = seconds
        self.interval_updates.append(seconds)

    def set_targets(self, targets: Iterable[ProxyTarget]) -> None:
        self.targets = list(targets)
        self.target_updates.append(self.targets)

    def push(self, view: MeshView) -> None:
        self._queue.append(view)
        if self._wake is not None:
            self._wake.set()

    def push_snapshots(
        self,
        docs: Mapping[str, Mapping[str, object]],
        *,
        at: float | None = None,
        stale: Iterable[str] = (),
        disconnected: Iterable[str] = (),
        topologies: Mapping[str, Topology] | None = None,
        certs: Mapping[str, CertInfo] | None = None,
    ) -> MeshView:
        """Aggregate one /stats/stream document per node (as a sidecar sends them), push the
        view and return it. Nodes in `stale` / `disconnected` are reported so; `certs` are
        the nodes' certificates, as their GET /certs said."""
        stale, disconnected = set(stale), set(disconnected)
        now = time.monotonic()
        inputs = []
        for node, doc in docs.items():
            reader = self._readers.setdefault(node, StreamReader())
            inputs.append(
                SidecarInput(
                    node=node,
                    admin_url=f"fake://{node}",
                    latest=reader.parse(dict(doc), now),
                    topology=(topologies or {}).get(node),
                    connected=node not in disconnected,
                    stale=node in stale,
                    cert=(certs or {}).get(node),
                )
            )
        view = self._aggregator.build(inputs, time.time() if at is None else at)
        self.push(view)
        return view

    async def run(self, on_view: OnView) -> None:
        self._wake = asyncio.Event()
        try:
            while True:
                while self._queue:
                    view = self._queue.popleft()
                    self.emitted.append(view)
                    on_view(view)
                    await asyncio.sleep(self._interval)
                self._wake.clear()
                await self._wake.wait()
        finally:
            self._wake = None
