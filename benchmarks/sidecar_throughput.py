"""The full sidecar against HAProxy and nginx: max throughput, CPU per request, added latency.

One run, one machine, one upstream (nginx `return 200`), four ways to reach it:
  direct        straight to nginx;
  sidecar       `meshdev sidecar --config <JSON>` as a real process, through its outbound
                listener with `Host: backend`: a route with every policy configured but not
                tripping (timeout, retries with a per-try timeout, a 0 % abort and delay fault,
                a rate limit far above the load, circuit-breaker limits far above it, outlier
                detection, least_request) and its access log written to a file;
  haproxy       HAProxy (Debian's), one thread, server-side keep-alive;
  nginx_proxy   nginx (Debian's) as a reverse proxy, one worker, upstream keep-alive.

Every proxy is pinned to one core, wrk, nginx and this script (meshdev's load generator) to
the other. Measured, in interleaved rounds so a noisy neighbour hurts every target alike:
- max throughput: wrk keep-alive (-t1 -cC -dDs) per target; sidecar and nginx_proxy as a ratio
  to haproxy (best-of, and the median of the per-round ratios);
- CPU microseconds per request of each proxy process (all its threads) over each wrk run: the
  stable number on a shared machine, since it barely moves when a neighbour steals cycles;
  haproxy's / the sidecar's is the throughput ratio both would reach once the proxy core is
  what limits them;
- added latency at a constant open-loop rate (meshdev's loadgen, default 500 req/s for 10 s):
  service time p50/p99 through each proxy minus direct, per round;
- the sidecar's VmRSS (and VmHWM) after all of it, and which admin server it ran (aiohttp or
  not, read from the shared objects it has mapped).
Afterwards the sidecar's own stats must show that no policy tripped (no retry, fault, rate
limit, overflow, timeout) and the access log must hold a line per request.

    apt-get install -y nginx haproxy wrk
    .venv/bin/python benchmarks/sidecar_throughput.py [--rounds 3] [--duration 5]
        [--connections 32] [--rps 500] [--load-seconds 10] [--nice -10] [--profile 10]

`--nice -10` runs every process at that niceness: on a shared machine the neighbours' time
slices otherwise put 1-30 ms into every proxy's p99. `--profile S` samples the sidecar with
py-spy during one more wrk run of S seconds and reports its CPU by layer (engine, pipeline,
event loop, access-log thread) and its top functions.

Prints a summary to stderr and the JSON result to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meshdev.common import sidecar_config as sc
from meshdev.common.loop import run
from meshdev.loadgen import LoadSpec, run_load

ROOT = Path(__file__).resolve().parents[1]
PROXY_CORE = "0"
LOAD_CORE = "1"
TARGETS = ("direct", "sidecar", "haproxy", "nginx_proxy")
PROXIES = TARGETS[1:]
HOST = "backend"  # the virtual host the sidecar routes; sent to every target alike
TOKEN = "bench-token"
# Budgets (DESIGN.md "Performance budgets").
MIN_RATIO = 0.35
MAX_ADDED_P50_MS = 0.5
MAX_ADDED_P99_MS = 2.0
MAX_RSS_MB = 50.0

NGINX_UPSTREAM = """
worker_processes 1;
daemon off;
pid {dir}/upstream.pid;
error_log {dir}/upstream.err warn;
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

# One process (no master), so its CPU time is all in the pid we started.
NGINX_PROXY = """
worker_processes 1;
master_process off;
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir};
  proxy_temp_path {dir};
  fastcgi_temp_path {dir};
  uwsgi_temp_path {dir};
  scgi_temp_path {dir};
  keepalive_requests 1000000;
  upstream up {{
    server 127.0.0.1:{upstream};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

HAPROXY = """
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


def sidecar_config(listen: int, admin: int, upstream: int, access_log: str) -> sc.SidecarConfig:
    """One outbound listener; `backend`'s one route carries every policy, none tripping."""
    far = 1_000_000  # far above anything wrk can push through one core
    route = sc.Route(
        name="items",
        match=sc.RouteMatch(prefix="/"),
        clusters=(sc.WeightedCluster(cluster="backend", weight=1),),
        timeout=15.0,
        retries=sc.RetryPolicy(
            attempts=2, retry_on=("5xx", "reset", "connect-failure"), per_try_timeout=5.0
        ),
        fault=sc.Fault(
            abort=sc.FaultAbort(status=503, percent=0),
            delay=sc.FaultDelay(fixed=0.1, percent=0),
        ),
        rate_limit=sc.RateLimit(requests_per_second=far, burst=far),
    )
    cluster = sc.Cluster(
        name="backend",
        endpoints=(sc.Endpoint(address="127.0.0.1", port=upstream, pod="nginx-0"),),
        lb="least_request",
        circuit_breaker=sc.CircuitBreaker(
            max_connections=10_000,
            max_pending_requests=10_000,
            max_requests=10_000,
            max_retries=1_000,
        ),
        outlier_detection=sc.OutlierDetection(
            consecutive_5xx=5, interval=10.0, base_ejection_time=30.0, max_ejection_percent=50
        ),
    )
    return sc.SidecarConfig(
        version=1,
        mesh="bench",
        node="frontend-0",
        service="frontend",
        admin=sc.Admin(address="127.0.0.1", port=admin),
        listeners=(
            sc.Listener(name="outbound", kind="outbound", address="127.0.0.1", port=listen),
        ),
        virtual_hosts=(
            sc.VirtualHost(
                name=HOST, domains=(HOST, f"{HOST}:80", f"{HOST}.bench"), routes=(route,)
            ),
        ),
        clusters=(cluster,),
        access_log=access_log,
    )


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def running(
    cmd: list[str], core: str, port: int, env: dict[str, str] | None = None, nice: int = 0
) -> Iterator[subprocess.Popen[bytes]]:
    # nice and taskset exec the command, so the pid is the proxy's own.
    prefix = ["nice", "-n", str(nice)] if nice else []
    proc = subprocess.Popen(
        [*prefix, "taskset", "-c", core, *cmd], env=env, stdout=subprocess.DEVNULL
    )
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Forked:
    def __init__(self, pid: int) -> None:
        self.pid = pid


@contextlib.contextmanager
def forked_sidecar(
    config: str, core: str, port: int, env: dict[str, str], log: str, nice: int = 0
) -> Iterator[_Forked]:
    """The sidecar as the process runtime starts it: forked by a sidecar template (which runs
    pinned and niced as the exec'd one would; its child inherits both)."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    command = [sys.executable, "-m", "meshdev.sidecar.template", "--mesh", "bench", " " * 256]
    template = subprocess.Popen(
        [*prefix, "taskset", "-c", core, *command],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert template.stdin is not None and template.stdout is not None
    argv = [sys.executable, "-m", "meshdev", "sidecar", "--config", config]
    request = {"id": 1, "argv": argv, "env": env, "config": config, "log": log, "cwd": "/"}
    template.stdin.write(json.dumps(request).encode() + b"\n")
    template.stdin.flush()
    pid = int(json.loads(template.stdout.readline())["pid"])
    try:
        wait_port(port, template)
        yield _Forked(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        while template.poll() is None:
            line = template.stdout.readline()
            if not line or json.loads(line).get("exited") == pid:
                break
        template.stdin.close()
        template.wait(10)
        template.stdout.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def admin_server(pid: int) -> str:
    """Which admin server the sidecar runs, by the shared objects it has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "aiohttp" if "/aiohttp/" in maps else "no aiohttp"


# -- measurements -----------------------------------------------------------------------------


def wrk(target: str, port: int, duration: int, connections: int) -> tuple[float, int]:
    """Requests/s and the request count of one wrk run (all answers must be 2xx)."""
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s"]
    out = subprocess.run(
        [*cmd, "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rate is None or count is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk on {target} failed:\n{out}")
    return float(rate.group(1)), int(count.group(1))


def open_loop(target: str, port: int, rps: float, seconds: float) -> dict[str, float]:
    spec = LoadSpec(
        f"http://127.0.0.1:{port}/", rps=rps, duration=seconds, headers=(("Host", HOST),)
    )
    result = run(run_load(spec))
    if result.error_count or set(result.status) != {200}:
        raise RuntimeError(f"load on {target}: {result.status} {result.errors}")
    st, lat = result.service_time, result.latency
    return {
        "service_p50_ms": st.quantile(0.5),
        "service_p99_ms": st.quantile(0.99),
        "latency_p50_ms": lat.quantile(0.5),
        "latency_p99_ms": lat.quantile(0.99),
        "requests": float(result.requests),
    }


def sidecar_stats(admin: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?format=json", timeout=10) as r:
        doc = json.load(r)
    out: dict[str, float] = {}
    for s in doc["stats"]:
        if "value" in s:
            out[s["name"]] = s["value"]
    return out


def tripped(stats: dict[str, float]) -> dict[str, float]:
    """Counters that must stay 0 when no policy trips."""
    watch = (
        "cluster.backend.upstream_rq_retry",
        "cluster.backend.upstream_rq_timeout",
        "cluster.backend.upstream_rq_per_try_timeout",
        "cluster.backend.upstream_rq_pending_overflow",
        "cluster.backend.upstream_cx_overflow",
        "cluster.backend.outlier_detection.ejections_enforced_total",
        "http.outbound.no_route",
        "http.outbound.fault.aborts_injected",
        "http.outbound.fault.delays_injected",
        "http_local_rate_limit.rate_limited",
        "access_log.dropped",
    )
    return {k: stats[k] for k in watch if stats.get(k)}


# Where a sample's innermost Python frame lives says whose time it is. Without --native,
# py-spy charges a C call (a socket write, say) to the Python line that made it.
# The upstream room also holds the cluster policies (balancer, breaker, outlier): only its
# client modules are the engine.
ENGINE_FILES = (
    "sidecar/http/",
    *(f"sidecar/upstream/{name}.py" for name in ("__init__", "budget", "connection", "errors")),
    *(f"sidecar/upstream/{name}.py" for name in ("pool", "request", "response")),
)
PIPELINE_FILES = (
    "sidecar/proxy/",
    "sidecar/router/",
    "sidecar/filters/",
    "sidecar/stats/",
    "sidecar/dataplane.py",
    "sidecar/compiled.py",
    "sidecar/compiler.py",
    "common/histogram.py",
    "sidecar/upstream/balancer.py",
    "sidecar/upstream/breaker.py",
    "sidecar/upstream/outlier.py",
    "sidecar/upstream/cluster.py",
    "sidecar/upstream/host.py",
    "sidecar/admin/live_views.py",
)


def sample(pid: int, port: int, seconds: int, connections: int, tmp: Path) -> dict[str, Any]:
    """py-spy's view of the sidecar under wrk: CPU shares by layer and the top functions."""
    out = tmp / "profile.txt"
    spy = subprocess.Popen(
        [
            *(str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid)),
            *("--rate", "250", "--format", "raw", "--nonblocking"),
            *("-o", str(out), "--duration", str(seconds)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # py-spy attaches
    wrk("sidecar", port, seconds, connections)
    spy.wait(seconds + 30)
    groups: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        where = leaf.rpartition(" (")[2]
        if any("threading.py" in f for f in frames):
            group = "access log writer thread"
        elif any(where.startswith(p) or f"/{p}" in where for p in ENGINE_FILES):
            group = "engine (http/, upstream client; incl. their socket calls)"
        elif any(f"/{p}" in where for p in PIPELINE_FILES):
            group = "pipeline (proxy, policies, stats, access log)"
        elif "asyncio/" in where or "uvloop" in where:
            group = "event loop (uvloop, asyncio)"
        else:
            group = "other"
        groups[group] = groups.get(group, 0) + n
        name = re.sub(r":\d+\)$", ")", leaf).replace(str(ROOT) + "/", "")
        leaves[name] = leaves.get(name, 0) + n
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:20]
    return {
        "samples": total,
        "shares": {g: round(n / total, 3) for g, n in sorted(groups.items(), key=lambda x: -x[1])},
        "top_self": [[f, round(n / total, 3)] for f, n in top],
    }


def summary(values: list[float], best: str) -> dict[str, Any]:
    pick = max if best == "max" else min
    return {
        "best": round(pick(values), 3),
        "median": round(statistics.median(values), 3),
        "rounds": [round(v, 3) for v in values],
    }


def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        p = subprocess.run(cmd, capture_output=True, text=True)
        text = (p.stdout + p.stderr).strip().splitlines()
        return text[0] if text else "?"

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "wrk": version(["wrk", "-v"]),
    }


def source_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        p = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return p.stdout.strip()

    # Uncommitted changes to the data plane: the numbers are for HEAD plus these.
    status = git("status", "--porcelain", "--", "meshdev/sidecar").splitlines()
    dirty = [line.split(maxsplit=1)[1] for line in status if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "sidecar_changes": dirty}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rps", type=float, default=500.0, help="open-loop rate")
    ap.add_argument("--load-seconds", type=float, default=10.0, help="per open-loop run")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every process at this niceness (-10 keeps a shared machine's neighbours out "
        "of the latency tails; negative values need root)",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="afterwards, sample the sidecar with py-spy during one wrk run this long",
    )
    ap.add_argument(
        "--forked",
        action="store_true",
        help="fork the sidecar from a sidecar template, as the process runtime starts it, "
        "instead of exec'ing `meshdev sidecar`",
    )
    args = ap.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx haproxy wrk")
    # This interpreter's meshdev (a git worktree has no .venv of its own).
    meshdev = [sys.executable, "-m", "meshdev"]
    # This process runs the open-loop load (and wrk): keep it off the proxies' core.
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    if args.nice:
        os.nice(args.nice)
    info = {"machine": machine(), "source": source_state()}
    rates: dict[str, list[float]] = {t: [] for t in TARGETS}
    cpu_us: dict[str, list[float]] = {t: [] for t in PROXIES}
    cpu_us_open: dict[str, list[float]] = {t: [] for t in PROXIES}
    lat: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}

    with tempfile.TemporaryDirectory(prefix="meshdev-bench-") as tmp:
        d = Path(tmp)
        port = {t: free_port() for t in TARGETS}
        admin = free_port()
        (d / "upstream.conf").write_text(NGINX_UPSTREAM.format(dir=tmp, port=port["direct"]))
        (d / "proxy.conf").write_text(
            NGINX_PROXY.format(dir=tmp, port=port["nginx_proxy"], upstream=port["direct"])
        )
        (d / "haproxy.cfg").write_text(
            HAPROXY.format(port=port["haproxy"], upstream=port["direct"])
        )
        access_log = d / "access.log"
        config = sidecar_config(port["sidecar"], admin, port["direct"], str(access_log))
        (d / "sidecar.json").write_text(config.model_dump_json())
        env = {**os.environ, "MESHDEV_ADMIN_TOKEN": TOKEN, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
        with (
            running(
                ["nginx", "-c", f"{tmp}/upstream.conf", "-p", tmp],
                LOAD_CORE,
                port["direct"],
                nice=args.nice,
            ),
            running(
                ["nginx", "-c", f"{tmp}/proxy.conf", "-p", tmp],
                PROXY_CORE,
                port["nginx_proxy"],
                nice=args.nice,
            ) as ngx,
            running(
                ["haproxy", "-f", f"{tmp}/haproxy.cfg"],
                PROXY_CORE,
                port["haproxy"],
                nice=args.nice,
            ) as hap,
            (
                forked_sidecar(
                    f"{tmp}/sidecar.json",
                    PROXY_CORE,
                    port["sidecar"],
                    env,
                    f"{tmp}/car.log",
                    nice=args.nice,
                )
                if args.forked
                else running(
                    [*meshdev, "sidecar", "--config", f"{tmp}/sidecar.json"],
                    PROXY_CORE,
                    port["sidecar"],
                    env,
                    nice=args.nice,
                )
            ) as car,
        ):
            pids = {"sidecar": car.pid, "haproxy": hap.pid, "nginx_proxy": ngx.pid}
            for t in TARGETS:
                wrk(t, port[t], 1, args.connections)  # warm-up: connections, pools, caches
            for r in range(args.rounds):
                for t in TARGETS:
                    before = cpu_seconds(pids[t]) if t in pids else 0.0
                    rate, count = wrk(t, port[t], args.duration, args.connections)
                    rates[t].append(rate)
                    if t in pids:
                        cpu_us[t].append((cpu_seconds(pids[t]) - before) / count * 1e6)
                for t in TARGETS:
                    before = cpu_seconds(pids[t]) if t in pids else 0.0
                    one = open_loop(t, port[t], args.rps, args.load_seconds)
                    lat[t].append(one)
                    if t in pids:
                        spent = cpu_seconds(pids[t]) - before
                        cpu_us_open[t].append(spent / one["requests"] * 1e6)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
            rss = status_mb(car.pid, "VmRSS")
            hwm = status_mb(car.pid, "VmHWM")
            admin_kind = admin_server(car.pid)
            profile = (
                sample(car.pid, port["sidecar"], args.profile, args.connections, d)
                if args.profile
                else None
            )
            stats = sidecar_stats(admin)
        log_lines = sum(1 for _ in access_log.open()) if access_log.exists() else 0

    served = stats.get("http.outbound.downstream_rq_total", 0.0)
    if tripped(stats):
        raise SystemExit(f"a policy tripped during the benchmark: {tripped(stats)}")
    if log_lines != served:
        raise SystemExit(f"access log has {log_lines} lines for {served:.0f} requests")
    result = report(args, info, rates, cpu_us, cpu_us_open, lat)
    result["sidecar"] = {
        "rss_mb": round(rss, 1),
        "hwm_mb": round(hwm, 1),
        "admin_server": admin_kind,
        "requests_served": served,
        "access_log_lines": log_lines,
        "upstream_cx_total": stats.get("cluster.backend.upstream_cx_total"),
    }
    result["targets_met"]["rss"] = rss <= MAX_RSS_MB
    if profile is not None:
        result["profile"] = profile
    print_summary(result)
    print(json.dumps(result, indent=2))


def report(
    args: argparse.Namespace,
    info: dict[str, Any],
    rates: dict[str, list[float]],
    cpu_us: dict[str, list[float]],
    cpu_us_open: dict[str, list[float]],
    lat: dict[str, list[dict[str, float]]],
) -> dict[str, Any]:
    ratio: dict[str, dict[str, Any]] = {}
    for t in ("sidecar", "nginx_proxy"):
        per_round = [a / b for a, b in zip(rates[t], rates["haproxy"], strict=True)]
        ratio[t] = {
            "best": round(max(rates[t]) / max(rates["haproxy"]), 3),
            "median": round(statistics.median(per_round), 3),
            "rounds": [round(x, 3) for x in per_round],
        }
    cpu_best = {t: min(v) for t, v in cpu_us.items()}
    added: dict[str, dict[str, Any]] = {}
    for t in PROXIES:
        added[t] = {}
        for q in ("p50", "p99"):
            key = f"service_{q}_ms"
            diffs = [a[key] - b[key] for a, b in zip(lat[t], lat["direct"], strict=True)]
            added[t][q] = summary(diffs, "min")
    return {
        "settings": {
            "wrk": f"wrk -t1 -c{args.connections} -d{args.duration}s (keep-alive)",
            "rounds": args.rounds,
            "open_loop": f"{args.rps:g} req/s for {args.load_seconds:g} s, service time",
            "cores": f"proxies on core {PROXY_CORE}; wrk, nginx and the load generator on "
            f"core {LOAD_CORE}",
            "nice": args.nice,
            "sidecar_started": "forked by a template" if args.forked else "exec'd",
        },
        **info,
        "throughput_rps": {t: summary(v, "max") for t, v in rates.items()},
        "ratio_to_haproxy": ratio,
        "cpu_us_per_request": {t: summary(v, "min") for t, v in cpu_us.items()},
        "cpu_us_per_request_open_loop": {t: summary(v, "min") for t, v in cpu_us_open.items()},
        # What the ratios become once the proxy's core is the limit.
        "ratio_to_haproxy_by_cpu": {
            t: round(cpu_best["haproxy"] / cpu_best[t], 3) for t in ("sidecar", "nginx_proxy")
        },
        "open_loop_ms": {
            t: {
                k: summary([one[k] for one in v], "min")
                for k in ("service_p50_ms", "service_p99_ms", "latency_p50_ms", "latency_p99_ms")
            }
            for t, v in lat.items()
        },
        "added_ms": added,
        # Both proxies met the same neighbours in the same round: noise mostly cancels.
        "sidecar_p99_minus_haproxy_p99_ms": summary(
            [
                a["service_p99_ms"] - b["service_p99_ms"]
                for a, b in zip(lat["sidecar"], lat["haproxy"], strict=True)
            ],
            "min",
        ),
        "targets_met": {
            "throughput_ratio": ratio["sidecar"]["best"] >= MIN_RATIO,
            "throughput_ratio_by_cpu": cpu_best["haproxy"] / cpu_best["sidecar"] >= MIN_RATIO,
            "added_p50": added["sidecar"]["p50"]["median"] <= MAX_ADDED_P50_MS,
            "added_p99": added["sidecar"]["p99"]["median"] <= MAX_ADDED_P99_MS,
        },
    }


def print_summary(r: dict[str, Any]) -> None:
    err = sys.stderr
    print(
        r["settings"]["wrk"],
        "x",
        r["settings"]["rounds"],
        "rounds;",
        r["settings"]["cores"],
        file=err,
    )
    for t in TARGETS:
        tp = r["throughput_rps"][t]
        cpu = r["cpu_us_per_request"].get(t)
        cpu_text = f"  cpu {cpu['best']:6.1f} us/req (median {cpu['median']:.1f})" if cpu else ""
        print(f"  {t:12} {tp['best']:8.0f} req/s (median {tp['median']:.0f}){cpu_text}", file=err)
    for t in ("sidecar", "nginx_proxy"):
        rt, by_cpu = r["ratio_to_haproxy"][t], r["ratio_to_haproxy_by_cpu"][t]
        print(
            f"  {t}/haproxy {rt['best']:.2f}x best-of, {rt['median']:.2f}x median, "
            f"{by_cpu:.2f}x by cpu",
            file=err,
        )
    print(r["settings"]["open_loop"] + ", added over direct (best / median of rounds):", file=err)
    for t in PROXIES:
        a = r["added_ms"][t]
        print(
            f"  {t:12} p50 +{a['p50']['best']:.3f} / +{a['p50']['median']:.3f} ms   "
            f"p99 +{a['p99']['best']:.3f} / +{a['p99']['median']:.3f} ms",
            file=err,
        )
    vs = r["sidecar_p99_minus_haproxy_p99_ms"]
    print(
        f"  sidecar p99 - haproxy p99, same round: {vs['best']:+.3f} / {vs['median']:+.3f} ms",
        file=err,
    )
    s = r["sidecar"]
    print(
        f"sidecar VmRSS {s['rss_mb']} MB (peak {s['hwm_mb']} MB, admin: {s['admin_server']}); "
        f"targets met: {r['targets_met']}",
        file=err,
    )
    prof = r.get("profile")
    if prof is not None:
        print(f"py-spy, {prof['samples']} samples of the sidecar under wrk:", file=err)
        for group, share in prof["shares"].items():
            print(f"  {share:6.1%}  {group}", file=err)
        for name, share in prof["top_self"][:12]:
            print(f"    {share:6.1%}  {name}", file=err)


if __name__ == "__main__":
    main()
