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
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from meshdev.sidecar.stats.stream import ConfigIdentity, DeltaCursor, StreamCursor
from meshdev.telemetry.aggregation.mesh import Aggregator, SidecarInput
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.telemetry.aggregation.topology import from_config_dump
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.sse import SSEParser
from meshdev.telemetry.io.stream_reader import StreamReader
from meshdev.testing.telemetry_mesh import MESHES, Mesh, make_sidecars, record_interval

INTERVAL = 0.25
WARMUP_ROUNDS = 200
WARMUP_VIEWS = 20


class Wire:
    """The mesh's sidecars with traffic, and a stream client's cursor on each: `next()` is
    one interval's documents, SSE-framed as they come off the socket (v1: whole, as
    `SyntheticSidecar.snapshot`; v2: changes only, as the admin API sends `?v=2`)."""

    def __init__(self, mesh: Mesh, version: int) -> None:
        self.mesh = mesh
        self.rng = random.Random(1)
        self.sidecars = make_sidecars(mesh)
        self.topologies = {}
        for node, sc in self.sidecars.items():
            topo = from_config_dump({"config": sc.config.model_dump(mode="json")})
            assert topo is not None
            self.topologies[node] = topo
        # Warm-up traffic until every status a route answers has its counter, as in a mesh
        # that has run for a while (a new stat name costs a re-index once, not every view).
        for _ in range(WARMUP_ROUNDS):
            record_interval(mesh, self.sidecars, self.rng)
        name_filter = re.compile(STREAM_FILTER)
        cursor_type = DeltaCursor if version == 2 else StreamCursor
        self.cursors = {
            node: cursor_type(sc, ConfigIdentity(), name_filter)
            for node, sc in self.sidecars.items()
        }

    def next(self) -> dict[str, bytes]:
        record_interval(self.mesh, self.sidecars, self.rng)
        return {
            node: f"data: {json.dumps(c.next_snapshot(), separators=(',', ':'))}\n\n".encode()
            for node, c in self.cursors.items()
        }


def loop_benchmark(mesh: Mesh, views: int, version: int, profile: bool) -> dict[str, float]:
    wire = Wire(mesh, version)
    readers = {node: StreamReader() for node in mesh.nodes}
    parsers = {node: SSEParser() for node in mesh.nodes}
    aggregator = Aggregator()
    decode_ns: list[int] = []
    aggregate_ns: list[int] = []
    doc_bytes: list[int] = []
    # CPU time of this thread: what the dashboard process would spend, unlike wall time,
    # which other processes on a busy machine stretch. Making the traffic and the documents
    # (the sidecars' work) is outside the clock.
    clock = time.thread_time_ns
    profiler = cProfile.Profile() if profile else None
    for k in range(views):
        if profiler is not None:
            profiler.disable()  # the sidecars' side is not the dashboard's
        docs = wire.next()
        if profiler is not None and k >= WARMUP_VIEWS:
            profiler.enable()
        t0 = clock()
        snaps = {}
        for node, raw in docs.items():
            (event,) = parsers[node].feed(raw)
            snaps[node] = readers[node].parse(json.loads(event.data), k * INTERVAL)
        t1 = clock()
        inputs = [
            SidecarInput(node, f"http://{node}:15000", snaps[node], wire.topologies[node])
            for node in mesh.nodes
        ]
        view = aggregator.build(inputs, k * INTERVAL)
        t2 = clock()
        if k >= WARMUP_VIEWS:  # past warm-up (name caches, first-seen routes, whole documents)
            decode_ns.append(t1 - t0)
            aggregate_ns.append(t2 - t1)
            doc_bytes.append(sum(len(b) for b in docs.values()))
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
    kib = statistics.mean(doc_bytes) / n / 1024
    print(
        f"{n} sidecars, stream v{version}: {len(view.routes)} routes ({busy} with traffic), "
        f"{len(view.clusters)} clusters, {len(view.hosts)} hosts; "
        f"~{kib:.1f} KiB per stream document"
    )
    pad = " " * (6 - len(str(n)))
    print(f"CPU per view, decoding {n} documents: {us(decode_ns)}")
    print(f"CPU per view, aggregating them:{pad}{us(aggregate_ns)}")
    print(f"CPU per view, together:        {pad}{us(total)}")
    print(f"at 4 views/s: {share:.2f} % of one core")
    return {
        "sidecars": n,
        "v": version,
        "doc_kib": round(kib, 2),
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
    parser.add_argument("--views", type=int, default=400)
    parser.add_argument(
        "--stream",
        type=int,
        choices=(1, 2),
        action="append",
        help="the /stats/stream version decoded: 1 (whole documents) or 2 (changes, what the "
        "dashboard's client asks for); repeatable, default 2",
    )
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
        for version in args.stream or [2]:
            results.append(loop_benchmark(mesh, args.views, version, args.profile))
        if args.live:
            asyncio.run(live(mesh, args.live))
    for a in results:
        for b in results:
            if b["sidecars"] > a["sidecars"] and b.get("v") == a.get("v"):
                print(
                    f"{b['sidecars']} vs {a['sidecars']} sidecars (v{a['v']}), per view: "
                    f"decode {b['decode_us'] / a['decode_us']:.1f}x, aggregate "
                    f"{b['aggregate_us'] / a['aggregate_us']:.1f}x, together "
                    f"{b['total_us'] / a['total_us']:.1f}x"
                )
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
