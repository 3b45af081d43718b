"""Two hops with mutual TLS against the same two hops in plaintext, and against HAProxy doing
the same two hops with TLS on both, in one run on one machine.

One upstream (nginx `return 200`), five ways to reach it:
  direct          straight to nginx;
  sidecar_plain   two `meshdev sidecar` processes: the caller's outbound listener -> the
                  callee's inbound listener (mtls DISABLE) -> nginx;
  sidecar_mtls    the same two processes, the same outbound listener (another Host, so another
                  cluster), a cluster with `tls: {spiffe_ids: [the callee's]}` -> the callee's
                  second inbound listener, `mtls: STRICT` -> the same local-app cluster; both
                  sidecars hold workload certificates POSTed to /certs from a TestCA;
  haproxy_tls     two HAProxies (Debian's, one thread each): the first takes plaintext and
                  originates TLS with its client certificate (`verify required` against the CA),
                  the second terminates TLS requiring a client certificate of the CA, then
                  plaintext to nginx; same ECDSA P-256 certificates, TLS 1.3 only, HTTP/1.1
                  keep-alive, `http-reuse always`;
  haproxy_plain   the same two HAProxies' configuration without TLS (reference).
The sidecars write no access log and have no policies but routing: what a hop costs, with TLS
a larger share of it than in a sidecar doing more.

Every proxy is pinned to one core; wrk, nginx and this script (meshdev's load generator) to the
other. Each round runs short slices that go through the targets forward, then backward, and so
on, so a neighbour's burst or a drift lands on every target alike, and on sidecar_plain and
sidecar_mtls (next to each other in the order) at nearly the same moments. Ratios and
differences are taken between slices of the same pass, then their median over all of them:
- throughput: wrk keep-alive (-t1 -cC -dDs) per slice; sidecar_mtls / sidecar_plain,
  sidecar_mtls / haproxy_tls (and the plain pair, and HAProxy's own TLS / plain);
- CPU microseconds per request of the two proxy processes together over each wrk slice: the
  steadier number on a shared machine; plain's / mtls's is the throughput ratio both would reach
  once the proxies' core is what limits them;
- latency at a constant open-loop rate (default 500 req/s, 2 s slices): service time p50 / p99
  per slice, added over direct, mtls minus plain in the same pass; and every slice's service
  times pooled per target;
- handshakes during the measured slices (after a warm-up): the caller's
  `cluster.backend-mtls.ssl.handshake` / `.session_reused` / `.upstream_cx_total`, the callee's
  STRICT listener's `ssl.handshake`, and the TLS HAProxy's `CumSslConns` (its stats socket),
  against the requests served: handshakes stay off the hot path when these stay near 0.
Before anything is measured, a plaintext client and a TLS client without a certificate must be
refused by the STRICT listener and the TLS HAProxy. The load average is read at the start and
end of every round.

    apt-get install -y nginx haproxy wrk
    .venv/bin/python -m benchmarks.mtls_hops [--rounds 3] [--duration 2] [--wrk-slices 2]
        [--load-seconds 2] [--load-slices 4] [--connections 32] [--rps 500] [--nice -10]
    .venv/bin/python -m benchmarks.mtls_hops --freeze 0.2 [--freeze-trials 3] [--nice -10]

`--freeze S` replaces the rounds: after the same warm-up and checks, each proxy target in turn
gets a 4 s open loop during which its two processes are stopped (SIGSTOP) for S seconds, as a
neighbour taking their core would; it reports how long the stall lasted (max, p99) and how many
connections and TLS handshakes the requests queued meanwhile caused.

Prints a summary to stderr and the JSON result to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.sidecar_throughput import (
    NGINX_UPSTREAM,
    cpu_seconds,
    free_port,
    machine,
    running,
    sidecar_stats,
    source_state,
)
from meshdev.common import sidecar_config as sc
from meshdev.common.histogram import HistogramSnapshot
from meshdev.common.loop import run
from meshdev.common.workload_certs import WorkloadCerts
from meshdev.loadgen import LoadResult, LoadSpec, run_load
from meshdev.testing.certs import TestCA, spiffe, tls_context

ROOT = Path(__file__).resolve().parents[1]
PROXY_CORE = "0"
LOAD_CORE = "1"
TARGETS = ("direct", "sidecar_plain", "sidecar_mtls", "haproxy_tls", "haproxy_plain")
PROXIES = TARGETS[1:]
SIDECARS = ("sidecar_plain", "sidecar_mtls")
MESH = "bench"
TOKEN = "bench-token"
LOCALHOST = "127.0.0.1"
# The Host each target is sent: the caller sidecar routes on it; nginx and HAProxy ignore it.
HOSTS = {
    "direct": "backend",
    "sidecar_plain": "backend-plain",
    "sidecar_mtls": "backend-mtls",
    "haproxy_tls": "backend",
    "haproxy_plain": "backend",
}
PLAIN_CLUSTER = "backend-plain"
MTLS_CLUSTER = "backend-mtls"
APP_CLUSTER = "inbound|80"
CALLER_ID = spiffe("frontend", MESH)
CALLEE_ID = spiffe("backend", MESH)
# Targets (issue 12, "Speed").
MIN_MTLS_RATIO = 0.7
MAX_ADDED_P99_MS = 1.0

# The first HAProxy (the caller's hop): plaintext in, to the second.
HAPROXY_CALLER = """
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
  bind {addr}:{port}
  default_backend be
backend be
  server callee {addr}:{upstream}{tls}
"""
HAPROXY_CALLER_TLS = (
    " ssl crt {dir}/caller.pem ca-file {dir}/ca.pem verify required"
    " ssl-min-ver TLSv1.3 alpn http/1.1"
)

# The second HAProxy (the callee's hop): from the first, plaintext to nginx.
HAPROXY_CALLEE = """
global
  nbthread 1
  maxconn 4096
  stats socket {dir}/{name}.sock mode 600
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind {addr}:{port}{tls}
  default_backend be
backend be
  server app {addr}:{upstream}
"""
HAPROXY_CALLEE_TLS = (
    " ssl crt {dir}/callee.pem ca-file {dir}/ca.pem verify required"
    " ssl-min-ver TLSv1.3 alpn http/1.1"
)


# -- configs ----------------------------------------------------------------------------------


def caller_config(listen: int, admin: int, plain: int, mtls: int) -> sc.SidecarConfig:
    """One outbound listener; Host picks the plaintext or the mutual TLS cluster to the callee."""

    def vhost(cluster: str) -> sc.VirtualHost:
        route = sc.Route(
            name="all",
            match=sc.RouteMatch(prefix="/"),
            clusters=(sc.WeightedCluster(cluster=cluster, weight=1),),
        )
        return sc.VirtualHost(name=cluster, domains=(cluster,), routes=(route,))

    def cluster(name: str, port: int, tls: sc.UpstreamTls | None) -> sc.Cluster:
        endpoint = sc.Endpoint(address=LOCALHOST, port=port, pod="backend-0")
        return sc.Cluster(name=name, endpoints=(endpoint,), tls=tls)

    return sc.SidecarConfig(
        version=1,
        mesh=MESH,
        node="frontend-0",
        service="frontend",
        spiffe_id=CALLER_ID,
        admin=sc.Admin(address=LOCALHOST, port=admin),
        listeners=(sc.Listener(name="outbound", kind="outbound", address=LOCALHOST, port=listen),),
        virtual_hosts=(vhost(PLAIN_CLUSTER), vhost(MTLS_CLUSTER)),
        clusters=(
            cluster(PLAIN_CLUSTER, plain, None),
            cluster(MTLS_CLUSTER, mtls, sc.UpstreamTls(spiffe_ids=(CALLEE_ID,))),
        ),
        access_log="off",
    )


def callee_config(admin: int, plain: int, mtls: int, app: int) -> sc.SidecarConfig:
    """Two inbound listeners onto the same local-app cluster: DISABLE and STRICT."""

    def inbound(name: str, port: int, mode: sc.MtlsMode) -> sc.Listener:
        return sc.Listener(
            name=name, kind="inbound", address=LOCALHOST, port=port, cluster=APP_CLUSTER, mtls=mode
        )

    return sc.SidecarConfig(
        version=1,
        mesh=MESH,
        node="backend-0",
        service="backend",
        spiffe_id=CALLEE_ID,
        admin=sc.Admin(address=LOCALHOST, port=admin),
        listeners=(inbound("inbound-plain", plain, "DISABLE"), inbound("inbound", mtls, "STRICT")),
        clusters=(
            sc.Cluster(
                name=APP_CLUSTER,
                endpoints=(sc.Endpoint(address=LOCALHOST, port=app, pod="backend-0"),),
            ),
        ),
        access_log="off",
    )


def certs_json(certs: WorkloadCerts) -> bytes:
    body = {
        "ca": certs.ca,
        "cert_chain": certs.cert_chain,
        "private_key": certs.private_key.get_secret_value(),
    }
    return json.dumps(body).encode()


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


# -- the sidecars' admin API and HAProxy's stats socket --------------------------------------


def post_certs(admin: int, certs: WorkloadCerts) -> None:
    request = urllib.request.Request(
        f"http://{LOCALHOST}:{admin}/certs",
        data=certs_json(certs),
        headers={"x-meshdev-token": TOKEN, "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        if resp.status != 200:
            raise RuntimeError(f"POST /certs on {admin}: {resp.status}")


def wait_ready(admin: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{LOCALHOST}:{admin}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"the sidecar with admin port {admin} is not ready: {last}")


def haproxy_info(sock: Path) -> dict[str, str]:
    """HAProxy's `show info` over its stats socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock))
        s.sendall(b"show info\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    out: dict[str, str] = {}
    for line in b"".join(chunks).decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


class Counters:
    """The handshake and connection counters this benchmark follows, read all at once."""

    def __init__(self, caller_admin: int, callee_admin: int, callee_mtls: int, hap: Path):
        self.caller_admin = caller_admin
        self.callee_admin = callee_admin
        self.listener = f"listener.{LOCALHOST}_{callee_mtls}"
        self.hap = hap

    def read(self) -> dict[str, float]:
        caller = sidecar_stats(self.caller_admin)
        callee = sidecar_stats(self.callee_admin)
        out: dict[str, float] = {}
        for c in (PLAIN_CLUSTER, MTLS_CLUSTER):
            for name in (
                "upstream_cx_total",
                "upstream_cx_destroy_local",
                "upstream_cx_destroy_remote",
                "upstream_rq_total",
                "upstream_cx_connect_fail",
            ):
                out[f"{c}.{name}"] = caller.get(f"cluster.{c}.{name}", 0.0)
        for name in ("handshake", "session_reused", "connection_error"):
            out[f"{MTLS_CLUSTER}.ssl.{name}"] = caller.get(
                f"cluster.{MTLS_CLUSTER}.ssl.{name}", 0.0
            )
            out[f"callee.ssl.{name}"] = callee.get(f"{self.listener}.ssl.{name}", 0.0)
        for name in ("fail_verify_error", "fail_verify_san"):
            out[f"{MTLS_CLUSTER}.ssl.{name}"] = caller.get(
                f"cluster.{MTLS_CLUSTER}.ssl.{name}", 0.0
            )
        out["haproxy_tls.CumSslConns"] = float(haproxy_info(self.hap).get("CumSslConns", "nan"))
        return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


# -- measurements -----------------------------------------------------------------------------


def wrk(target: str, port: int, duration: float, connections: int) -> tuple[float, int]:
    """Requests/s and the request count of one wrk run (all answers must be 2xx)."""
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s"]
    out = subprocess.run(
        [*cmd, "-H", f"Host: {HOSTS[target]}", f"http://{LOCALHOST}:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rate is None or count is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk on {target} failed:\n{out}")
    return float(rate.group(1)), int(count.group(1))


def open_loop(
    target: str, port: int, rps: float, seconds: float
) -> tuple[dict[str, float], HistogramSnapshot]:
    """One open-loop run's percentiles, and its service times to pool across slices."""
    spec = LoadSpec(
        f"http://{LOCALHOST}:{port}/",
        rps=rps,
        duration=seconds,
        headers=(("Host", HOSTS[target]),),
    )
    result = run(run_load(spec))
    if result.error_count or set(result.status) != {200}:
        raise RuntimeError(f"load on {target}: {result.status} {result.errors}")
    st, lat = result.service_time, result.latency
    one = {
        "service_p50_ms": st.quantile(0.5),
        "service_p99_ms": st.quantile(0.99),
        "latency_p50_ms": lat.quantile(0.5),
        "latency_p99_ms": lat.quantile(0.99),
        "requests": float(result.requests),
    }
    return one, st


def refused_checks(callee_mtls: int, hap_tls: int, ca: TestCA) -> dict[str, str]:
    """What the TLS listeners do with a client that is not of the mesh: proof that the
    measured paths are the mutual TLS ones, not a fallback."""

    def plaintext(port: int) -> str:
        with socket.create_connection((LOCALHOST, port), 5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
            s.settimeout(5)
            try:
                data = s.recv(4096)
            except OSError as exc:
                return f"refused ({type(exc).__name__})"
            return "refused (closed)" if not data else f"ANSWERED {data[:40]!r}"

    def no_client_cert(port: int) -> str:
        ctx = tls_context(None, trust=ca.pem)
        try:
            with (
                socket.create_connection((LOCALHOST, port), 5) as raw,
                ctx.wrap_socket(raw) as s,
            ):
                s.settimeout(5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
                data = s.recv(4096)
        except (ssl.SSLError, OSError) as exc:
            return f"refused ({type(exc).__name__}: {str(exc)[:60]})"
        return "refused (closed)" if not data else f"ANSWERED {data[:40]!r}"

    return {
        "sidecar STRICT, plaintext": plaintext(callee_mtls),
        "sidecar STRICT, TLS without client certificate": no_client_cert(callee_mtls),
        "haproxy TLS, plaintext": plaintext(hap_tls),
        "haproxy TLS, TLS without client certificate": no_client_cert(hap_tls),
    }


async def frozen_load(
    port: int, host: str, pids: tuple[int, ...], rps: float, freeze: float
) -> LoadResult:
    """An open loop of 4 s during which the proxies are stopped (SIGSTOP) for `freeze` s from
    1.5 s on, as a neighbour that takes their core for that long would."""
    spec = LoadSpec(f"http://{LOCALHOST}:{port}/", rps=rps, duration=4.0, headers=(("Host", host),))
    task = asyncio.ensure_future(run_load(spec))
    await asyncio.sleep(1.5)
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        await asyncio.sleep(freeze)
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)
    return await task


def freeze_trials(
    args: argparse.Namespace,
    port: dict[str, int],
    pids: dict[str, tuple[int, int]],
    counters: Counters,
) -> list[dict[str, Any]]:
    """What a stall does once it ends: the requests queued meanwhile arrive at once, the pools
    grow, and every new TLS connection is a handshake on the path of those requests."""
    out: list[dict[str, Any]] = []
    for i in range(args.freeze_trials):
        for t in PROXIES:
            before = counters.read()
            result = run(frozen_load(port[t], HOSTS[t], pids[t], args.rps, args.freeze))
            moved = diff(counters.read(), before)
            if result.error_count or set(result.status) != {200}:
                raise RuntimeError(f"frozen load on {t}: {result.status} {result.errors}")
            st = result.service_time
            cluster = MTLS_CLUSTER if t == "sidecar_mtls" else PLAIN_CLUSTER
            out.append(
                {
                    "trial": i + 1,
                    "target": t,
                    "loadavg": load(),
                    "p50_ms": round(st.quantile(0.5), 3),
                    "p99_ms": round(st.quantile(0.99), 3),
                    "max_ms": round(st.quantile(1.0), 3),
                    "sidecar_cx_opened": moved[f"{cluster}.upstream_cx_total"]
                    if t in SIDECARS
                    else None,
                    "tls_handshakes": moved[f"{MTLS_CLUSTER}.ssl.handshake"]
                    if t == "sidecar_mtls"
                    else moved["haproxy_tls.CumSslConns"]
                    if t == "haproxy_tls"
                    else 0,
                }
            )
    return out


def print_freeze(args: argparse.Namespace, trials: list[dict[str, Any]]) -> None:
    print(
        f"{args.rps:g} req/s for 4 s, both proxies of the target stopped for "
        f"{args.freeze * 1000:.0f} ms at 1.5 s (service time):",
        file=sys.stderr,
    )
    for x in trials:
        cx = "" if x["sidecar_cx_opened"] is None else f", cx opened {x['sidecar_cx_opened']:.0f}"
        print(
            f"  trial {x['trial']} {x['target']:14} p50 {x['p50_ms']:.2f}  p99 {x['p99_ms']:.1f}"
            f"  max {x['max_ms']:.1f} ms{cx}, TLS handshakes {x['tls_handshakes']:.0f} "
            f"(load {x['loadavg'][0]})",
            file=sys.stderr,
        )


def summary(values: list[float], best: str) -> dict[str, Any]:
    pick = max if best == "max" else min
    return {
        "best": round(pick(values), 3),
        "median": round(statistics.median(values), 3),
        "slices": [round(v, 3) for v in values],
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def haproxy_openssl() -> str:
    out = subprocess.run(["haproxy", "-vv"], capture_output=True, text=True).stdout
    found = re.search(r"Running on OpenSSL version : (.+)", out)
    return found.group(1).strip() if found else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=2, help="seconds per wrk run (slice)")
    ap.add_argument("--wrk-slices", type=int, default=2, help="wrk runs per target per round")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rps", type=float, default=500.0, help="open-loop rate")
    ap.add_argument(
        "--load-seconds", type=float, default=2.0, help="seconds per open-loop run (slice)"
    )
    ap.add_argument(
        "--load-slices", type=int, default=4, help="open-loop runs per target per round"
    )
    ap.add_argument(
        "--freeze",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="instead of the rounds: stop each target's proxies this long during an open loop "
        "and report how long the stall lasts and how many connections and handshakes follow",
    )
    ap.add_argument("--freeze-trials", type=int, default=3)
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every process at this niceness (negative values need root)",
    )
    args = ap.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y nginx haproxy wrk")
    meshdev = ROOT / ".venv" / "bin" / "meshdev"
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    if args.nice:
        os.nice(args.nice)
    info: dict[str, Any] = {"machine": machine(), "source": source_state()}
    info["machine"]["haproxy_openssl"] = haproxy_openssl()
    info["machine"]["python_openssl"] = ssl.OPENSSL_VERSION
    loads: list[dict[str, Any]] = [{"at": "start", "loadavg": load()}]

    rates: dict[str, list[float]] = {t: [] for t in TARGETS}
    cpu_us: dict[str, list[float]] = {t: [] for t in PROXIES}
    lat: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}
    pooled = {t: HistogramSnapshot.empty() for t in TARGETS}
    # Per sidecar target and phase: the counters' movement summed over the measured runs.
    moved: dict[str, dict[str, float]] = {}

    ca = TestCA.create("meshdev bench CA")
    caller_certs, callee_certs = ca.issue(CALLER_ID), ca.issue(CALLEE_ID)
    with tempfile.TemporaryDirectory(prefix="meshdev-bench-") as tmp, ExitStack() as stack:
        d = Path(tmp)
        port = {t: free_port() for t in TARGETS}
        port["sidecar_mtls"] = port["sidecar_plain"]  # one outbound listener, Host picks
        callee_plain, callee_mtls = free_port(), free_port()
        hap_tls_mid, hap_plain_mid = free_port(), free_port()
        caller_admin, callee_admin = free_port(), free_port()

        write_private(d / "ca.pem", ca.pem)
        for name, certs in (("caller", caller_certs), ("callee", callee_certs)):
            pem = certs.cert_chain + certs.private_key.get_secret_value()
            write_private(d / f"{name}.pem", pem)
        (d / "upstream.conf").write_text(NGINX_UPSTREAM.format(dir=tmp, port=port["direct"]))
        caller_tls = HAPROXY_CALLER_TLS.format(dir=tmp)
        callee_tls = HAPROXY_CALLEE_TLS.format(dir=tmp)
        haproxies = {
            "hap_tls_b": HAPROXY_CALLEE.format(
                addr=LOCALHOST, port=hap_tls_mid, upstream=port["direct"], tls=callee_tls,
                dir=tmp, name="hap_tls_b",
            ),
            "hap_tls_a": HAPROXY_CALLER.format(
                addr=LOCALHOST, port=port["haproxy_tls"], upstream=hap_tls_mid, tls=caller_tls
            ),
            "hap_plain_b": HAPROXY_CALLEE.format(
                addr=LOCALHOST, port=hap_plain_mid, upstream=port["direct"], tls="",
                dir=tmp, name="hap_plain_b",
            ),
            "hap_plain_a": HAPROXY_CALLER.format(
                addr=LOCALHOST, port=port["haproxy_plain"], upstream=hap_plain_mid, tls=""
            ),
        }  # fmt: skip
        hap_port = {
            "hap_tls_b": hap_tls_mid,
            "hap_tls_a": port["haproxy_tls"],
            "hap_plain_b": hap_plain_mid,
            "hap_plain_a": port["haproxy_plain"],
        }
        for name, text in haproxies.items():
            (d / f"{name}.cfg").write_text(text)
        caller = caller_config(port["sidecar_plain"], caller_admin, callee_plain, callee_mtls)
        callee = callee_config(callee_admin, callee_plain, callee_mtls, port["direct"])
        (d / "caller.json").write_text(caller.model_dump_json())
        (d / "callee.json").write_text(callee.model_dump_json())
        env = {**os.environ, "MESHDEV_ADMIN_TOKEN": TOKEN, "PYDANTIC_DISABLE_PLUGINS": "__all__"}

        nice = args.nice
        stack.enter_context(
            running(
                ["nginx", "-c", f"{tmp}/upstream.conf", "-p", tmp],
                LOAD_CORE,
                port["direct"],
                nice=nice,
            )
        )
        pid: dict[str, int] = {}
        for name in haproxies:
            cmd = ["haproxy", "-f", f"{tmp}/{name}.cfg"]
            pid[name] = stack.enter_context(running(cmd, PROXY_CORE, hap_port[name], nice=nice)).pid
        car = [str(meshdev), "sidecar", "--config"]
        pid["callee"] = stack.enter_context(
            running([*car, f"{tmp}/callee.json"], PROXY_CORE, callee_admin, env, nice)
        ).pid
        pid["caller"] = stack.enter_context(
            running([*car, f"{tmp}/caller.json"], PROXY_CORE, caller_admin, env, nice)
        ).pid
        post_certs(callee_admin, callee_certs)
        post_certs(caller_admin, caller_certs)
        wait_ready(callee_admin)
        wait_ready(caller_admin)
        pids = {
            "sidecar_plain": (pid["caller"], pid["callee"]),
            "sidecar_mtls": (pid["caller"], pid["callee"]),
            "haproxy_tls": (pid["hap_tls_a"], pid["hap_tls_b"]),
            "haproxy_plain": (pid["hap_plain_a"], pid["hap_plain_b"]),
        }
        counters = Counters(caller_admin, callee_admin, callee_mtls, d / "hap_tls_b.sock")

        def cpu(t: str) -> float:
            return sum(cpu_seconds(p) for p in pids.get(t, ()))

        def note(r: int, t: str, phase: str, before: dict[str, float], requests: float) -> None:
            moved_now = diff(counters.read(), before)
            for key in (f"{t}/{phase}", f"round {r + 1}: {t}/{phase}"):
                m = moved.setdefault(key, {"requests": 0.0})
                m["requests"] += requests
                for k, v in moved_now.items():
                    m[k] = m.get(k, 0.0) + v

        for t in TARGETS:  # warm-up: connections, pools, TLS sessions, caches
            wrk(t, port[t], 1, args.connections)
        warm = counters.read()
        if warm[f"{MTLS_CLUSTER}.ssl.handshake"] < 1 or warm["callee.ssl.handshake"] < 1:
            raise SystemExit(f"no mutual TLS handshake on the sidecar path: {warm}")
        if not warm["haproxy_tls.CumSslConns"] >= 1:
            raise SystemExit(f"no TLS connection on the HAProxy path: {warm}")
        checks = refused_checks(callee_mtls, hap_tls_mid, ca)
        if any("ANSWERED" in v for v in checks.values()):
            raise SystemExit(f"a TLS listener answered a client outside the mesh: {checks}")
        if args.freeze:
            trials = freeze_trials(args, port, pids, counters)
            print_freeze(args, trials)
            print(json.dumps({**info, "refused": checks, "freeze": trials}, indent=2))
            return
        start = counters.read()

        for r in range(args.rounds):
            loads.append({"at": f"round {r + 1} start", "loadavg": load()})
            # Slices go through the targets forward, then backward, and so on: a neighbour's
            # burst or a drift lands on every target alike, and on sidecar_plain and
            # sidecar_mtls (neighbours in the order) at nearly the same moments.
            for i in range(args.wrk_slices):
                for t in TARGETS if i % 2 == 0 else TARGETS[::-1]:
                    before_cpu, before = cpu(t), counters.read()
                    rate, count = wrk(t, port[t], args.duration, args.connections)
                    rates[t].append(rate)
                    if t in pids:
                        cpu_us[t].append((cpu(t) - before_cpu) / count * 1e6)
                    note(r, t, "wrk", before, count)
            for i in range(args.load_slices):
                for t in TARGETS if i % 2 == 0 else TARGETS[::-1]:
                    before = counters.read()
                    one, service = open_loop(t, port[t], args.rps, args.load_seconds)
                    lat[t].append(one)
                    pooled[t] += service
                    note(r, t, "open_loop", before, one["requests"])
            loads.append({"at": f"round {r + 1} end", "loadavg": load()})
            print(f"round {r + 1}/{args.rounds} done, load {load()}", file=sys.stderr)
        total = diff(counters.read(), start)

    result = report(args, info, rates, cpu_us, lat, pooled)
    result["loadavg"] = loads
    result["refused"] = checks
    result["handshakes"] = {
        "after_warm_up": {k: v for k, v in warm.items() if v},
        "measured_total": total,
        "per_target_phase": moved,
    }
    print_summary(result)
    print(json.dumps(result, indent=2))


def report(
    args: argparse.Namespace,
    info: dict[str, Any],
    rates: dict[str, list[float]],
    cpu_us: dict[str, list[float]],
    lat: dict[str, list[dict[str, float]]],
    pooled: dict[str, HistogramSnapshot],
) -> dict[str, Any]:
    def paired(a: str, b: str) -> dict[str, Any]:
        ratios = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        return {
            "best_of": round(max(rates[a]) / max(rates[b]), 3),
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
            "slices": [round(x, 3) for x in ratios],
        }

    cpu_best = {t: min(v) for t, v in cpu_us.items()}
    ratios = {
        f"{a}/{b}": {
            **paired(a, b),
            "by_cpu": round(cpu_best[b] / cpu_best[a], 3),
            "by_cpu_median": round(
                statistics.median(y / x for x, y in zip(cpu_us[a], cpu_us[b], strict=True)),
                3,
            ),
        }
        for a, b in (
            ("sidecar_mtls", "sidecar_plain"),
            ("sidecar_mtls", "haproxy_tls"),
            ("sidecar_plain", "haproxy_plain"),
            ("haproxy_tls", "haproxy_plain"),
        )
    }
    added: dict[str, dict[str, Any]] = {}
    for t in PROXIES:
        added[t] = {}
        for q in ("p50", "p99"):
            key = f"service_{q}_ms"
            diffs = [a[key] - b[key] for a, b in zip(lat[t], lat["direct"], strict=True)]
            added[t][q] = summary(diffs, "min")
    mtls_minus_plain = {
        q: summary(
            [
                a[f"service_{q}_ms"] - b[f"service_{q}_ms"]
                for a, b in zip(lat["sidecar_mtls"], lat["sidecar_plain"], strict=True)
            ],
            "min",
        )
        for q in ("p50", "p99")
    }
    # Every slice's service times together: a p99 of rounds x slices x rps x seconds samples.
    pooled_ms = {
        t: {
            "requests": h.count,
            "p50": round(h.quantile(0.5), 3),
            "p99": round(h.quantile(0.99), 3),
            "p999": round(h.quantile(0.999), 3),
        }
        for t, h in pooled.items()
    }
    pooled_added = {
        t: {q: round(pooled_ms[t][q] - pooled_ms["direct"][q], 3) for q in ("p50", "p99")}
        for t in PROXIES
    }
    pooled_added["sidecar_mtls - sidecar_plain"] = {
        q: round(pooled_ms["sidecar_mtls"][q] - pooled_ms["sidecar_plain"][q], 3)
        for q in ("p50", "p99")
    }
    tls_ratio = ratios["sidecar_mtls/sidecar_plain"]
    return {
        "settings": {
            "wrk": f"wrk -t1 -c{args.connections} -d{args.duration}s (keep-alive), "
            f"{args.wrk_slices} per target per round",
            "rounds": args.rounds,
            "open_loop": f"{args.rps:g} req/s for {args.load_seconds:g} s, "
            f"{args.load_slices} per target per round, service time",
            "cores": f"proxies on core {PROXY_CORE}; wrk, nginx and the load generator on "
            f"core {LOAD_CORE}",
            "nice": args.nice,
        },
        **info,
        "throughput_rps": {t: summary(v, "max") for t, v in rates.items()},
        "cpu_us_per_request": {t: summary(v, "min") for t, v in cpu_us.items()},
        "ratios": ratios,
        "open_loop_ms": {
            t: {
                k: summary([one[k] for one in v], "min")
                for k in ("service_p50_ms", "service_p99_ms", "latency_p50_ms", "latency_p99_ms")
            }
            for t, v in lat.items()
        },
        "added_over_direct_ms": added,
        "mtls_minus_plain_ms": mtls_minus_plain,
        "pooled_service_ms": pooled_ms,
        "pooled_added_ms": pooled_added,
        "targets_met": {
            "mtls_over_plain_throughput_median": tls_ratio["median"] >= MIN_MTLS_RATIO,
            "mtls_over_plain_by_cpu_median": tls_ratio["by_cpu_median"] >= MIN_MTLS_RATIO,
            "mtls_added_p99_median": mtls_minus_plain["p99"]["median"] <= MAX_ADDED_P99_MS,
            "mtls_added_p99_pooled": pooled_added["sidecar_mtls - sidecar_plain"]["p99"]
            <= MAX_ADDED_P99_MS,
        },
    }


def print_summary(r: dict[str, Any]) -> None:
    err = sys.stderr
    s = r["settings"]
    print(f"{s['wrk']}; {s['rounds']} rounds; {s['cores']}; nice {s['nice']}", file=err)
    for t in TARGETS:
        tp = r["throughput_rps"][t]
        cpu = r["cpu_us_per_request"].get(t)
        cpu_text = f"  cpu {cpu['best']:6.1f} us/req (median {cpu['median']:.1f})" if cpu else ""
        print(f"  {t:14} {tp['best']:8.0f} req/s (median {tp['median']:.0f}){cpu_text}", file=err)
    for name, x in r["ratios"].items():
        print(
            f"  {name:28} {x['median']:.3f}x median of pairs [{x['min']:.3f}-{x['max']:.3f}], "
            f"{x['best_of']:.3f}x best-of; by cpu {x['by_cpu_median']:.3f}x median, "
            f"{x['by_cpu']:.3f}x best-of",
            file=err,
        )
    print(s["open_loop"] + " (median of slices):", file=err)
    for t in TARGETS:
        o = r["open_loop_ms"][t]
        extra = ""
        if t in r["added_over_direct_ms"]:
            a = r["added_over_direct_ms"][t]
            extra = f"   added p50 +{a['p50']['median']:.3f}  p99 +{a['p99']['median']:.3f}"
        print(
            f"  {t:14} p50 {o['service_p50_ms']['median']:.3f}  "
            f"p99 {o['service_p99_ms']['median']:.3f} ms{extra}",
            file=err,
        )
    m = r["mtls_minus_plain_ms"]
    print(
        f"  mtls - plain, same pass: p50 {m['p50']['median']:+.3f} ms {m['p50']['slices']}, "
        f"p99 {m['p99']['median']:+.3f} ms {m['p99']['slices']}",
        file=err,
    )
    print("every slice pooled (service time):", file=err)
    for t in TARGETS:
        pm = r["pooled_service_ms"][t]
        added = r["pooled_added_ms"].get(t)
        extra = f"   added p50 +{added['p50']:.3f}  p99 +{added['p99']:.3f}" if added else ""
        print(f"  {t:14} p50 {pm['p50']:.3f}  p99 {pm['p99']:.3f} ms{extra}", file=err)
    print(f"  mtls - plain: {r['pooled_added_ms']['sidecar_mtls - sidecar_plain']}", file=err)
    for key, moved in r["handshakes"]["per_target_phase"].items():
        if not key.startswith(("sidecar_mtls", "haproxy_tls")):
            continue
        print(
            f"  {key:34} {moved['requests']:7.0f} requests: caller handshakes "
            f"{moved[f'{MTLS_CLUSTER}.ssl.handshake']:.0f} "
            f"(resumed {moved[f'{MTLS_CLUSTER}.ssl.session_reused']:.0f}), "
            f"cx opened {moved[f'{MTLS_CLUSTER}.upstream_cx_total']:.0f}, closed by the "
            f"caller {moved[f'{MTLS_CLUSTER}.upstream_cx_destroy_local']:.0f}; "
            f"haproxy TLS conns {moved['haproxy_tls.CumSslConns']:.0f}",
            file=err,
        )
    print(f"refused: {r['refused']}", file=err)
    print(f"loadavg: {[x['loadavg'][0] for x in r['loadavg']]}", file=err)
    print(f"targets met: {r['targets_met']}", file=err)


if __name__ == "__main__":
    main()
