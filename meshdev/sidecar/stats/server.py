"""The process's own stats under Envoy's names: `server.*`, and the config updates the control
plane delivers as Envoy's xDS update stats (`cluster_manager.cds.*`, `listener_manager.lds.*`).

`server.*` is read from the process when stats are read (`ServerStats.refresh`), never on the
request path: `live` (1, 0 once the sidecar drains), `state` (Envoy's: 0 live, 1 draining),
`uptime` (seconds), `concurrency` (worker threads: one event loop), `total_connections`
(downstream connections open), and memory from /proc/self/status, as near as Python has
Envoy's tcmalloc figures: `memory_allocated` the resident anonymous memory (RssAnon: the heap
and arenas in use), `memory_heap_size` the process's data segment and anonymous mappings
(VmData: what the allocator reserved), `memory_physical_size` the resident set (VmRSS).
Without /proc (not Linux), the peak resident set stands in for all three.

A config the control plane pushes (POST /config) is an update of both clusters and listeners,
as Envoy's CDS and LDS fetches are: `update_attempt`, then `update_success`, or
`update_rejected` for a config it refuses; `update_failure` (a fetch that failed on the wire)
cannot happen to a push and stays 0. The config the sidecar starts with counts as the first
update, as Envoy's first CDS/LDS fetch does.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Final

from meshdev.sidecar.stats.store import Gauge, Store

PROC_STATUS: Final = Path("/proc/self/status")
# Envoy's server.state values.
LIVE: Final = 0
DRAINING: Final = 1


def memory() -> tuple[int, int, int]:
    """(allocated, heap size, physical size) in bytes (see the module doc)."""
    fields: dict[str, int] = {}
    try:
        text = PROC_STATUS.read_text(encoding="ascii", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "VmData", "VmRSS"):
            # `VmRSS:     12345 kB`
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0]) * 1024
    if len(fields) == 3:
        return fields["RssAnon"], fields["VmData"], fields["VmRSS"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak *= 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return peak, peak, peak


class ServerStats:
    """Envoy's `server.*` gauges, set from the process when stats are read."""

    __slots__ = (
        "_started",
        "concurrency",
        "live",
        "memory_allocated",
        "memory_heap_size",
        "memory_physical_size",
        "state",
        "total_connections",
        "uptime",
    )

    def __init__(self, store: Store) -> None:
        self._started = time.monotonic()
        p = "server."
        self.live: Gauge = store.gauge(p + "live")
        self.state: Gauge = store.gauge(p + "state")
        self.uptime: Gauge = store.gauge(p + "uptime")
        self.concurrency: Gauge = store.gauge(p + "concurrency")
        self.total_connections: Gauge = store.gauge(p + "total_connections")
        self.memory_allocated: Gauge = store.gauge(p + "memory_allocated")
        self.memory_heap_size: Gauge = store.gauge(p + "memory_heap_size")
        self.memory_physical_size: Gauge = store.gauge(p + "memory_physical_size")
        self.concurrency.value = 1
        self.refresh(draining=False, connections=0)

    def refresh(self, *, draining: bool, connections: int) -> None:
        self.live.value = 0 if draining else 1
        self.state.value = DRAINING if draining else LIVE
        self.uptime.value = int(time.monotonic() - self._started)
        self.total_connections.value = connections
        allocated, heap, physical = memory()
        self.memory_allocated.value = allocated
        self.memory_heap_size.value = heap
        self.memory_physical_size.value = physical


UPDATE_SCOPES: Final = ("cluster_manager.cds.", "listener_manager.lds.")


def count_config_update(store: Store, *, applied: bool) -> None:
    """A config from the control plane, applied or refused (see the module doc). Rare: the
    counters are looked up by name."""
    outcome = "update_success" if applied else "update_rejected"
    for scope in UPDATE_SCOPES:
        store.counter(scope + "update_attempt").inc()
        store.counter(scope + outcome).inc()
        # Declared, as Envoy declares them, so that a dashboard's rate() of either reads 0.
        store.counter(scope + ("update_rejected" if applied else "update_success"))
        store.counter(scope + "update_failure")
