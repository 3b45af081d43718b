"""Aggregation at issue 15's scale, on plain data: 41 sidecars (20 services x 2 + ingress),
every one with every route and cluster, read through /stats/stream v2 as the dashboard reads
them, and the same traffic through v1's whole documents: the same views, exact counts."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

import pytest

from meshdev.sidecar.stats.stream import ConfigIdentity, DeltaCursor, StreamCursor
from meshdev.telemetry.aggregation.mesh import Aggregator, SidecarInput
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.telemetry.aggregation.topology import Topology, from_config_dump
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.stream_reader import StreamReader
from meshdev.testing.telemetry_mesh import (
    INTERVAL,
    RPS_PER_ROUTE,
    Mesh,
    make_sidecars,
    mesh_41,
    record_interval,
)
from tests.telemetry.support import Clock


@dataclass
class Dashboard:
    """One stream version's cursors on every sidecar, its readers and its aggregator."""

    cursors: dict[str, StreamCursor | DeltaCursor]
    topologies: dict[str, Topology]
    readers: dict[str, StreamReader] = field(default_factory=dict)
    aggregator: Aggregator = field(default_factory=lambda: Aggregator(history=5))

    def view(self, at: float) -> MeshView:
        inputs = []
        for node, cursor in self.cursors.items():
            reader = self.readers.setdefault(node, StreamReader())
            doc = json.loads(json.dumps(cursor.next_snapshot()))  # as it crosses the wire
            snap = reader.parse(doc, at)
            inputs.append(SidecarInput(node, f"http://{node}", snap, self.topologies[node]))
        return self.aggregator.build(inputs, at)


def test_41_sidecars_aggregate_alike_from_changes_and_from_whole_documents() -> None:
    mesh: Mesh = mesh_41()
    sidecars = make_sidecars(mesh)
    rng = random.Random(5)
    for _ in range(5):  # every status a route answers has its counter
        record_interval(mesh, sidecars, rng)
    clock = Clock()
    name_filter = re.compile(STREAM_FILTER)
    topologies = {}
    for node, sc in sidecars.items():
        topo = from_config_dump({"config": sc.config.model_dump(mode="json")})
        assert topo is not None
        topologies[node] = topo
    v1 = Dashboard(
        {
            n: StreamCursor(sc, ConfigIdentity(), name_filter, monotonic=clock)
            for n, sc in sidecars.items()
        },
        topologies,
    )
    v2 = Dashboard(
        {
            n: DeltaCursor(sc, ConfigIdentity(), name_filter, monotonic=clock)
            for n, sc in sidecars.items()
        },
        topologies,
    )
    v1.view(clock.now)
    v2.view(clock.now)
    per_route = 3 * round(RPS_PER_ROUTE * INTERVAL / 3)  # 3 callers a route
    for _ in range(6):
        record_interval(mesh, sidecars, rng)
        clock.advance(INTERVAL)
        a, b = v1.view(clock.now), v2.view(clock.now)
        assert b.routes == a.routes
        assert b.clusters == a.clusters
        assert b.hosts == a.hosts
        assert b.sidecars == a.sidecars
        assert b.edges == a.edges
        assert len(b.routes) == 40 and len(b.clusters) == 20 and len(b.hosts) == 40
        # Every route counts what its 3 callers sent it, once.
        assert {r.total for r in b.routes} == {per_route}
        assert all(r.rps == pytest.approx(per_route / INTERVAL) for r in b.routes)
        # Every app pod counts what it served; all together, every request that was sent
        # on (the 503s a breaker answered at the caller never reached a pod).
        served = sum(s.rps or 0.0 for s in b.sidecars) * INTERVAL
        overflow = sum(c.flags.get("UO", 0) for c in b.clusters)
        assert served == pytest.approx(40 * per_route - overflow)


def test_a_change_document_of_a_quiet_pod_is_small() -> None:
    """An app pod of the 41 knows 40 routes and 20 clusters, and calls 2 routes of one."""
    mesh = mesh_41()
    sidecars = make_sidecars(mesh)
    rng = random.Random(6)
    record_interval(mesh, sidecars, rng)
    pod = sidecars["s05-0"]
    name_filter = re.compile(STREAM_FILTER)
    whole = StreamCursor(pod, ConfigIdentity(), name_filter)
    changes = DeltaCursor(pod, ConfigIdentity(), name_filter)
    changes.next_snapshot()
    whole.next_snapshot()
    record_interval(mesh, sidecars, rng)
    a = json.dumps(whole.next_snapshot())
    b = json.dumps(changes.next_snapshot())
    assert len(b) * 10 < len(a)
