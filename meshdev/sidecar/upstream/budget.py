"""One cluster's connection budget, shared by the pools of its endpoints: Envoy's
max_connections / max_pending_requests (see the package doc).

The budget sits below the pools in the import graph: it asks of a pool only what
``WaitingPool`` describes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from meshdev.common import envoy_defaults as envoy


class _Pending(Protocol):
    """A pending request's future, as far as the budget cares."""

    def done(self) -> bool: ...


class WaitingPool(Protocol):
    """What the budget needs of a pool with pending requests (``pool.UpstreamPool``)."""

    @property
    def _waiters(self) -> Iterable[_Pending]: ...
    def _grant_slot(self) -> bool: ...


class Traffic:
    """What one cluster's connections moved and how they ended, as plain ints the pools and
    their connections bump, and `ClusterState.sync_stats` copies into Envoy's
    `upstream_cx_{rx,tx}_bytes_total`, `upstream_cx_destroy_{local,remote}[_with_active_rq]`
    and `upstream_cx_connect_timeout`. Bytes are the plaintext exchanged (above TLS)."""

    __slots__ = (
        "connect_timeout",
        "destroy_local",
        "destroy_local_active_rq",
        "destroy_remote",
        "destroy_remote_active_rq",
        "rx_bytes",
        "tx_bytes",
    )

    def __init__(self) -> None:
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.destroy_local = 0
        self.destroy_remote = 0
        self.destroy_local_active_rq = 0
        self.destroy_remote_active_rq = 0
        self.connect_timeout = 0

    def closed(self, *, local: bool, active_rq: bool) -> None:
        """A connection ended: closed by us (`local`) or by the upstream, with an exchange in
        flight or not."""
        if local:
            self.destroy_local += 1
            if active_rq:
                self.destroy_local_active_rq += 1
        else:
            self.destroy_remote += 1
            if active_rq:
                self.destroy_remote_active_rq += 1

    def snapshot(self) -> tuple[int, ...]:
        return (
            self.rx_bytes,
            self.tx_bytes,
            self.destroy_local,
            self.destroy_remote,
            self.destroy_local_active_rq,
            self.destroy_remote_active_rq,
            self.connect_timeout,
        )


class ConnectionBudget:
    """One cluster's connection limits and counts (see the package doc), and its connections'
    `traffic`.

    The counters are plain ints, read by the stats and changed by the pools only.
    """

    __slots__ = (
        "_waiting",
        "cx_active",
        "cx_overflow",
        "max_connections",
        "max_pending_requests",
        "rq_pending_active",
        "rq_pending_overflow",
        "rq_pending_total",
        "traffic",
    )

    def __init__(
        self,
        max_connections: int = envoy.MAX_CONNECTIONS,
        max_pending_requests: int = envoy.MAX_PENDING_REQUESTS,
    ) -> None:
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self.cx_active = 0
        self.cx_overflow = 0
        self.rq_pending_active = 0
        self.rq_pending_total = 0
        self.rq_pending_overflow = 0
        self.traffic = Traffic()
        # Pools with pending requests, in the order they started waiting (an ordered set).
        self._waiting: dict[WaitingPool, None] = {}

    @property
    def cx_open(self) -> bool:
        """The cluster's connections reached ``max_connections`` (Envoy's ``cx_open``)."""
        return self.cx_active >= self.max_connections

    @property
    def rq_pending_open(self) -> bool:
        """Its pending requests reached ``max_pending_requests`` (Envoy's
        ``rq_pending_open``)."""
        return self.rq_pending_active >= self.max_pending_requests

    def update(self, max_connections: int, max_pending_requests: int) -> None:
        """Change the limits in place, keeping the counts (config hot swap). Raised limits let
        pending requests connect at once; lowered ones close no connection in use, those over
        the limit close as they are released."""
        self.max_connections = max_connections
        self.max_pending_requests = max_pending_requests
        self._freed()

    def try_open(self) -> bool:
        """Take a slot for a connection that cannot wait (a tcp_proxy connection: Envoy checks
        `max_connections` up front, since its TCP pool would queue it for a connection that is
        never released); at the limit count ``cx_overflow`` and refuse."""
        if self.cx_active >= self.max_connections:
            self.cx_overflow += 1
            return False
        self.cx_active += 1
        return True

    def release(self) -> None:
        """A connection taken with ``try_open`` closed: its slot may go to a waiting pool."""
        self.cx_active -= 1
        if self._waiting:
            self._freed()

    def _others_waiting(self, pool: WaitingPool) -> bool:
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
