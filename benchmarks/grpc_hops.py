"""gRPC unary calls through the mesh against HAProxy in HTTP/2 mode, same upstream, same run.

One grpcio server (a generic unary echo, in its own process), reached five ways:
  direct        straight to the server;
  haproxy       HAProxy (Debian's), `proto h2` both sides, one thread;
  sidecar       one `meshdev sidecar` (outbound listener -> an http2 cluster);
  haproxy_2     two HAProxies in a row (the two hops of a mesh, caller's and callee's);
  sidecar_2     two sidecars: the caller's outbound -> the callee's inbound -> the server.
Every proxy is pinned to one core, the server and this script's grpcio client to the other.
Measured per target, in interleaved rounds: throughput with C calls in flight for D seconds
(closed loop over one channel, as a gRPC client multiplexes), and the latency of sequential
calls (p50 / p99, and added over direct).

    apt-get install -y haproxy
    .venv/bin/python benchmarks/grpc_hops.py [--rounds 2] [--duration 3] [--concurrency 32]
        [--calls 2000]

Prints a summary to stderr and the JSON result to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.sidecar_throughput import free_port, running
from meshdev.common import sidecar_config as sc

PROXY_CORE = "0"
LOAD_CORE = "1"
TARGETS = ("direct", "haproxy", "sidecar", "haproxy_2", "sidecar_2")
TOKEN = "bench-token"

SERVER = """\
import asyncio, sys
import grpc

async def echo(request, context):
    return request

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""

HAPROXY = """\
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend f
    bind 127.0.0.1:{port} proto h2
    default_backend b
backend b
    server s 127.0.0.1:{upstream} proto h2
"""


def sidecar_json(kind: str, port: int, upstream: int) -> str:
    cluster = "backend" if kind == "outbound" else "inbound|50051"
    listener: dict[str, Any] = {"name": kind, "kind": kind, "address": "127.0.0.1", "port": port}
    vhosts: list[dict[str, Any]] = []
    if kind == "inbound":
        listener["cluster"] = cluster
    else:
        route: dict[str, Any] = {"name": "calls", "match": {"prefix": "/"}}
        route["clusters"] = [{"cluster": cluster, "weight": 1}]
        vhosts = [{"name": "backend", "domains": ["backend"], "routes": [route]}]
    config = sc.SidecarConfig.model_validate(
        {
            "version": 1,
            "mesh": "bench",
            "node": kind,
            "admin": {"address": "127.0.0.1", "port": free_port()},
            "listeners": [listener],
            "virtual_hosts": vhosts,
            "clusters": [
                {
                    "name": cluster,
                    "http2": True,
                    "endpoints": [{"address": "127.0.0.1", "port": upstream, "pod": "p"}],
                }
            ],
            "access_log": "off",
        }
    )
    return config.model_dump_json()


async def throughput(port: int, seconds: float, concurrency: int) -> float:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.default_authority", "backend"), ("grpc.enable_http_proxy", 0)],
    ) as ch:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary("/bench.Echo/Call")
        await call(b"warm", timeout=10)
        done = 0
        stop = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                await call(b"x" * 64, timeout=10)
                done += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.monotonic() - t0)


async def latencies(port: int, calls: int) -> list[float]:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.default_authority", "backend"), ("grpc.enable_http_proxy", 0)],
    ) as ch:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary("/bench.Echo/Call")
        for _ in range(50):
            await call(b"warm", timeout=10)
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await call(b"x" * 64, timeout=10)
            out.append((time.perf_counter() - t0) * 1000.0)
        return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("haproxy is not installed (apt-get install -y haproxy)")
    meshdev = Path(sys.executable).with_name("meshdev")
    port = {t: free_port() for t in TARGETS}
    inbound = free_port()
    hap_mid = free_port()
    env = {**os.environ, "MESHDEV_ADMIN_TOKEN": TOKEN, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    rates: dict[str, list[float]] = {t: [] for t in TARGETS}
    lat: dict[str, list[float]] = {t: [] for t in TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "server.py").write_text(SERVER)
        (d / "h1.cfg").write_text(HAPROXY.format(port=port["haproxy"], upstream=port["direct"]))
        (d / "h2a.cfg").write_text(HAPROXY.format(port=port["haproxy_2"], upstream=hap_mid))
        (d / "h2b.cfg").write_text(HAPROXY.format(port=hap_mid, upstream=port["direct"]))
        (d / "s1.json").write_text(sidecar_json("outbound", port["sidecar"], port["direct"]))
        (d / "s2a.json").write_text(sidecar_json("outbound", port["sidecar_2"], inbound))
        (d / "s2b.json").write_text(sidecar_json("inbound", inbound, port["direct"]))
        car = [str(meshdev), "sidecar", "--config"]
        with (
            running([sys.executable, f"{tmp}/server.py", str(port["direct"])], LOAD_CORE,
                    port["direct"]),
            running(["haproxy", "-f", f"{tmp}/h1.cfg"], PROXY_CORE, port["haproxy"]),
            running(["haproxy", "-f", f"{tmp}/h2b.cfg"], PROXY_CORE, hap_mid),
            running(["haproxy", "-f", f"{tmp}/h2a.cfg"], PROXY_CORE, port["haproxy_2"]),
            running([*car, f"{tmp}/s1.json"], PROXY_CORE, port["sidecar"], env),
            running([*car, f"{tmp}/s2b.json"], PROXY_CORE, inbound, env),
            running([*car, f"{tmp}/s2a.json"], PROXY_CORE, port["sidecar_2"], env),
        ):  # fmt: skip
            os.sched_setaffinity(0, {int(LOAD_CORE)})
            for r in range(args.rounds):
                for t in TARGETS:
                    rates[t].append(
                        asyncio.run(throughput(port[t], args.duration, args.concurrency))
                    )
                    lat[t] += asyncio.run(latencies(port[t], args.calls))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    result: dict[str, Any] = {"targets": {}}
    base50, base99 = pct(lat["direct"], 0.5), pct(lat["direct"], 0.99)
    print(
        f"grpcio unary, {args.concurrency} in flight x {args.duration:g}s, then "
        f"{args.calls} sequential calls, x {args.rounds} rounds",
        file=sys.stderr,
    )
    for t in TARGETS:
        p50, p99 = pct(lat[t], 0.5), pct(lat[t], 0.99)
        best = max(rates[t])
        result["targets"][t] = {
            "calls_per_s_best": round(best),
            "calls_per_s_median": round(statistics.median(rates[t])),
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "added_p50_ms": round(p50 - base50, 3),
            "added_p99_ms": round(p99 - base99, 3),
        }
        print(
            f"  {t:<10} {best:8.0f} calls/s   p50 {p50:.3f} ms (+{p50 - base50:.3f})"
            f"   p99 {p99:.3f} ms (+{p99 - base99:.3f})",
            file=sys.stderr,
        )
    for a, b in (("sidecar", "haproxy"), ("sidecar_2", "haproxy_2")):
        ratio = max(rates[a]) / max(rates[b])
        result[f"{a}/{b}"] = round(ratio, 2)
        print(f"  {a}/{b} throughput {ratio:.2f}x", file=sys.stderr)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
