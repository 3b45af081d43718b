"""Aggregation: stream documents from several synthetic sidecars -> one MeshView."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import pytest

from meshdev.common.breaker_view import BreakerView
from meshdev.common.histogram import HistogramSnapshot, round_significant
from meshdev.sidecar.admin.views import HostView
from meshdev.telemetry.aggregation.history import History
from meshdev.telemetry.aggregation.mesh import Aggregator, SidecarInput
from meshdev.telemetry.aggregation.sidecar_interval import combine
from meshdev.telemetry.aggregation.tally import ClusterTally
from meshdev.telemetry.aggregation.topology import Topology, from_config_dump
from meshdev.telemetry.aggregation.view import ClusterStats, HostStats, MeshView, RouteStats
from meshdev.telemetry.aggregation.view_build import LimitsCache, cluster_stats
from meshdev.telemetry.io.stream_reader import StreamReader
from meshdev.testing.synthetic_sidecar import SyntheticSidecar, sidecar_config
from tests.telemetry.support import Clock

ROUTES = {
    "backend": {
        "items": {"backend.v1": 90, "backend.v2": 10},
        "orders": {"backend.v1": 1},
    },
    "payments": {"charge": {"payments": 1}},
}
ENDPOINTS = {
    "backend.v1": [("10.0.0.3", 15006, "backend-v1-0"), ("10.0.0.4", 15006, "backend-v1-1")],
    "backend.v2": [("10.0.0.5", 15006, "backend-v2-0")],
    "payments": [("10.0.0.9", 15006, "payments-0")],
}
DT = 0.5
ITEMS_TIME = "vhost.backend.route.items.upstream_rq_time"


@dataclass
class Mesh:
    """Synthetic sidecars sharing one clock; `tick` advances it and aggregates a view."""

    nodes: Sequence[str] = ("frontend-0", "frontend-1")
    faults: Iterable[tuple[str, str]] = ()
    clock: Clock = field(default_factory=Clock)
    aggregator: Aggregator = field(default_factory=lambda: Aggregator(history=5))
    sidecars: dict[str, SyntheticSidecar] = field(default_factory=dict)
    readers: dict[str, StreamReader] = field(default_factory=dict)
    topologies: dict[str, Topology | None] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)
    disconnected: set[str] = field(default_factory=set)
    ages: dict[str, float] = field(default_factory=dict)
    first: MeshView | None = None

    def __post_init__(self) -> None:
        for node in self.nodes:
            cfg = sidecar_config(node, ROUTES, ENDPOINTS, faults=self.faults)
            self.sidecars[node] = SyntheticSidecar(cfg, clock=self.clock)
            self.readers[node] = StreamReader()
            self.topologies[node] = from_config_dump(
                {"version": 1, "config": cfg.model_dump(mode="json")}
            )
        self.first = self.tick(0.0)  # the stream's first document: it covers nothing

    def __getitem__(self, node: str) -> SyntheticSidecar:
        return self.sidecars[node]

    def tick(self, seconds: float = DT) -> MeshView:
        self.clock.advance(seconds)
        inputs = []
        for node, sc in self.sidecars.items():
            doc = json.loads(json.dumps(sc.snapshot()))  # exactly as it crosses the wire
            inputs.append(
                SidecarInput(
                    node=node,
                    admin_url=f"http://{node}:15000",
                    latest=self.readers[node].parse(doc, self.clock()),
                    topology=self.topologies[node],
                    connected=node not in self.disconnected,
                    stale=node in self.stale,
                    age_s=self.ages.get(node, 0.0),
                )
            )
        return self.aggregator.build(inputs, at=self.clock())


def route(view: MeshView, key: str) -> RouteStats:
    return next(r for r in view.routes if r.key == key)


def cluster(view: MeshView, name: str) -> ClusterStats:
    return next(c for c in view.clusters if c.name == name)


def host(view: MeshView, cluster_name: str, pod: str) -> HostStats:
    return next(h for h in view.hosts if h.cluster == cluster_name and h.pod == pod)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- rates, success, latency ------------------------------------------------------------------


def test_route_rates_and_success_sum_over_the_calling_sidecars() -> None:
    mesh = Mesh()
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0, count=40, retries=1)
    mesh["frontend-1"].request("backend", "items", "backend.v1", 200, 5.0, count=50)
    mesh["frontend-1"].request("backend", "items", "backend.v2", 503, 9.0, count=10)
    view = mesh.tick(DT)

    items = route(view, "backend/items")
    assert items.rps == pytest.approx((40 + 50 + 10) / DT)
    assert items.total == 100
    assert items.success_pct == pytest.approx(90.0)
    assert items.codes == {"200": 90, "503": 10}
    assert items.retries_per_s == pytest.approx(40 / DT)
    # Untouched routes of the config are listed, with nothing to say yet.
    orders = route(view, "backend/orders")
    assert (orders.rps, orders.total, orders.success_pct, orders.p50) == (0.0, 0, None, None)
    # Clusters see every upstream try of every route that uses them, retries included.
    assert cluster(view, "backend.v1").rps == pytest.approx((40 * 2 + 50) / DT)
    assert cluster(view, "backend.v2").success_pct == pytest.approx(0.0)


def test_each_interval_counts_only_its_own_requests() -> None:
    mesh = Mesh()
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0, count=10)
    first = mesh.tick(DT)
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0, count=3)
    second = mesh.tick(2 * DT)
    assert route(first, "backend/items").total == 10
    assert route(second, "backend/items").total == 3
    assert route(second, "backend/items").rps == pytest.approx(3 / (2 * DT))
    assert route(second, "backend/items").history == (0.0, 10 / DT, 3 / (2 * DT))


def test_merged_quantiles_are_within_one_percent_of_the_exact_ones() -> None:
    rng = random.Random(7)
    mesh = Mesh(nodes=("a", "b", "c"))
    values: list[float] = []
    for i, node in enumerate(("a", "b", "c")):
        for _ in range(400 + 200 * i):
            # Each sidecar sees a different distribution: only a real merge gets the union right.
            v = rng.lognormvariate(1.0 + i, 0.6)
            values.append(v)
            mesh[node].request("backend", "items", "backend.v1", 200, v)
    items = route(mesh.tick(DT), "backend/items")
    for got, q in ((items.p50, 0.5), (items.p95, 0.95), (items.p99, 0.99)):
        assert got is not None
        assert got == pytest.approx(exact_quantile(values, q), rel=0.01)
    assert sum(n for _, _, n in items.latency_buckets) == len(values)


def test_merged_quantiles_are_those_of_one_histogram_of_all_values() -> None:
    rng = random.Random(11)
    mesh = Mesh(nodes=("a", "b"))
    values = {node: [rng.expovariate(0.05) for _ in range(300)] for node in ("a", "b")}
    for node, vs in values.items():
        for v in vs:
            mesh[node].request("backend", "items", "backend.v1", 200, v)
    items = route(mesh.tick(DT), "backend/items")
    union = HistogramSnapshot.from_values(values["a"] + values["b"])
    assert (items.p50, items.p95, items.p99) == tuple(
        round_significant(union.quantile(q)) for q in (0.5, 0.95, 0.99)
    )
    assert items.latency_buckets == tuple(union.bucket_data())


def test_malformed_buckets_cost_the_route_its_latency_only() -> None:
    mesh = Mesh(nodes=("a", "b"))
    for node in ("a", "b"):
        mesh[node].request("backend", "items", "backend.v1", 200, 5.0, count=3)
    mesh.clock.advance(DT)
    inputs = []
    for node in ("a", "b"):
        doc = json.loads(json.dumps(mesh[node].snapshot()))
        if node == "b":
            doc["histograms"][ITEMS_TIME]["interval"]["buckets"] = [["oops"]]
        snap = mesh.readers[node].parse(doc, mesh.clock())
        inputs.append(SidecarInput(node, node, snap, mesh.topologies[node]))
    items = route(mesh.aggregator.build(inputs, 0.0), "backend/items")
    assert (items.total, items.p50, items.latency_buckets) == (6, None, ())


def test_one_sidecar_route_uses_that_sidecars_quantiles() -> None:
    rng = random.Random(3)
    mesh = Mesh()
    values = [rng.uniform(1, 300) for _ in range(500)]
    for v in values:
        mesh["frontend-0"].request("backend", "orders", "backend.v1", 200, v)
    orders = route(mesh.tick(DT), "backend/orders")
    assert orders.p99 == pytest.approx(exact_quantile(values, 0.99), rel=0.01)
    assert orders.p50 == pytest.approx(exact_quantile(values, 0.5), rel=0.01)
    lowest = min(b[0] for b in orders.latency_buckets)
    assert lowest <= min(values) < lowest * 1.02


def test_folded_intervals_give_the_rate_over_both() -> None:
    mesh = Mesh(nodes=("a",))
    sc, reader = mesh["a"], mesh.readers["a"]
    sc.request("backend", "items", "backend.v1", 200, 4.0, count=6)
    mesh.clock.advance(DT)
    older = reader.parse(json.loads(json.dumps(sc.snapshot())), mesh.clock())
    sc.request("backend", "items", "backend.v1", 500, 40.0, count=2)
    mesh.clock.advance(DT)
    newer = reader.parse(json.loads(json.dumps(sc.snapshot())), mesh.clock())
    both = combine(older, newer)
    view = Aggregator().build([SidecarInput("a", "http://a", both, mesh.topologies["a"])], 0.0)
    items = route(view, "backend/items")
    assert items.rps == pytest.approx(8 / (2 * DT))
    assert items.codes == {"200": 6, "500": 2}
    assert items.p99 == pytest.approx(40.0, rel=0.01)
    assert both.parts == 2


# -- response flags ---------------------------------------------------------------------------


def test_cluster_flags_go_to_the_route_that_uses_the_cluster() -> None:
    mesh = Mesh(nodes=("a",))
    mesh["a"].request("payments", "charge", "payments", 503, 1.0, flags=["UO"], count=4)
    mesh["a"].request("payments", "charge", "payments", 504, 2000.0, flags=["UT"], count=2)
    mesh["a"].request("payments", "charge", "payments", 503, 1.0, flags=["UH"])
    view = mesh.tick(DT)
    assert route(view, "payments/charge").flags == {"UO": 4, "UT": 2, "UH": 1}
    assert route(view, "backend/items").flags == {}
    assert cluster(view, "payments").trips_per_s == pytest.approx(4 / DT)
    assert cluster(view, "payments").flags == {"UO": 4, "UT": 2, "UH": 1}
    assert view.unattributed_flags == {}


def test_flags_per_second_sum_over_sidecars_as_rps_does() -> None:
    # The routes table shows them beside RPS: half the requests overflowing at 100 RPS must
    # read UO 50, not the interval's count (UO 12 at 4 views a second).
    mesh = Mesh()
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 1.0, count=20)
    mesh["frontend-0"].request("backend", "items", "backend.v1", 503, 1.0, flags=["UO"], count=20)
    mesh["frontend-1"].request("payments", "charge", "payments", 503, 1.0, flags=["UH"], count=3)
    mesh["frontend-1"].request("payments", "charge", "payments", 504, 9.0, flags=["UT"], count=2)
    mesh["frontend-1"].request("backend", "items", "backend.v1", 503, 1.0, flags=["UO"], count=5)
    view = mesh.tick(DT)
    items = route(view, "backend/items")
    assert items.rps == pytest.approx(45 / DT)
    assert items.flags == {"UO": 25}
    assert items.flags_per_s == pytest.approx({"UO": 25 / DT})
    # A route's own flag counter (UT), and a cluster's flag shared out to its routes
    # (attribution.py: UO and UH), both.
    charge = route(view, "payments/charge").flags_per_s
    assert charge == pytest.approx({"UH": 3 / DT, "UT": 2 / DT})
    assert route(view, "backend/orders").flags_per_s == {}


def test_a_shared_clusters_flags_go_to_the_routes_that_got_their_status() -> None:
    mesh = Mesh(nodes=("a",))
    # backend.v1 serves both backend routes, but only `orders` answered 5xx.
    mesh["a"].request("backend", "items", "backend.v1", 200, 1.0, count=300)
    mesh["a"].request("backend", "orders", "backend.v1", 200, 1.0, count=30)
    mesh["a"].request("backend", "orders", "backend.v1", 503, 1.0, flags=["URX"], count=33)
    view = mesh.tick(DT)
    assert route(view, "backend/orders").flags == {"URX": 33}
    assert route(view, "backend/items").flags == {}


def test_a_shared_clusters_flags_are_split_in_proportion_and_none_is_lost() -> None:
    mesh = Mesh(nodes=("a",))
    mesh["a"].request("backend", "items", "backend.v1", 503, 1.0, flags=["UO"], count=20)
    mesh["a"].request("backend", "orders", "backend.v1", 503, 1.0, flags=["UO"], count=9)
    view = mesh.tick(DT)
    items, orders = route(view, "backend/items"), route(view, "backend/orders")
    assert items.flags["UO"] + orders.flags["UO"] == 29
    # Each route's 503s, times the share of its traffic the route table sends to backend.v1.
    expected_items = 29 * (20 * 0.9) / (20 * 0.9 + 9 * 1.0)
    assert abs(items.flags["UO"] - expected_items) <= 1


def test_route_counters_win_over_cluster_counters() -> None:
    mesh = Mesh(nodes=("a",))
    sc = mesh["a"]
    sc.request("payments", "charge", "payments", 503, 1.0, flags=["UO"], count=5)
    # A proxy that also counts the flag per route: that count is the route's own.
    sc.stats.counter("vhost.payments.route.charge.upstream_rq_pending_overflow").inc(5)
    # The data plane counts route timeouts per route and per cluster: counted once.
    sc.request("payments", "charge", "payments", 504, 1.0, flags=["UT"], count=2)
    view = mesh.tick(DT)
    assert route(view, "payments/charge").flags == {"UO": 5, "UT": 2}
    assert cluster(view, "payments").flags == {"UO": 5, "UT": 2}


def test_a_route_counts_what_its_callers_got_local_answers_included() -> None:
    mesh = Mesh(nodes=("a",), faults=[("payments", "charge")])
    sc = mesh["a"]
    sc.request("payments", "charge", "payments", 200, 3.0, count=6)
    sc.request("payments", "charge", "payments", 503, 0.0, flags=["UO"], count=2)
    sc.request("payments", "charge", "payments", 500, 0.0, flags=["FI"], count=1)
    sc.request("payments", "charge", "payments", 429, 0.0, flags=["RL"], count=1)
    view = mesh.tick(DT)
    charge = route(view, "payments/charge")
    assert (charge.total, charge.rps) == (10, 10 / DT)
    assert charge.codes == {"200": 6, "503": 2, "500": 1, "429": 1}
    assert charge.success_pct == pytest.approx(70.0)  # a 429 is no server error
    # Upstream, only the six tried requests have a latency.
    assert charge.p50 == pytest.approx(3.0, rel=0.01)
    assert charge.flags == {"UO": 2, "FI": 1}
    assert view.unattributed_flags == {"RL": 1}  # no route here is configured to rate-limit


def test_the_inbound_side_is_the_sidecars_own_not_a_mesh_route() -> None:
    mesh = Mesh()
    mesh["frontend-0"].inbound(200, count=8)
    mesh["frontend-0"].inbound(503, count=2)
    mesh["frontend-0"].host_views = [host_view("inbound|8080", "127.0.0.1", "frontend-0")]
    view = mesh.tick(DT)
    assert all(r.vhost != "inbound" for r in view.routes)
    assert all(not c.name.startswith("inbound|") for c in view.clusters)
    assert all(not h.cluster.startswith("inbound|") for h in view.hosts)
    own = {s.node: (s.rps, s.success_pct) for s in view.sidecars}
    assert own == {"frontend-0": (10 / DT, 80.0), "frontend-1": (0.0, None)}


def test_upgraded_connections_are_counted_per_route_over_the_callers() -> None:
    mesh = Mesh()
    mesh["frontend-0"].upgrades("backend", "items", opened=3)
    mesh["frontend-1"].upgrades("backend", "items", opened=2, closed=1)
    # The callee's own side of the same streams is not a mesh route.
    mesh["frontend-1"].upgrades("inbound", "inbound", opened=4)
    view = mesh.tick(DT)
    items = route(view, "backend/items")
    assert (items.upgrades, items.upgrades_open) == (5, 4)
    orders = route(view, "backend/orders")
    assert (orders.upgrades, orders.upgrades_open) == (0, 0)
    # The next interval: no new upgrade, the open ones still open, one more closed.
    mesh["frontend-0"].upgrades("backend", "items", opened=0, closed=1)
    items = route(mesh.tick(DT), "backend/items")
    assert (items.upgrades, items.upgrades_open) == (0, 3)


def test_retried_answers_are_not_final_answers() -> None:
    mesh = Mesh(nodes=("a",))
    mesh["a"].request("payments", "charge", "payments", 200, 1.0, retries=1, count=4)
    # Envoy's retry scope: the 503s that were retried.
    mesh["a"].stats.counter("cluster.payments.retry.upstream_rq_503").inc(4)
    view = mesh.tick(DT)
    assert {c.name for c in view.clusters} == {"backend.v1", "backend.v2", "payments"}
    assert cluster(view, "payments").success_pct == pytest.approx(100.0)


def test_listener_flags_go_to_routes_with_that_feature_or_stay_unattributed() -> None:
    mesh = Mesh(nodes=("a",), faults=[("backend", "orders")])
    sc = mesh["a"]
    sc.request("backend", "orders", "backend.v1", 503, 0.1, flags=["FI"], count=3)
    sc.request("backend", "items", "backend.v1", 429, 0.1, flags=["RL"], count=2)
    sc.no_route(count=4)
    view = mesh.tick(DT)
    assert route(view, "backend/orders").flags == {"FI": 3}
    # No route is configured to rate-limit, and no route can own a request that matched none.
    assert view.unattributed_flags == {"RL": 2, "NR": 4}
    assert all("RL" not in r.flags for r in view.routes)


def test_flags_without_a_route_table_are_unattributed() -> None:
    mesh = Mesh(nodes=("a",))
    mesh.topologies["a"] = None
    mesh["a"].request("backend", "items", "backend.v1", 503, 1.0, flags=["UF"], count=2)
    view = mesh.tick(DT)
    assert view.unattributed_flags == {"UF": 2}
    assert cluster(view, "backend.v1").flags == {"UF": 2}


# -- clusters, breakers, hosts ----------------------------------------------------------------


def breaker_view(cluster_name: str, *, rq_active: int, max_requests: int = 20) -> BreakerView:
    return BreakerView(
        cluster=cluster_name,
        max_connections=50,
        max_pending_requests=5,
        max_requests=max_requests,
        max_retries=3,
        cx_active=4,
        rq_pending_active=0,
        rq_active=rq_active,
        rq_retry_active=0,
        cx_open=False,
        rq_pending_open=False,
        rq_open=rq_active >= max_requests,
        rq_retry_open=False,
    )


def host_view(
    cluster_name: str,
    address: str,
    pod: str,
    *,
    total: int = 0,
    errors: int = 0,
    ejected_for: float = 0.0,
    ejections: int = 0,
) -> HostView:
    return HostView(
        cluster=cluster_name,
        address=address,
        port=15006,
        pod=pod,
        ejected=ejected_for > 0,
        ejected_for=ejected_for,
        ejection_count=ejections,
        consecutive_5xx=0,
        rq_active=1,
        cx_active=1,
        rq_total=total,
        rq_error=errors,
        rq_success=total - errors,
    )


def test_breaker_open_on_any_sidecar_shows_that_sidecars_limit() -> None:
    mesh = Mesh()
    mesh["frontend-0"].breaker_views = [breaker_view("backend.v1", rq_active=7)]
    mesh["frontend-1"].breaker_views = [breaker_view("backend.v1", rq_active=20)]
    view = mesh.tick(DT)
    v1 = cluster(view, "backend.v1")
    assert v1.open_now
    limit = next(lim for lim in v1.limits if lim.name == "max_requests")
    assert (limit.active, limit.limit, limit.open, limit.node) == (20, 20, True, "frontend-1")
    pending = next(lim for lim in v1.limits if lim.name == "max_pending_requests")
    assert (pending.limit, pending.open) == (5, False)

    mesh["frontend-1"].breaker_views = [breaker_view("backend.v1", rq_active=3)]
    closed = cluster(mesh.tick(DT), "backend.v1")
    assert not closed.open_now
    assert next(lim for lim in closed.limits if lim.name == "max_requests").node == "frontend-0"


def test_a_clusters_open_connections_follow_its_breakers_from_view_to_view() -> None:
    mesh = Mesh()
    mesh["frontend-0"].breaker_views = [breaker_view("backend.v1", rq_active=1)]
    mesh["frontend-1"].breaker_views = [breaker_view("backend.v1", rq_active=2)]
    assert cluster(mesh.tick(DT), "backend.v1").cx_active == 8
    busier = replace(breaker_view("backend.v1", rq_active=2), cx_active=9)
    mesh["frontend-1"].breaker_views = [busier]
    assert [cluster(mesh.tick(DT), "backend.v1").cx_active for _ in range(2)] == [13, 13]
    mesh["frontend-0"].breaker_views = []
    assert cluster(mesh.tick(DT), "backend.v1").cx_active == 9


def test_limits_and_open_connections_kept_between_views_follow_a_changed_breaker() -> None:
    """A v2 reader hands on the same `BreakerView` while a breaker does not change, and the
    view keeps what it worked out of them until one does."""
    cache: LimitsCache = {}
    history = History(5)
    a, b = breaker_view("backend.v1", rq_active=1), breaker_view("backend.v1", rq_active=2)

    def stats(breakers: list[tuple[str, BreakerView]]) -> ClusterStats:
        tally = ClusterTally()
        tally.breakers = breakers
        (out,) = cluster_stats({"backend.v1": tally}, {}, history, cache)
        return out

    for _ in range(2):
        now = stats([("f0", a), ("f1", b)])
        assert (now.cx_active, now.open_now) == (8, False)
    full = replace(breaker_view("backend.v1", rq_active=20), cx_active=9)
    for _ in range(2):
        now = stats([("f0", a), ("f1", full)])
        assert (now.cx_active, now.open_now) == (13, True)
    assert stats([("f0", a)]).cx_active == 4
    assert stats([("f1", a), ("f0", a)]).limits[0].node == "f1"


def test_idle_pooled_connections_at_the_limit_do_not_read_as_open() -> None:
    """After a burst the pool holds max_connections idle connections: Envoy's cx_open gauge
    says 1, yet a new request is admitted on an idle one. Open means every one is busy."""
    mesh = Mesh(nodes=("a",))
    idle = replace(breaker_view("frontend", rq_active=0), cx_active=50, cx_open=True)
    mesh["a"].breaker_views = [idle]
    limit = next(
        lim for lim in cluster(mesh.tick(DT), "frontend").limits if lim.name == "max_connections"
    )
    assert (limit.active, limit.limit, limit.open) == (50, 50, False)
    busy = replace(
        breaker_view("frontend", rq_active=50, max_requests=100), cx_active=50, cx_open=True
    )
    mesh["a"].breaker_views = [busy]
    view = mesh.tick(DT)
    limit = next(lim for lim in cluster(view, "frontend").limits if lim.name == "max_connections")
    assert (limit.active, limit.open) == (50, True)
    assert cluster(view, "frontend").open_now


def test_trip_history_keeps_the_last_n_intervals() -> None:
    mesh = Mesh(nodes=("a",))  # history of 5
    trips = [0, 2, 0, 4, 6, 1, 3]
    for n in trips:
        if n:
            mesh["a"].request("backend", "items", "backend.v1", 503, 1.0, flags=["UO"], count=n)
        view = mesh.tick(DT)
    assert cluster(view, "backend.v1").trip_history == tuple(n / DT for n in trips[-5:])


def test_hosts_merge_over_sidecars_and_report_ejections() -> None:
    mesh = Mesh()
    v1 = "backend.v1"
    mesh["frontend-0"].host_views = [host_view(v1, "10.0.0.3", "backend-v1-0", total=100)]
    mesh["frontend-1"].host_views = [host_view(v1, "10.0.0.3", "backend-v1-0", total=50)]
    mesh.tick(DT)
    mesh["frontend-0"].host_views = [host_view(v1, "10.0.0.3", "backend-v1-0", total=130)]
    mesh["frontend-1"].host_views = [
        host_view(v1, "10.0.0.3", "backend-v1-0", total=70, errors=10, ejected_for=30, ejections=2),
        host_view(v1, "10.0.0.4", "backend-v1-1", total=0),
    ]
    mesh.ages = {"frontend-1": 0.25}
    view = mesh.tick(DT)

    h = host(view, v1, "backend-v1-0")
    assert h.rps == pytest.approx((30 + 20) / DT)
    assert h.success_pct == pytest.approx(100 * 40 / 50)
    assert h.ejected and h.ejected_by == ("frontend-1",)
    assert (h.ejection_count, h.address) == (2, "10.0.0.3:15006")
    assert h.returns_in_s == pytest.approx(30 - 0.25)
    assert host(view, v1, "backend-v1-1").success_pct is None
    c = cluster(view, v1)
    assert (c.endpoints, c.healthy, c.ejected) == (2, 1, 1)


def test_a_stale_sidecar_contributes_nothing_but_keeps_its_routes() -> None:
    mesh = Mesh()
    for node in ("frontend-0", "frontend-1"):
        mesh[node].request("backend", "items", "backend.v1", 200, 1.0, count=10)
    mesh.stale = {"frontend-1"}
    view = mesh.tick(DT)
    assert route(view, "backend/items").total == 10
    assert {s.node: s.stale for s in view.sidecars} == {"frontend-0": False, "frontend-1": True}
    mesh.stale = {"frontend-0", "frontend-1"}
    assert route(mesh.tick(DT), "backend/items").rps == 0.0


# -- events -----------------------------------------------------------------------------------


def kinds(view: MeshView) -> list[tuple[str, str]]:
    return [(e.kind, e.text) for e in view.events]


def test_events_mark_transitions_once() -> None:
    mesh = Mesh(nodes=("a",))
    assert mesh.first is not None
    assert kinds(mesh.first) == [("sidecar", "a connected (stream, config v1)")]
    assert kinds(mesh.tick(DT)) == []  # nothing changed, nothing to say

    mesh["a"].breaker_views = [breaker_view("backend.v1", rq_active=20)]
    mesh["a"].host_views = [
        host_view("backend.v1", "10.0.0.3", "backend-v1-0", ejected_for=30, ejections=1)
    ]
    opened = kinds(mesh.tick(DT))
    assert any(k == "breaker" and "backend.v1 open" in t and "20/20" in t for k, t in opened)
    assert ("ejection", "backend-v1-0 ejected from backend.v1 for 30s (ejection #1)") in opened
    assert kinds(mesh.tick(DT)) == []  # still open, still ejected: no repeats

    mesh["a"].breaker_views = [breaker_view("backend.v1", rq_active=2)]
    mesh["a"].host_views = [host_view("backend.v1", "10.0.0.3", "backend-v1-0", ejections=1)]
    closed = kinds(mesh.tick(DT))
    assert ("breaker", "breaker backend.v1 closed") in closed
    assert ("return", "backend-v1-0 returned to backend.v1") in closed


def test_an_ejection_that_follows_a_return_between_two_views_is_an_event() -> None:
    # Under load a returned host that still fails is ejected again within milliseconds,
    # well inside one interval: the views see it ejected twice in a row, with a new count.
    mesh = Mesh(nodes=("a",))
    mesh.tick(DT)
    mesh["a"].host_views = [
        host_view("backend.v1", "10.0.0.3", "backend-v1-0", ejected_for=10, ejections=1)
    ]
    assert ("ejection", "backend-v1-0 ejected from backend.v1 for 10s (ejection #1)") in kinds(
        mesh.tick(DT)
    )
    mesh["a"].host_views = [
        host_view("backend.v1", "10.0.0.3", "backend-v1-0", ejected_for=20, ejections=2)
    ]
    again = kinds(mesh.tick(DT))
    assert (
        "ejection",
        "backend-v1-0 ejected from backend.v1 again for 20s (ejection #2)",
    ) in again
    assert kinds(mesh.tick(DT)) == []  # still the same ejection: no repeat


def test_events_for_lost_sidecars_and_config_versions() -> None:
    mesh = Mesh(nodes=("a", "b"))
    mesh.tick(DT)
    for node in ("a", "b"):
        sc = mesh[node]
        sc.apply(sidecar_config(node, ROUTES, ENDPOINTS, version=7))
    reload = kinds(mesh.tick(DT))
    assert reload == [("reload", "config v7 now served by a, b")]

    mesh.disconnected = {"b"}
    assert ("sidecar", "b lost") in kinds(mesh.tick(DT))
    mesh.disconnected = set()
    assert ("sidecar", "b connected (stream, config v7)") in kinds(mesh.tick(DT))


def test_overflow_without_an_open_sample_still_marks_the_breaker() -> None:
    # Envoy's breakers are momentary: overflows during the interval count as tripping.
    mesh = Mesh(nodes=("a",))
    mesh.tick(DT)
    mesh["a"].request("backend", "items", "backend.v1", 503, 1.0, flags=["UO"], count=8)
    tripping = kinds(mesh.tick(DT))
    assert any("breaker backend.v1 tripping" in t for _, t in tripping)
    assert ("breaker", "breaker backend.v1 closed") in kinds(mesh.tick(DT))


def test_views_without_a_snapshot_yet_list_the_sidecar() -> None:
    view = Aggregator().build(
        [SidecarInput("x", "http://x", None, connected=False, error="cannot connect")], 1.0
    )
    assert view.sidecars[0].connected is False
    assert view.sidecars[0].error == "cannot connect"
    assert view.routes == () and view.events == ()


def test_route_stats_are_sorted_and_stable_keys() -> None:
    mesh = Mesh(nodes=("a",))
    keys = [r.key for r in mesh.tick(DT).routes]
    assert keys == sorted(keys) == ["backend/items", "backend/orders", "payments/charge"]
