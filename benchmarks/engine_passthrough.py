"""Bare HTTP/1.1 engine throughput against HAProxy (temporary micro-benchmark).

The engine (meshdev.sidecar.http + upstream, under uvloop) runs as a trivial pass-through
proxy: strip hop-by-hop headers, forward over a pooled keep-alive connection, copy the answer
back. HAProxy proxies the same nginx `return 200` upstream. Both proxies are pinned to one
core, wrk and nginx to the other, and wrk measures keep-alive throughput of each in turn.

    apt-get install -y nginx haproxy wrk
    .venv/bin/python benchmarks/engine_passthrough.py [--duration 5] [--connections 32]

Prints requests/s for nginx direct, HAProxy and the engine, and engine/HAProxy. The full
request pipeline costs more than this bare engine, so this ratio should sit well above the
sidecar's 0.35x budget.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PROXY_CORE = "0"
LOAD_CORE = "1"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
    | {"upgrade"}
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  fastcgi_temp_path {dir};
  uwsgi_temp_path {dir};
  scgi_temp_path {dir};
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""

HAPROXY_CONF = """
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 127.0.0.1:{upstream}
"""


def serve_engine(port: int, upstream: int) -> None:
    """The engine as a pass-through proxy (runs in the child process)."""
    import uvloop

    from meshdev.common.sidecar_config import Limits
    from meshdev.sidecar.http import Request, ResponseWriter, start_server
    from meshdev.sidecar.upstream import ConnectionBudget, UpstreamPool

    pool = UpstreamPool("127.0.0.1", upstream, ConnectionBudget())

    async def proxy(req: Request, writer: ResponseWriter) -> None:
        headers = [h for h in req.headers if h[0] not in HOP_BY_HOP]
        body = req.body if req.body.has_body else None
        resp = await pool.request(req.method, req.origin_form, headers, body, connect_timeout=5)
        out = [h for h in resp.headers if h[0] not in HOP_BY_HOP]
        whole = resp.buffered()
        if whole is not None:
            await writer.start(resp.status, out)
            await writer.write(whole)
        else:
            await writer.start(resp.status, out)
            async for chunk in resp:
                await writer.write(chunk)
        await writer.end()

    async def main() -> None:
        await start_server(proxy, "127.0.0.1", port, Limits())
        await asyncio.Event().wait()

    uvloop.run(main())


@contextlib.contextmanager
def running(cmd: list[str], core: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["taskset", "-c", core, *cmd])
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wrk(port: int, duration: int, connections: int) -> tuple[float, int]:
    """Requests/s and the request count of one wrk run."""
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}/"], check=True, capture_output=True, text=True
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rate is None or count is None or "Non-2xx" in out or "connect " in out:
        raise RuntimeError(f"wrk failed:\n{out}")
    return float(rate.group(1)), int(count.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_engine(*args.serve)
        return
    for tool in ("nginx", "haproxy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx haproxy wrk")
    d, c = args.duration, args.connections
    names = ("nginx direct", "haproxy", "engine")
    results: dict[str, list[float]] = {n: [] for n in names}
    # CPU time per request of each proxy: unlike req/s, barely moved by other load on the
    # machine, and its inverse ratio is the throughput ratio on a quiet one.
    cpu_us: dict[str, list[float]] = {n: [] for n in names[1:]}
    with tempfile.TemporaryDirectory() as tmp:
        nginx_port, haproxy_port, engine_port = free_port(), free_port(), free_port()
        (Path(tmp) / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp, port=nginx_port))
        (Path(tmp) / "haproxy.cfg").write_text(
            HAPROXY_CONF.format(port=haproxy_port, upstream=nginx_port)
        )
        engine_cmd = [sys.executable, __file__, "--serve", str(engine_port), str(nginx_port)]
        root = str(Path(__file__).resolve().parents[1])
        os.environ["PYTHONPATH"] = root + os.pathsep + os.environ.get("PYTHONPATH", "")
        ports = dict(zip(names, (nginx_port, haproxy_port, engine_port), strict=True))
        with (
            running(["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp], LOAD_CORE, nginx_port),
            running(["haproxy", "-f", f"{tmp}/haproxy.cfg"], PROXY_CORE, haproxy_port) as hap,
            running(engine_cmd, PROXY_CORE, engine_port) as eng,
        ):
            pids = {"haproxy": hap.pid, "engine": eng.pid}
            for name in names:
                wrk(ports[name], 1, c)  # warm-up: connections, pools, caches
            # Interleaved rounds, so a noisy neighbour hurts every target alike.
            for _ in range(args.rounds):
                for name in names:
                    before = cpu_seconds(pids[name]) if name in pids else 0.0
                    rate, count = wrk(ports[name], d, c)
                    results[name].append(rate)
                    if name in pids:
                        cpu_us[name].append((cpu_seconds(pids[name]) - before) / count * 1e6)
            rss = rss_mb(eng.pid)
    best = {n: max(v) for n, v in results.items()}
    ratios = [e / h for e, h in zip(results["engine"], results["haproxy"], strict=True)]
    print(
        f"wrk -t1 -c{c} -d{d}s x{args.rounds} rounds; proxies on core {PROXY_CORE}, "
        f"wrk+nginx on core {LOAD_CORE}; best of rounds:"
    )
    for name in names:
        runs = " ".join(f"{v:.0f}" for v in results[name])
        print(f"{name:14} {best[name]:10.0f} req/s   (rounds: {runs})")
    print(f"engine rss     {rss:10.1f} MB")
    cpu = {n: min(v) for n, v in cpu_us.items()}
    print(
        f"cpu/request    haproxy {cpu['haproxy']:.1f} us, engine {cpu['engine']:.1f} us "
        f"(best of rounds) -> engine/haproxy by cpu {cpu['haproxy'] / cpu['engine']:.2f}x"
    )
    per_round = " ".join(f"{r:.2f}" for r in ratios)
    print(
        f"engine/haproxy {best['engine'] / best['haproxy']:10.2f}x best-of (per round: {per_round})"
    )


if __name__ == "__main__":
    main()
