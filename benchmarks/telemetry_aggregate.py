"""What the dashboard's telemetry costs: 7 sidecars, 20 routes, 4 views a second.

    .venv/bin/python benchmarks/telemetry_aggregate.py            # in-process loop
    .venv/bin/python benchmarks/telemetry_aggregate.py --live 20  # + real HTTP for 20 s

The mesh: an ingress and six app pods; five services with two versions each (15 clusters,
2 endpoints each); four routes per service (20 routes), each called from two sidecars at
100 req/s in all, so every 250 ms interval carries ~25 requests per route with lognormal
latencies. Every sidecar's config has every route and cluster (as `meshdev.plan` renders).

The loop measures, per view: decoding the 7 stream documents (SSE framing, JSON, snapshot
checks) and aggregating them into a MeshView. `--live` serves the 7 sidecars' real admin apps
from a child process and runs the real TelemetrySource here, reporting this process's CPU time
as a share of one core (the servers' CPU is the child's, not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
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
SERVICES = [f"svc{i}" for i in range(5)]
VERSIONS = ("v1", "v2")
ROUTES_PER_SERVICE = 4
NODES = ["ingress", *(f"{s}-0" for s in SERVICES), "svc0-1"]
RPS_PER_ROUTE = 100
WARMUP_ROUNDS = 200


def mesh_routes() -> dict[str, dict[str, dict[str, int]]]:
    return {
        s: {f"r{j}": {f"{s}.v1": 90, f"{s}.v2": 10} for j in range(ROUTES_PER_SERVICE)}
        for s in SERVICES
    }


def endpoints() -> dict[str, list[tuple[str, int, str]]]:
    out: dict[str, list[tuple[str, int, str]]] = {}
    for i, s in enumerate(SERVICES):
        for k, v in enumerate(VERSIONS):
            out[f"{s}.{v}"] = [(f"10.0.{i}.{2 * k + n}", 15006, f"{s}-{v}-{n}") for n in (0, 1)]
        out[s] = out[f"{s}.v1"] + out[f"{s}.v2"]
    return out


def callers(route_index: int) -> list[str]:
    """Two sidecars call each route: the ingress and one app pod."""
    return ["ingress", NODES[1 + route_index % (len(NODES) - 1)]]


def make_sidecars() -> dict[str, SyntheticSidecar]:
    eps = endpoints()
    out = {}
    for node in NODES:
        # The stream filtered as the dashboard's client asks for it.
        sc = SyntheticSidecar(sidecar_config(node, mesh_routes(), eps), name_filter=STREAM_FILTER)
        sc.host_views = [
            HostView(c, a, p, pod, False, 0.0, 0, 0, 1, 1, 0, 0, 0)
            for c, members in eps.items()
            for a, p, pod in members
        ]
        sc.breaker_views = [
            BreakerView(c, 1024, 5, 20, 3, 2, 0, 3, 0, False, False, False, False) for c in eps
        ]
        out[node] = sc
    return out


def record_interval(sidecars: dict[str, SyntheticSidecar], rng: random.Random) -> None:
    per_caller = max(1, round(RPS_PER_ROUTE * INTERVAL / 2))
    i = 0
    for s in SERVICES:
        for j in range(ROUTES_PER_SERVICE):
            for node in callers(i):
                sc = sidecars[node]
                for _ in range(per_caller):
                    version = "v1" if rng.random() < 0.9 else "v2"
                    status = 503 if rng.random() < 0.02 else 200
                    flags = ["UO"] if status == 503 and rng.random() < 0.5 else []
                    latency = rng.lognormvariate(2.0, 0.5)
                    sc.request(s, f"r{j}", f"{s}.{version}", status, latency, flags=flags)
            i += 1
    for sc in sidecars.values():
        for k, h in enumerate(sc.host_views):
            n = rng.randint(0, 6)
            sc.host_views[k] = HostView(
                h.cluster, h.address, h.port, h.pod, False, 0.0, 0, 0, 1, 1,
                h.rq_total + n, 0, h.rq_success + n,
            )  # fmt: skip


def wire_rounds(rounds: int) -> tuple[list[dict[str, bytes]], dict[str, Topology]]:
    """`rounds` intervals of SSE-framed documents per node, as they come off the socket."""
    rng = random.Random(1)
    sidecars = make_sidecars()
    topologies = {}
    for node, sc in sidecars.items():
        topo = from_config_dump({"config": sc.config.model_dump(mode="json")})
        assert topo is not None
        topologies[node] = topo
    # Warm-up traffic until every status a route answers has its counter, as in a mesh that
    # has run for a while (a new stat name costs a re-index once, not every view).
    for _ in range(WARMUP_ROUNDS):
        record_interval(sidecars, rng)
    for sc in sidecars.values():
        sc.snapshot()
    out = []
    for _ in range(rounds):
        record_interval(sidecars, rng)
        out.append(
            {
                node: f"data: {json.dumps(sc.snapshot(), separators=(',', ':'))}\n\n".encode()
                for node, sc in sidecars.items()
            }
        )
    return out, topologies


def loop_benchmark(views: int) -> None:
    rounds, topologies = wire_rounds(40)
    readers = {node: StreamReader() for node in NODES}
    parsers = {node: SSEParser() for node in NODES}
    aggregator = Aggregator()
    decode_ns: list[int] = []
    aggregate_ns: list[int] = []
    doc_bytes = sum(len(b) for b in rounds[-1].values()) / len(NODES)
    # CPU time of this thread: what the dashboard process would spend, unlike wall time,
    # which other processes on a busy machine stretch.
    clock = time.thread_time_ns
    for k in range(views):
        wire = rounds[k % len(rounds)]
        t0 = clock()
        snaps = {}
        for node, raw in wire.items():
            (event,) = parsers[node].feed(raw)
            snaps[node] = readers[node].parse(json.loads(event.data), k * INTERVAL)
        t1 = clock()
        inputs = [
            SidecarInput(node, f"http://{node}:15000", snaps[node], topologies[node])
            for node in NODES
        ]
        view = aggregator.build(inputs, k * INTERVAL)
        t2 = clock()
        if k >= 20:  # past warm-up (name caches, first-seen routes)
            decode_ns.append(t1 - t0)
            aggregate_ns.append(t2 - t1)
    assert len(view.routes) == len(SERVICES) * ROUTES_PER_SERVICE
    busy = sum(r.total > 0 for r in view.routes)

    def us(xs: list[int]) -> str:
        median, mean = statistics.median(xs) / 1000, statistics.mean(xs) / 1000
        return f"median {median:6.0f} us, mean {mean:6.0f} us"

    total = [a + b for a, b in zip(decode_ns, aggregate_ns, strict=True)]
    share = statistics.mean(total) / 1e9 / INTERVAL * 100
    print(
        f"{len(NODES)} sidecars, {len(view.routes)} routes ({busy} with traffic), "
        f"{len(view.clusters)} clusters, {len(view.hosts)} hosts; "
        f"~{doc_bytes / 1024:.0f} KiB per stream document"
    )
    print(f"CPU per view, decoding 7 documents: {us(decode_ns)}")
    print(f"CPU per view, aggregating them:     {us(aggregate_ns)}")
    print(f"CPU per view, together:             {us(total)}")
    print(f"at 4 views/s: {share:.2f} % of one core")


# -- --live: real admin apps in a child process, the real TelemetrySource here -------------


async def serve(ports_file: Path) -> None:
    from meshdev.sidecar.admin.server import start_admin

    rng = random.Random(2)
    sidecars = make_sidecars()
    servers = []
    ports = {}
    for node, sc in sidecars.items():
        server = await start_admin(sc, host="127.0.0.1", port=0, token="t", server_info={})
        servers.append(server)
        ports[node] = server.port
    ports_file.write_text(json.dumps(ports))
    while True:
        record_interval(sidecars, rng)
        await asyncio.sleep(INTERVAL)


async def live(seconds: float) -> None:
    from meshdev.telemetry.io.source import TelemetrySource

    ports_file = Path(f"/tmp/meshdev-telemetry-bench-{time.time_ns()}.json")
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(ports_file)])
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
        await asyncio.sleep(2.0)  # connect and warm up
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
    parser.add_argument("--live", type=float, metavar="SECONDS", default=0.0)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    loop_benchmark(args.views)
    if args.live:
        asyncio.run(live(args.live))


if __name__ == "__main__":
    main()
