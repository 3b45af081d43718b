"""One cluster's connection budget, shared by the pools of its endpoints: Envoy's
max_connections / max_pending_requests (see the upstream module doc)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshdev.sidecar.upstream.pool import UpstreamPool


class ConnectionBudget:
    """One cluster's connection limits and counts (see the upstream module doc)."""

    __slots__ = (
        "_waiting",
        "cx_active",
        "cx_overflow",
        "max_connections",
        "max_pending_requests",
        "rq_pending_active",
        "rq_pending_overflow",
        "rq_pending_total",
    )

    def __init__(self, max_connections: int = 1024, max_pending_requests: int = 1024) -> None:
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self.cx_active = 0
        self.cx_overflow = 0
        self.rq_pending_active = 0
        self.rq_pending_total = 0
        self.rq_pending_overflow = 0
        # Pools with pending requests, in the order they started waiting (an ordered set).
        self._waiting: dict[UpstreamPool, None] = {}

    @property
    def cx_open(self) -> bool:
        return self.cx_active >= self.max_connections

    @property
    def rq_pending_open(self) -> bool:
        return self.rq_pending_active >= self.max_pending_requests

    def update(self, max_connections: int, max_pending_requests: int) -> None:
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self._freed()

    def _others_waiting(self, pool: UpstreamPool) -> bool:
        """Whether another pool has live pending requests (dropping stale entries)."""
        for other in list(self._waiting):
            if any(not w.done() for w in other._waiters):
                if other is not pool:
                    return True
            else:
                del self._waiting[other]
        return False

    def _freed(self) -> None:
        """Budget may be free: let waiting pools open connections while it lasts."""
        while self._waiting and self.cx_active < self.max_connections:
            pool = next(iter(self._waiting))
            if not pool._grant_slot():
                del self._waiting[pool]
