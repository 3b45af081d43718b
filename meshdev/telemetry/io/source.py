"""The dashboard's data source: every sidecar watched, one `MeshView` per interval.

    source = TelemetrySource([("frontend-0", "http://127.0.1.2:15000"), ...], interval=0.25)
    await source.run(on_view)          # until cancelled; on_view(view) at most once an interval
    source.set_targets(new_pods)       # at a reload: watch the pods that exist now
    source.interval = 1.0              # streams reconnect at the new cadence

Coalescing: clients keep only the newest interval of each sidecar (folding any they got in
between), and the source builds a view from those when one is due. A view is due an interval
after the previous one as soon as any sidecar has news, and at the latest two intervals after
it, so a mesh that went silent still shows its sidecars going stale. `on_view` is called
synchronously; if it is slow, views are simply built less often, never queued.

`ViewSource` is that surface as the dashboard sees it; tests of the TUI hand it in-memory
sources that have it too (`FakeSource`, `SampleSource`), which production never imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import aiohttp

from meshdev.common.backoff import Backoff
from meshdev.common.waiting import wait_set
from meshdev.telemetry.aggregation.history import DEFAULT_LENGTH
from meshdev.telemetry.aggregation.mesh import Aggregator
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.client import RECONNECT_BASE, RECONNECT_CAP, SidecarClient

# A sidecar (or an Envoy) to watch: (node name, admin API base URL).
ProxyTarget = tuple[str, str]
OnView = Callable[[MeshView], None]
MIN_INTERVAL = 0.05
MAX_INTERVAL = 60.0
DEFAULT_INTERVAL = 0.25


class ViewSource(Protocol):
    """What the dashboard needs of a source of views: this module's `TelemetrySource`, or a
    test's in-memory one."""

    @property
    def interval(self) -> float:
        """Seconds between views (and per value of a view's histories)."""

    @interval.setter
    def interval(self, seconds: float) -> None: ...

    @property
    def targets(self) -> Sequence[ProxyTarget]:
        """The sidecars watched now (the dashboard reads their spans too)."""

    def set_targets(self, targets: Sequence[ProxyTarget]) -> None:
        """The sidecars to watch now."""

    async def run(self, on_view: OnView) -> None:
        """Call `on_view` with every new view; returns only when cancelled (or on a bug)."""


def check_interval(seconds: float) -> float:
    if not MIN_INTERVAL <= seconds <= MAX_INTERVAL:
        raise ValueError(f"interval must be between {MIN_INTERVAL}s and {MAX_INTERVAL}s")
    return seconds


class TelemetrySource:
    """Every target's admin API watched (a `SidecarClient` each), merged into one `MeshView`
    per interval: the dashboard's `ViewSource`. Targets may change while it runs; a target that
    goes away or never answers shows as disconnected in the views, never stops the others."""

    def __init__(
        self,
        targets: Iterable[ProxyTarget] = (),
        *,
        interval: float = DEFAULT_INTERVAL,
        history: int = DEFAULT_LENGTH,
        backoff_base: float = RECONNECT_BASE,
        backoff_cap: float = RECONNECT_CAP,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._interval = check_interval(interval)
        self._targets: dict[str, str] = {}
        self._aggregator = Aggregator(history=history)
        self._backoff = (backoff_base, backoff_cap)
        self._clock = clock
        self._wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, tuple[SidecarClient, asyncio.Task[None]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._dirty: asyncio.Event | None = None
        self._running: tuple[asyncio.Task[Any], asyncio.Event] | None = None
        self.latest: MeshView | None = None
        self.set_targets(targets)

    # -- settings -------------------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between views; setting it re-asks every client for that cadence at once
        (raises ValueError outside MIN_INTERVAL..MAX_INTERVAL)."""
        return self._interval

    @interval.setter
    def interval(self, seconds: float) -> None:
        self._interval = check_interval(seconds)
        for client, _ in self._clients.values():
            client.set_interval(seconds)

    @property
    def targets(self) -> tuple[ProxyTarget, ...]:
        """The (node, admin URL) pairs watched now, URLs without a trailing slash."""
        return tuple(self._targets.items())

    def set_targets(self, targets: Iterable[ProxyTarget]) -> None:
        """Watch exactly these (node, admin URL) pairs; call it from the event loop's thread."""
        new: dict[str, str] = {}
        for node, url in targets:
            if node in new:
                raise ValueError(f"node {node!r} listed twice")
            new[node] = url.rstrip("/")
        self._targets = new
        if self._session is not None:
            self._sync_clients()

    def clients(self) -> dict[str, SidecarClient]:
        """The running clients by node (empty unless running)."""
        return {node: c for node, (c, _) in self._clients.items()}

    # -- running ----------------------------------------------------------------------------

    async def run(self, on_view: OnView) -> None:
        """Watch the targets and call `on_view` with each new view, until cancelled.

        One run at a time; a run started while the previous one is being cancelled (a
        restarted worker) waits for it to let go of its connections first.
        """
        previous = self._running
        if previous is not None:
            task, stopped = previous
            if not task.cancelling():
                raise RuntimeError("this TelemetrySource is already running")
            await stopped.wait()
        current = asyncio.current_task()
        assert current is not None
        stopped = asyncio.Event()
        self._running = (current, stopped)
        try:
            await self._run(on_view)
        finally:
            self._running = None
            stopped.set()

    async def _run(self, on_view: OnView) -> None:
        loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        # The admin API is on loopback: no proxy from the environment must get in between.
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), trust_env=False
        ) as session:
            self._session = session
            try:
                self._sync_clients()
                next_at = loop.time()
                while True:
                    delay = next_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await wait_set(self._dirty, self._interval)
                    self._dirty.clear()
                    view = self._build()
                    on_view(view)
                    next_at = loop.time() + self._interval
            finally:
                self._session = None
                await self._stop_all()

    def _build(self) -> MeshView:
        now = self._clock()
        states = [self._clients[node][0].state(now) for node in self._targets]
        view = self._aggregator.build(states, self._wall_clock())
        self.latest = view
        return view

    def _changed(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    def _sync_clients(self) -> None:
        assert self._session is not None
        gone = [
            node
            for node, (client, _) in self._clients.items()
            if self._targets.get(node) != client.admin_url
        ]
        for node in gone:
            # Detached at once, so a node that changed its URL gets a fresh client now.
            _, task = self._clients.pop(node)
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        for node, url in self._targets.items():
            if node in self._clients:
                continue
            client = SidecarClient(
                node,
                url,
                self._session,
                interval=self._interval,
                on_change=self._changed,
                backoff=Backoff(*self._backoff),
                clock=self._clock,
                wall_clock=self._wall_clock,
            )
            task = asyncio.create_task(client.run(), name=f"meshdev-telemetry-{node}")
            self._clients[node] = (client, task)
        self._changed()

    async def _stop_all(self) -> None:
        for _, task in self._clients.values():
            task.cancel()
            self._stopping.add(task)
        self._clients.clear()
        for task in list(self._stopping):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopping.clear()
