"""/stats/stream v2 (changes only) from the sidecar's cursor to the dashboard's reader.

Plain data first: the v2 cursor and reader against v1's whole documents on the same traffic,
gaps and bad documents. Then through the real admin server and the real client: exact totals
with traffic, a reader that joins late, a dropped connection, a restarted sidecar.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from meshdev.common.backoff import Backoff
from meshdev.common.breaker_view import BreakerView
from meshdev.sidecar.admin.server import AdminServer, start_admin
from meshdev.sidecar.admin.views import HostView
from meshdev.sidecar.stats.stream import ConfigIdentity, DeltaCursor, StreamCursor
from meshdev.telemetry.aggregation.mesh import Aggregator
from meshdev.telemetry.aggregation.sidecar_interval import SidecarInterval, SnapshotError
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.client import SidecarClient
from meshdev.telemetry.io.stream_reader import StreamGap, StreamReader
from meshdev.testing.synthetic_sidecar import SyntheticSidecar, sidecar_config
from tests.support import LOCALHOST, wait_until

INTERVAL = 0.05
ROUTES = {"backend": {"items": {"backend.v1": 90, "backend.v2": 10}, "cart": {"backend.v1": 1}}}
ENDPOINTS = {
    "backend.v1": [("10.0.0.3", 15006, "backend-v1-0"), ("10.0.0.4", 15006, "backend-v1-1")],
    "backend.v2": [("10.0.0.5", 15006, "backend-v2-0")],
}


def sidecar(node: str = "frontend-0") -> SyntheticSidecar:
    sc = SyntheticSidecar(sidecar_config(node, ROUTES, ENDPOINTS), name_filter=STREAM_FILTER)
    sc.declare_stats()  # every route's and cluster's stats at zero, as a real sidecar's
    sc.host_views = [
        HostView(c, a, p, pod, False, 0.0, 0, 0, 0, 0, 0, 0, 0)
        for c, members in ENDPOINTS.items()
        for a, p, pod in members
    ]
    sc.breaker_views = [
        BreakerView(c, 1024, 5, 20, 3, 0, 0, 0, 0, False, False, False, False) for c in ENDPOINTS
    ]
    return sc


def traffic(sc: SyntheticSidecar, rng: random.Random, n: int) -> None:
    """`n` requests on random routes, statuses and hosts, as the data plane counts them."""
    for _ in range(n):
        route = rng.choice(["items", "cart"])
        cluster = "backend.v1" if route == "cart" or rng.random() < 0.9 else "backend.v2"
        status = rng.choice([200, 200, 200, 503, 429])
        flags = ["RL"] if status == 429 else []
        sc.request("backend", route, cluster, status, rng.lognormvariate(2.0, 0.5), flags=flags)
        k = rng.randrange(len(sc.host_views))
        h = sc.host_views[k]
        ok = status < 500
        sc.host_views[k] = HostView(
            h.cluster, h.address, h.port, h.pod, False, 0.0, 0, 0, h.rq_active, 0,
            h.rq_total + 1, h.rq_error + (not ok), h.rq_success + ok,
        )  # fmt: skip


def wire(doc: dict[str, object]) -> object:
    """As the document crosses the network."""
    return json.loads(json.dumps(doc, separators=(",", ":")))


def host_tuples(snap: SidecarInterval) -> list[tuple[Any, ...]]:
    return sorted(
        (h.key, h.rq_total, h.rq_success, h.rq_error, h.rq_active, h.ejected) for h in snap.hosts
    )


def busy_histograms(snap: SidecarInterval) -> dict[str, tuple[int, list[Any]]]:
    return {k: (h.count, sorted(h.buckets)) for k, h in snap.histograms.items() if h.count}


# -- plain data: cursor -> JSON -> reader -----------------------------------------------------


def test_v2_reads_as_v1_does_on_the_same_traffic() -> None:
    sc = sidecar()
    name_filter = re.compile(STREAM_FILTER)
    v1 = StreamCursor(sc, ConfigIdentity(), name_filter)
    v2 = DeltaCursor(sc, ConfigIdentity(), name_filter)
    r1, r2 = StreamReader(), StreamReader()
    # The first documents, at once (as the admin API sends them when a client connects): v1's
    # deltas start there, and v2's first (whole) document is a baseline.
    r1.parse(wire(v1.next_snapshot()), 0.0)
    r2.parse(wire(v2.next_snapshot()), 0.0)
    rng = random.Random(7)
    for step in range(1, 60):
        traffic(sc, rng, rng.choice([0, 0, 1, 5, 40]))
        if step == 20:
            sc.upgrades("backend", "items", opened=3, closed=1)
        if step == 30:
            b = sc.breaker_views[0]
            sc.breaker_views[0] = BreakerView(
                b.cluster, 1024, 5, 20, 3, 9, 5, 20, 0, False, True, True, False
            )
        a = r1.parse(wire(v1.next_snapshot()), float(step))
        b2 = r2.parse(wire(v2.next_snapshot()), float(step))
        assert b2.deltas == a.deltas, step
        assert b2.counters == a.counters
        assert b2.gauges == a.gauges
        assert set(b2.histograms) == set(a.histograms)
        assert busy_histograms(b2) == busy_histograms(a)
        assert host_tuples(b2) == host_tuples(a)
        assert b2.breakers == a.breakers
        assert (b2.node, b2.config_version, b2.config_hash) == (
            a.node,
            a.config_version,
            a.config_hash,
        )


def test_a_change_document_holds_only_what_changed() -> None:
    sc = sidecar()
    cursor = DeltaCursor(sc, ConfigIdentity(), re.compile(STREAM_FILTER))
    first = cursor.next_snapshot()
    assert first["v"] == 2 and first["full"] is True and first["seq"] == 0
    assert len(first["counters"]) > 20  # type: ignore[arg-type]
    assert len(first["hosts"]) == 3  # type: ignore[arg-type]
    quiet = cursor.next_snapshot()
    assert quiet["full"] is False and quiet["seq"] == 1
    assert quiet["counters"] == quiet["gauges"] == quiet["histograms"] == {}
    assert quiet["hosts"] == quiet["breakers"] == quiet["hosts_gone"] == []

    sc.request("backend", "cart", "backend.v1", 201, 3.0)
    sc.host_views = sc.host_views[1:]  # an endpoint went away (a config change)
    moved = cursor.next_snapshot()
    counters = moved["counters"]
    assert isinstance(counters, dict)
    # The route's and cluster's counters that moved, and the new status code's (at 1), only.
    assert counters["vhost.backend.route.cart.downstream_rq_total"] == 1
    assert counters["vhost.backend.route.cart.upstream_rq_201"] == 1
    assert "vhost.backend.route.items.downstream_rq_total" not in counters
    histograms = moved["histograms"]
    assert isinstance(histograms, dict)
    assert set(histograms) == {"vhost.backend.route.cart.upstream_rq_time"}
    assert moved["hosts_gone"] == [["backend.v1", "10.0.0.3", 15006]]


def test_a_gap_or_an_unreadable_document_asks_for_a_whole_one() -> None:
    sc = sidecar()
    cursor = DeltaCursor(sc, ConfigIdentity(), re.compile(STREAM_FILTER))
    reader = StreamReader()
    reader.parse(wire(cursor.next_snapshot()), 0.0)
    cursor.next_snapshot()  # never arrives
    with pytest.raises(StreamGap, match="seq 2, expected seq 1"):
        reader.parse(wire(cursor.next_snapshot()), 1.0)
    # Nor can anything follow, until a connection starts over with a whole document.
    with pytest.raises(StreamGap, match="expected a whole document"):
        reader.parse(wire(cursor.next_snapshot()), 2.0)

    reader = StreamReader()
    cursor = DeltaCursor(sc, ConfigIdentity(), re.compile(STREAM_FILTER))
    reader.parse(wire(cursor.next_snapshot()), 0.0)
    bad = wire(cursor.next_snapshot())
    assert isinstance(bad, dict)
    bad["counters"] = {"x": "not a number"}
    with pytest.raises(SnapshotError):
        reader.parse(bad, 1.0)
    with pytest.raises(StreamGap):
        reader.parse(wire(cursor.next_snapshot()), 2.0)
    # A change document before any whole one (a server that skipped it) cannot be read.
    fresh = StreamReader()
    with pytest.raises(StreamGap):
        fresh.parse(wire(cursor.next_snapshot()), 3.0)


def test_a_reconnection_to_the_same_sidecar_resumes_its_totals() -> None:
    sc = sidecar()
    name_filter = re.compile(STREAM_FILTER)
    reader = StreamReader()
    cursor = DeltaCursor(sc, ConfigIdentity(), name_filter)
    reader.parse(wire(cursor.next_snapshot()), 0.0)
    sc.request("backend", "items", "backend.v1", 200, 5.0, count=4)
    seen = reader.parse(wire(cursor.next_snapshot()), 0.25).deltas
    assert seen["vhost.backend.route.items.downstream_rq_total"] == 4

    # The connection drops; 6 more requests while it is down; a new one starts whole.
    sc.request("backend", "items", "backend.v1", 200, 5.0, count=6)
    reader.reset()
    back = reader.parse(wire(DeltaCursor(sc, ConfigIdentity(), name_filter).next_snapshot()), 3.0)
    assert back.deltas["vhost.backend.route.items.downstream_rq_total"] == 6
    assert back.counters["vhost.backend.route.items.downstream_rq_total"] == 10

    # Another sidecar process (a restart: another stats store) is a baseline, not a delta.
    other = sidecar()
    other.request("backend", "items", "backend.v1", 200, 5.0, count=2)
    reader.reset()
    restarted = reader.parse(
        wire(DeltaCursor(other, ConfigIdentity(), name_filter).next_snapshot()), 4.0
    )
    assert restarted.deltas == {}
    assert restarted.counters["vhost.backend.route.items.downstream_rq_total"] == 2


# -- the real admin server and the real client ----------------------------------------------


class Served:
    """A synthetic sidecar's real admin API on loopback, stoppable and startable again on
    the same port (a dropped connection), or with another sidecar behind it (a restart)."""

    def __init__(self, sc: SyntheticSidecar) -> None:
        self.sc = sc
        self.port = 0
        self.admin: AdminServer | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def start(self) -> None:
        self.admin = await start_admin(
            self.sc, host=LOCALHOST, port=self.port, token="t", server_info={}
        )
        self.port = self.admin.port

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.close(grace=0.5)
            self.admin = None


@dataclass
class Watch:
    """The real client on a served sidecar; every interval it receives becomes one view (as
    tests/telemetry/test_telemetry_sidecar.py's), so the views add up to what was counted."""

    client: SidecarClient | None = None
    aggregator: Aggregator = field(default_factory=Aggregator)
    views: list[MeshView] = field(default_factory=list)
    seen: int = 0

    def changed(self) -> None:
        client = self.client
        if client is not None and client.snapshots != self.seen:
            self.seen = client.snapshots
            view = self.aggregator.build([client.state(time.monotonic())], time.time())
            self.views.append(view)

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    def counted(self, key: str = "backend/items") -> tuple[int, dict[str, int]]:
        """A route's requests and statuses, summed over the views."""
        total, codes = 0, dict[str, int]()
        for v in self.views:
            for r in v.routes:
                if r.key == key:
                    total += r.total
                    for code, n in r.codes.items():
                        codes[code] = codes.get(code, 0) + n
        return total, codes


@asynccontextmanager
async def watching(served: Served) -> AsyncIterator[Watch]:
    async with aiohttp.ClientSession() as session:
        watch = Watch()
        client = SidecarClient(
            "frontend-0",
            served.url,
            session,
            interval=INTERVAL,
            on_change=watch.changed,
            backoff=Backoff(0.02, 0.05),
        )
        watch.client = client
        task = asyncio.create_task(client.run())
        try:
            await wait_until(lambda: client.connected, "a connection")
            yield watch
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def send(sc: SyntheticSidecar, rng: random.Random, bursts: int) -> dict[str, int]:
    """Bursts of requests on backend/items across several intervals; what was sent, by code."""
    sent: dict[str, int] = {}
    for _ in range(bursts):
        for _ in range(rng.randrange(1, 12)):
            status = rng.choice([200, 200, 503, 404])
            sc.request("backend", "items", "backend.v1", status, 4.0)
            sent[str(status)] = sent.get(str(status), 0) + 1
        await asyncio.sleep(rng.uniform(0.0, 2 * INTERVAL))
    return sent


async def test_the_stream_adds_up_to_every_request_of_a_reader_that_joined_late() -> None:
    rng = random.Random(3)
    served = Served(sidecar())
    await served.start()
    # Traffic before the dashboard looks: none of it is the dashboard's to count.
    served.sc.request("backend", "items", "backend.v1", 200, 4.0, count=50)
    try:
        async with watching(served) as watch:
            sent = await send(served.sc, rng, 12)
            n = sum(sent.values())
            await wait_until(lambda: watch.counted()[0] == n, "every request counted")
            await asyncio.sleep(3 * INTERVAL)  # and not one more
            assert watch.client is not None
            latest = watch.client.take()
            connections = watch.client.connections
    finally:
        await served.stop()
    assert watch.counted() == (n, sent)
    # The reader's totals are the sidecar's, the 50 before it joined included.
    assert latest is not None
    assert latest.counters["vhost.backend.route.items.downstream_rq_total"] == 50 + n
    assert connections == 1


async def test_a_dropped_connection_loses_no_request() -> None:
    rng = random.Random(4)
    served = Served(sidecar())
    await served.start()
    try:
        async with watching(served) as watch:
            sent = await send(served.sc, rng, 5)
            await served.stop()  # the connection drops; the sidecar goes on counting
            await wait_until(lambda: not watch.connected, "the loss")
            while_away = await send(served.sc, rng, 3)
            await served.start()
            await wait_until(lambda: watch.connected, "the reconnection")
            after = await send(served.sc, rng, 5)
            expected = {
                code: sent.get(code, 0) + while_away.get(code, 0) + after.get(code, 0)
                for code in {*sent, *while_away, *after}
            }
            n = sum(expected.values())
            await wait_until(lambda: watch.counted()[0] == n, "every request counted")
            await asyncio.sleep(3 * INTERVAL)
            assert watch.client is not None
            connections = watch.client.connections
    finally:
        await served.stop()
    assert watch.counted() == (n, expected)
    assert connections == 2


async def test_a_restarted_sidecar_is_counted_from_its_start_not_twice() -> None:
    served = Served(sidecar())
    await served.start()
    try:
        async with watching(served) as watch:
            served.sc.request("backend", "items", "backend.v1", 200, 4.0, count=7)
            await wait_until(lambda: watch.counted()[0] == 7, "the first 7")
            await served.stop()
            await wait_until(lambda: not watch.connected, "the loss")
            # Another process behind the same port, its counters from zero; its first 3
            # requests came before the dashboard reconnected, so they are no delta of ours.
            served.sc = sidecar()
            served.sc.request("backend", "items", "backend.v1", 200, 4.0, count=3)
            await served.start()
            await wait_until(lambda: watch.connected, "the reconnection")
            served.sc.request("backend", "items", "backend.v1", 200, 4.0, count=5)
            await wait_until(lambda: watch.counted()[0] >= 12, "the next 5")
            await asyncio.sleep(3 * INTERVAL)
    finally:
        await served.stop()
    assert watch.counted()[0] == 12


async def test_the_admin_api_refuses_an_unknown_stream_version() -> None:
    served = Served(sidecar())
    await served.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(served.url + "/stats/stream", params={"v": "3"}) as resp,
        ):
            body = await resp.text()
    finally:
        await served.stop()
    assert resp.status == 400
    assert "use 1 or 2" in body
