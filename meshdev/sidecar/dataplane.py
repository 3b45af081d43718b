"""The live data plane: the compiled config that requests run on, and what outlives it.

`DataPlane.apply` compiles a config into a `Compiled` (sidecar/compiled.py, built by
sidecar/compiler.py) and swaps it in by replacing one reference. A request reads
`plane.current` once and finishes on what it read, so it sees the old config or the new, never
a mix. What must survive a swap (cluster states, rate-limit buckets) is the compiler's; the
Store is never reset, so every counter continues across swaps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from meshdev.common.breaker_view import BreakerView
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.admin.live_views import breaker_views, host_views
from meshdev.sidecar.admin.views import HostView
from meshdev.sidecar.compiled import Compiled
from meshdev.sidecar.compiler import Compiler
from meshdev.sidecar.filters.fault import check_runtime_entry, effective_fault
from meshdev.sidecar.proxy.accesslog import AccessLog
from meshdev.sidecar.router.deadline import Deadlines
from meshdev.sidecar.stats.server import ServerStats, count_config_update
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.tls.identity import WorkloadIdentity
from meshdev.sidecar.tracing import Tracer

# How often connection counts kept by the pools are copied into the Store.
STATS_SYNC_INTERVAL = 0.1
# `settle`: how long a push that turns TLS on or off waits for requests still in flight the
# old way, and how often it looks.
SETTLE_LIMIT = 2.0
SETTLE_POLL = 0.005


class DataPlane:
    """The proxy's live state; implements `admin.views.ControlSurface` for the admin API and
    `upstream.cluster.ClusterOwner` for its clusters."""

    def __init__(self, config: SidecarConfig, store: Store | None = None) -> None:
        self.stats_store = store or Store()
        self.running = False
        self._runtime: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self.access_log = AccessLog(config.access_log, self.stats_store)
        # Outlives swaps (its ring and exporters); a swap changes what it samples and where
        # it exports.
        self.tracer = Tracer(self.stats_store, config)
        self.deadlines = Deadlines()
        self._config_version = self.stats_store.gauge("config.version")
        # Envoy's server.* (refreshed when stats are read); set by the sidecar that serves:
        # whether it drains, and what else to refresh then (its listeners' connections).
        self.server_stats = ServerStats(self.stats_store)
        self.draining = False
        self.connections: Callable[[], int] = lambda: 0
        self.before_read: Callable[[], None] | None = None
        self.before_swap: Callable[[SidecarConfig, SidecarConfig], None] | None = None
        self.after_swap: Callable[[SidecarConfig, SidecarConfig], None] | None = None
        # The workload certificate (POST /certs): listeners and clusters read it per handshake,
        # so it outlives every swap; clusters need it as they are compiled.
        self.tls = WorkloadIdentity()
        self.tls.handshake_timeout = config.limits.tls_handshake_timeout
        self._compiler = Compiler(self)
        self.current: Compiled = self._compiler.compile(config, self._runtime)
        self._config_version.value = config.version
        count_config_update(self.stats_store, applied=True)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.running = True
        for state in self._compiler.clusters.values():
            if state.active:
                state.restart_ticker()
        self._sync_task = asyncio.get_running_loop().create_task(
            self._sync_loop(), name="meshdev-stats-sync"
        )

    async def aclose(self) -> None:
        self.running = False
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        for state in self._compiler.clusters.values():
            await state.aclose()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.access_log.aclose()
        await self.tracer.aclose()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a small housekeeping coroutine (pool closes) without awaiting it here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task: asyncio.Task[None] = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_SYNC_INTERVAL)
            self.sync_stats()

    def sync_stats(self) -> None:
        for state in self._compiler.clusters.values():
            state.sync_stats()

    # -- ControlSurface ---------------------------------------------------------------------

    @property
    def config(self) -> SidecarConfig:
        return self.current.config

    @property
    def stats(self) -> Store:
        self.sync_stats()
        for state in self._compiler.clusters.values():
            state.sync_buffered()
        if self.before_read is not None:
            self.before_read()
        self.server_stats.refresh(draining=self.draining, connections=self.connections())
        return self.stats_store

    def apply(self, config: SidecarConfig) -> None:
        old = self.current.config
        if self.before_swap is not None:
            # May refuse (a listener port it cannot bind): nothing has changed yet.
            self.before_swap(old, config)
        self.current = self._compiler.compile(config, self._runtime)
        self._config_version.value = config.version
        self.tls.handshake_timeout = config.limits.tls_handshake_timeout
        self.access_log.set_target(config.access_log)
        for retired in self.tracer.configure(config):
            self.spawn(retired.aclose())
        if self.after_swap is not None:
            self.after_swap(old, config)

    async def settle(self, limit: float | None = None) -> None:
        """Wait until no request is in flight on a pool that a swap retired because its
        cluster turned TLS on or off (at most `limit` seconds, SETTLE_LIMIT by default; at once
        when there is none).

        A push that turns a caller's TLS on answers only after this (admin POST /config), and
        that answer is what lets the control plane make the callee STRICT, with authorization
        by identity (meshdev/security/staging.py, round 3). A plaintext request the caller had
        under way as its pools changed, connecting or sent, is not yet the callee's: on a
        busy machine the callee accepted or read it tens of milliseconds later, under round
        3, and refused it (STRICT: `503 UC` at the caller) or denied it (no principal: 403).
        Once every such request has its answer, the callee has judged each under round 2.
        Turning TLS off is the same the other way: a TLS request under way must have its
        answer before the callee stops taking TLS (DISABLE)."""
        clusters = self._compiler.clusters.values()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (SETTLE_LIMIT if limit is None else limit)
        while any(state.crossing_in_flight() for state in clusters):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(SETTLE_POLL)

    def hosts(self) -> list[HostView]:
        self.sync_stats()
        return host_views(self.current)

    def breakers(self) -> list[BreakerView]:
        return breaker_views(self.current)

    def runtime(self) -> dict[str, str]:
        return dict(self._runtime)

    def set_runtime(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            check_runtime_entry(key, value)
        for key, value in values.items():
            if value == "":
                self._runtime.pop(key, None)
            else:
                self._runtime[key] = value
        for entry in self.current.routes:
            entry.fault = effective_fault(
                entry.fault_config, entry.vhost, entry.name, self._runtime
            )
