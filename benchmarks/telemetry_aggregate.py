"""What the dashboard's telemetry costs at 4 views a second: 7 sidecars, or the 41-pod mesh.

    .venv/bin/python benchmarks/telemetry_aggregate.py                      # 7 sidecars
    .venv/bin/python benchmarks/telemetry_aggregate.py --sidecars 7 --sidecars 41
    .venv/bin/python benchmarks/telemetry_aggregate.py --live 20            # + real HTTP, 20 s
    .venv/bin/python benchmarks/telemetry_aggregate.py --sidecars 41 --profile

The 7-sidecar mesh: an ingress and six app pods; five services with two versions each (15
clusters, 2 endpoints each); four routes per service (20 routes), each called from two sidecars
at 100 req/s in all, so every 250 ms interval carries ~25 requests per route with lognormal
latencies. The 41-sidecar mesh is benchmarks/scale_mesh.py's (issue 15): 20 services x 2
replicas + ingress, two routes per service (40 routes, 20 clusters, 40 hosts), each route
called at 100 req/s by the ingress and the previous service's two pods, every app pod counting
what it serves on its inbound listener, and every route's and cluster's stats made at config
time as a real sidecar makes them. In both, every sidecar's config has every route and cluster
(as `meshdev.plan` renders them without `calls:`).

The loop measures, per view: decoding the stream documents (SSE framing, JSON, snapshot
checks) and aggregating them into a MeshView; `--profile` says where that time goes. `--live`
serves the sidecars' real admin apps from a child process and runs the real TelemetrySource
here, reporting this process's CPU time as a share of one core (the servers' CPU is the
child's, not counted). Sizes given together run in one process, one after the other, so their
ratio is from one machine state.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from meshdev.common.breaker_view import BreakerView
from meshdev.sidecar.admin.views import HostView
from meshdev.telemetry.aggregation.mesh import Aggregator, SidecarInput
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.telemetry.aggregation.topology import Topology, from_config_dump
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.sse import SSEParser
from meshdev.telemetry.io.stream_reader import StreamReader
from meshdev.testing.synthetic_sidecar import SyntheticSidecar, sidecar_config

INTERVAL = 0.25
RPS_PER_ROUTE = 100
WARMUP_ROUNDS = 200

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


def wire_rounds(mesh: Mesh, rounds: int) -> tuple[list[dict[str, bytes]], dict[str, Topology]]:
    """`rounds` intervals of SSE-framed documents per node, as they come off the socket."""
    rng = random.Random(1)
    sidecars = make_sidecars(mesh)
    topologies = {}
    for node, sc in sidecars.items():
        topo = from_config_dump({"config": sc.config.model_dump(mode="json")})
        assert topo is not None
        topologies[node] = topo
    # Warm-up traffic until every status a route answers has its counter, as in a mesh that
    # has run for a while (a new stat name costs a re-index once, not every view).
    for _ in range(WARMUP_ROUNDS):
        record_interval(mesh, sidecars, rng)
    for sc in sidecars.values():
        sc.snapshot()
    out = []
    for _ in range(rounds):
        record_interval(mesh, sidecars, rng)
        out.append(
            {
                node: f"data: {json.dumps(sc.snapshot(), separators=(',', ':'))}\n\n".encode()
                for node, sc in sidecars.items()
            }
        )
    return out, topologies


def loop_benchmark(mesh: Mesh, views: int, profile: bool) -> dict[str, float]:
    rounds, topologies = wire_rounds(mesh, 40)
    readers = {node: StreamReader() for node in mesh.nodes}
    parsers = {node: SSEParser() for node in mesh.nodes}
    aggregator = Aggregator()
    decode_ns: list[int] = []
    aggregate_ns: list[int] = []
    doc_bytes = sum(len(b) for b in rounds[-1].values()) / len(mesh.nodes)
    # CPU time of this thread: what the dashboard process would spend, unlike wall time,
    # which other processes on a busy machine stretch.
    clock = time.thread_time_ns
    profiler = cProfile.Profile() if profile else None
    for k in range(views):
        if profiler is not None and k == 20:
            profiler.enable()
        wire = rounds[k % len(rounds)]
        t0 = clock()
        snaps = {}
        for node, raw in wire.items():
            (event,) = parsers[node].feed(raw)
            snaps[node] = readers[node].parse(json.loads(event.data), k * INTERVAL)
        t1 = clock()
        inputs = [
            SidecarInput(node, f"http://{node}:15000", snaps[node], topologies[node])
            for node in mesh.nodes
        ]
        view = aggregator.build(inputs, k * INTERVAL)
        t2 = clock()
        if k >= 20:  # past warm-up (name caches, first-seen routes)
            decode_ns.append(t1 - t0)
            aggregate_ns.append(t2 - t1)
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    assert len(view.routes) == mesh.route_count, (len(view.routes), mesh.route_count)
    busy = sum(r.total > 0 for r in view.routes)

    def us(xs: list[int]) -> str:
        median, mean = statistics.median(xs) / 1000, statistics.mean(xs) / 1000
        return f"median {median:6.0f} us, mean {mean:6.0f} us"

    total = [a + b for a, b in zip(decode_ns, aggregate_ns, strict=True)]
    share = statistics.mean(total) / 1e9 / INTERVAL * 100
    n = len(mesh.nodes)
    print(
        f"{n} sidecars, {len(view.routes)} routes ({busy} with traffic), "
        f"{len(view.clusters)} clusters, {len(view.hosts)} hosts; "
        f"~{doc_bytes / 1024:.1f} KiB per stream document"
    )
    print(f"CPU per view, decoding {n} documents: {us(decode_ns)}")
    print(f"CPU per view, aggregating them:{' ' * (6 - len(str(n)))}{us(aggregate_ns)}")
    print(f"CPU per view, together:        {' ' * (6 - len(str(n)))}{us(total)}")
    print(f"at 4 views/s: {share:.2f} % of one core")
    return {
        "sidecars": n,
        "doc_kib": round(doc_bytes / 1024, 2),
        "decode_us": statistics.median(decode_ns) / 1000,
        "aggregate_us": statistics.median(aggregate_ns) / 1000,
        "total_us": statistics.median(total) / 1000,
        "share_pct": share,
    }


# -- --live: real admin apps in a child process, the real TelemetrySource here -------------


async def serve(mesh: Mesh, ports_file: Path) -> None:
    from meshdev.sidecar.admin.server import start_admin

    rng = random.Random(2)
    sidecars = make_sidecars(mesh)
    servers = []
    ports = {}
    for node, sc in sidecars.items():
        server = await start_admin(sc, host="127.0.0.1", port=0, token="t", server_info={})
        servers.append(server)
        ports[node] = server.port
    ports_file.write_text(json.dumps(ports))
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while True:
        record_interval(mesh, sidecars, rng)
        # A steady cadence whatever recording costs (at 41 sidecars it is not nothing).
        next_at = max(next_at + INTERVAL, loop.time())
        await asyncio.sleep(next_at - loop.time())


def serve_command(sidecars: int, ports_file: Path) -> list[str]:
    """The child that serves the mesh's admin APIs (dashboard_cpu.py --live starts it too)."""
    return [sys.executable, __file__, "--sidecars", str(sidecars), "--serve", str(ports_file)]


async def live(mesh: Mesh, seconds: float) -> None:
    from meshdev.telemetry.io.source import TelemetrySource

    ports_file = Path(f"/tmp/meshdev-telemetry-bench-{time.time_ns()}.json")
    child = subprocess.Popen(serve_command(len(mesh.nodes), ports_file))
    try:
        while not ports_file.exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        ports = json.loads(ports_file.read_text())
        source = TelemetrySource(
            [(n, f"http://127.0.0.1:{p}") for n, p in ports.items()], interval=INTERVAL
        )
        views: list[MeshView] = []
        task = asyncio.create_task(source.run(views.append))
        await asyncio.sleep(3.0)  # connect and warm up
        warm = len(views)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        n = len(views) - warm
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        last = views[-1]
        print(
            f"live: {n} views in {wall:.1f} s ({n / wall:.2f}/s), "
            f"{sum(s.connected for s in last.sidecars)}/{len(last.sidecars)} sidecars connected, "
            f"{sum(r.total > 0 for r in last.routes)} busy routes"
        )
        print(
            f"live: telemetry process CPU {cpu / wall * 100:.2f} % of one core "
            f"({cpu / max(n, 1) * 1e6:.0f} us per view, sockets and event loop included)"
        )
    finally:
        child.terminate()
        child.wait()
        ports_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--views", type=int, default=2000)
    parser.add_argument(
        "--sidecars",
        type=int,
        choices=sorted(MESHES),
        action="append",
        help="the mesh: 7 (the example's size) or 41 (20 services x 2 + ingress); repeatable",
    )
    parser.add_argument("--live", type=float, metavar="SECONDS", default=0.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process loop")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.sidecars or [7]
    if args.serve:
        asyncio.run(serve(MESHES[sizes[0]](), args.serve))
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = []
    for size in sizes:
        mesh = MESHES[size]()
        results.append(loop_benchmark(mesh, args.views, args.profile))
        if args.live:
            asyncio.run(live(mesh, args.live))
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(
            f"{b['sidecars']} vs {a['sidecars']} sidecars, per view: decode "
            f"{b['decode_us'] / a['decode_us']:.1f}x, aggregate "
            f"{b['aggregate_us'] / a['aggregate_us']:.1f}x, together "
            f"{b['total_us'] / a['total_us']:.1f}x"
        )
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
