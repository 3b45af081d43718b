"""Istio's PassthroughCluster: a captured connection whose destination is no mesh service
(another container, the host, the internet) is relayed there unchanged, so capture never cuts
an app off from what it reached before.

Counted as Envoy counts it, on a cluster named PassthroughCluster: `upstream_cx_total`,
`upstream_cx_connect_fail`, `upstream_cx_active`. The relay is `http.raw`'s splice (bytes both
ways with back-pressure; a half-close ends the connection, as for an upgraded stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import cast

from meshdev.sidecar.capture.original_dst import Address, original_dst
from meshdev.sidecar.http.raw import RawEnd, Splice
from meshdev.sidecar.stats.store import Counter, Gauge, Store

CLUSTER = "PassthroughCluster"


class _Connecting(asyncio.Protocol):
    """The upstream connection until the splice: reading paused, bytes kept."""

    def __init__(self) -> None:
        self.early = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).pause_reading()

    def data_received(self, data: bytes) -> None:
        self.early += data


class Passthrough:
    """Relays adopted connections to their original destination."""

    def __init__(self, store: Store, connect_timeout: float, idle_timeout: float) -> None:
        self._store = store
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._splices: set[Splice] = set()

    @functools.cached_property
    def _cx_total(self) -> Counter:
        # Made at the first relayed connection: a sidecar whose pod is not captured never
        # shows a PassthroughCluster (the dashboard lists clusters by their stats).
        return self._store.counter(f"cluster.{CLUSTER}.upstream_cx_total")

    @functools.cached_property
    def _connect_fail(self) -> Counter:
        return self._store.counter(f"cluster.{CLUSTER}.upstream_cx_connect_fail")

    @functools.cached_property
    def _cx_active(self) -> Gauge:
        return self._store.gauge(f"cluster.{CLUSTER}.upstream_cx_active")

    def adopt(self, transport: asyncio.Transport) -> None:
        transport.pause_reading()
        down = RawEnd(transport, b"")
        transport.set_protocol(down)
        dst = original_dst(transport)
        if dst is None:
            transport.close()
            return
        task = asyncio.get_running_loop().create_task(self._relay(down, dst))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, down: RawEnd, dst: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                up_transport, pending = await loop.create_connection(_Connecting, *dst)
        except (OSError, TimeoutError):
            self._connect_fail.inc()
            down.transport.close()
            return
        except asyncio.CancelledError:
            down.transport.abort()
            raise
        self._cx_total.inc()
        self._cx_active.value += 1
        try:
            up = RawEnd(up_transport, pending.early)
            up_transport.set_protocol(up)
            splice = Splice(down, up, self.idle_timeout)
            self._splices.add(splice)
            try:
                await splice.wait()
            finally:
                self._splices.discard(splice)
        finally:
            self._cx_active.value -= 1

    async def close(self) -> None:
        """Reset every relayed connection and wait for the relays to end."""
        for splice in list(self._splices):
            splice.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
