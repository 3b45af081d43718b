"""Meshes of synthetic sidecars with traffic, for the telemetry's benchmark and tests.

`mesh_7()` is the example-sized mesh benchmarks/telemetry_aggregate.py has always measured;
`mesh_41()` is issue 15's (benchmarks/scale_mesh.py's): 20 services x 2 replicas + ingress.
`make_sidecars` gives every node a `SyntheticSidecar` whose config has every route and
cluster (as `meshdev.plan` renders them without `calls:`), and `record_interval` one
interval's traffic on them, from a seeded random generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshdev.common.breaker_view import BreakerView
from meshdev.sidecar.admin.views import HostView
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.testing.synthetic_sidecar import SyntheticSidecar, sidecar_config

INTERVAL = 0.25
RPS_PER_ROUTE = 100

Routes = dict[str, dict[str, dict[str, int]]]
Endpoints = dict[str, list[tuple[str, int, str]]]


@dataclass(frozen=True)
class Mesh:
    """Who is in the mesh, what every sidecar's config holds, and who calls which route."""

    nodes: list[str]
    routes: Routes  # routes[vhost][route] = {cluster: weight}: every sidecar has them all
    endpoints: Endpoints
    callers: dict[tuple[str, str], list[str]]  # (vhost, route) -> the nodes calling it
    # node -> its pod's address, for pods with an app behind an inbound listener
    inbound: dict[str, str] = field(default_factory=dict)
    # Stats made at config time, as a real sidecar's compiler makes them (else on first use)
    declared: bool = False

    @property
    def route_count(self) -> int:
        return sum(len(rs) for rs in self.routes.values())


def mesh_7() -> Mesh:
    """The example-sized mesh: an ingress and six app pods; five services with two versions
    each; four routes per service, each called by the ingress and one app pod."""
    services = [f"svc{i}" for i in range(5)]
    nodes = ["ingress", *(f"{s}-0" for s in services), "svc0-1"]
    routes = {s: {f"r{j}": {f"{s}.v1": 90, f"{s}.v2": 10} for j in range(4)} for s in services}
    eps: Endpoints = {}
    for i, s in enumerate(services):
        for k, v in enumerate(("v1", "v2")):
            eps[f"{s}.{v}"] = [(f"10.0.{i}.{2 * k + n}", 15006, f"{s}-{v}-{n}") for n in (0, 1)]
        eps[s] = eps[f"{s}.v1"] + eps[f"{s}.v2"]
    keys = [(s, r) for s in services for r in routes[s]]
    callers = {key: ["ingress", nodes[1 + i % (len(nodes) - 1)]] for i, key in enumerate(keys)}
    return Mesh(nodes, routes, eps, callers)


def mesh_41() -> Mesh:
    """benchmarks/scale_mesh.py's 41-pod mesh: 20 services x 2 replicas + ingress, two routes
    per service (`probe`, `main`), one cluster per service; the ingress calls every route and
    each service's two pods call the next service's (a chain), so every route has 3 callers
    and every app pod serves requests through its inbound listener. Stats are made at config
    time, as the real sidecar makes them: every sidecar shows all 40 routes and 20 clusters."""
    services = [f"s{i:02d}" for i in range(20)]
    pods = {s: [f"{s}-{n}" for n in (0, 1)] for s in services}
    nodes = ["ingress", *(p for s in services for p in pods[s])]
    routes = {s: {r: {s: 100} for r in ("probe", "main")} for s in services}
    eps: Endpoints = {
        s: [(f"10.1.{i}.{n + 2}", 15006, pods[s][n]) for n in (0, 1)]
        for i, s in enumerate(services)
    }
    callers = {
        (s, r): ["ingress", *pods[services[i - 1]]]
        for i, s in enumerate(services)
        for r in routes[s]
    }
    inbound = {pod: a for s in services for a, _, pod in eps[s]}
    return Mesh(nodes, routes, eps, callers, inbound, declared=True)


MESHES = {7: mesh_7, 41: mesh_41}


def make_sidecars(mesh: Mesh) -> dict[str, SyntheticSidecar]:
    out = {}
    for node in mesh.nodes:
        config = sidecar_config(node, mesh.routes, mesh.endpoints, inbound=mesh.inbound.get(node))
        # The stream filtered as the dashboard's client asks for it.
        sc = SyntheticSidecar(config, name_filter=STREAM_FILTER)
        if mesh.declared:
            sc.declare_stats()
        sc.host_views = [
            HostView(c, a, p, pod, False, 0.0, 0, 0, 1, 1, 0, 0, 0)
            for c, members in mesh.endpoints.items()
            for a, p, pod in members
        ]
        sc.breaker_views = [
            BreakerView(c, 1024, 5, 20, 3, 2, 0, 3, 0, False, False, False, False)
            for c in mesh.endpoints
        ]
        out[node] = sc
    return out


def record_interval(mesh: Mesh, sidecars: dict[str, SyntheticSidecar], rng: random.Random) -> None:
    """One interval's traffic: ~RPS_PER_ROUTE on every route, split among its callers; with
    inbound listeners, the pod that served a request counts it too."""
    sent: dict[str, dict[str, int]] = {node: {} for node in mesh.nodes}
    for vhost, rs in mesh.routes.items():
        for route, targets in rs.items():
            callers = mesh.callers[(vhost, route)]
            per_caller = max(1, round(RPS_PER_ROUTE * INTERVAL / len(callers)))
            total = sum(targets.values())
            for node in callers:
                sc = sidecars[node]
                for _ in range(per_caller):
                    x = rng.random() * total
                    for cluster, weight in targets.items():  # noqa: B007 (else: the last)
                        if x < weight:
                            break
                        x -= weight
                    status = 503 if rng.random() < 0.02 else 200
                    flags = ["UO"] if status == 503 and rng.random() < 0.5 else []
                    latency = rng.lognormvariate(2.0, 0.5)
                    sc.request(vhost, route, cluster, status, latency, flags=flags)
                    if mesh.inbound and not flags:
                        sent[node][cluster] = sent[node].get(cluster, 0) + 1
                        pod = mesh.endpoints[cluster][rng.randrange(2)][2]
                        sidecars[pod].inbound(status)
    for node, sc in sidecars.items():
        for k, h in enumerate(sc.host_views):
            if mesh.inbound:
                # A host's counts move on the sidecars that called its cluster, only.
                n = (sent[node].get(h.cluster, 0) + 1) // 2 if h.cluster in sent[node] else 0
            else:
                n = rng.randint(0, 6)
            if n:
                sc.host_views[k] = HostView(
                    h.cluster, h.address, h.port, h.pod, False, 0.0, 0, 0, 1, 1,
                    h.rq_total + n, 0, h.rq_success + n,
                )  # fmt: skip
