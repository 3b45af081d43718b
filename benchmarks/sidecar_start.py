"""Sidecar start time and memory on the process runtime, K = 5 and K = 20 in one run (issue 15).

1. sidecars: K pods started through `ProcessRuntime.start_pod` exactly as `up` starts them (their
   rendered configs, labels, logs), apps a bare `sleep` so that only sidecars are measured; timed
   from the first start_pod to every sidecar answering /ready, then the PSS of each sidecar from
   /proc/PID/smaps_rollup (and of the template process, when sidecars are forked from one) a
   second later, and again after `--traffic` requests through each pod's sidecar to its app
   (this process answers at each app's address) plus one admin /stats in ten. Each start mode
   (`exec`: a fresh interpreter per sidecar; `template`: forked from the mesh's pre-imported
   template) runs at K = 5 and K = 20, alternating, `--runs` times.
2. `--up`: `meshdev up --headless --runtime process` of a generated mesh with N services x 2
   replicas + ingress (N = 5 -> 11 pods, N = 20 -> 41 pods), each app a tiny HTTP server and each
   route with a local rate limit, timed from the command's start to its `ready:` line.

Everything runs in a private state folder (MESHDEV_STATE_DIR) and is torn down even on failure.

    PYTHONPATH=. .venv/bin/python benchmarks/sidecar_start.py [--runs 3] [--up] > sidecar_start.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast, get_args

from meshdev import plan
from meshdev.config import load_mesh
from meshdev.control import load_defaults
from meshdev.runtime import loopback
from meshdev.runtime.process import procscan
from meshdev.runtime.process.runtime import ENV_SIDECAR_START, ProcessRuntime, SidecarStart
from meshdev.runtime.readiness import http_ok

READY_TIMEOUT_S = 120.0
APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mesh_yaml(name: str, services: int, replicas: int, command: str) -> str:
    """`services` services of `replicas` pods each behind an ingress; every route of every
    service has a local rate limit (the issue's generator)."""
    lines = [f"name: {name}", "services:"]
    for i in range(services):
        lines += [
            f"  s{i}:",
            f"    command: {json.dumps(command)}",
            "    port: 8080",
            f"    replicas: {replicas}",
        ]
    lines += ["ingress:", f"  port: {_free_port()}", "  routes:"]
    lines += [f"    - {{match: {{prefix: /s{i}}}, to: s{i}}}" for i in range(services)]
    lines += ["routes:"]
    for i in range(services):
        lines += [
            f"  s{i}:",
            f"    - {{name: all, match: {{prefix: /}}, to: s{i}, "
            "rate_limit: {requests_per_second: 1000, burst: 100}}",
        ]
    return "\n".join(lines) + "\n"


def pss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


async def fake_apps(addresses: list[tuple[str, int]]) -> list[asyncio.Server]:
    """A 200 for every request, at each pod's app address (its app is a bare `sleep`)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return [await asyncio.start_server(serve, host, port) for host, port in addresses]


async def start_sidecars(folder: Path, k: int, mode: SidecarStart, traffic: int) -> dict[str, Any]:
    """K sidecars (K-1 one-pod services + the ingress) started as `up` starts them; then
    `traffic` requests through each pod's sidecar to its app, and its admin API."""
    name = f"scs{secrets.token_hex(3)}"
    mesh_file = folder / f"{name}.yaml"
    # The apps are this process (fake_apps): only sidecars start.
    mesh_file.write_text(mesh_yaml(name, k - 1, 1, "exec sleep 600"))
    mesh = load_mesh(mesh_file)
    runtime = ProcessRuntime(mesh, mesh_file, sidecar_start=mode)
    specs = plan.pods(mesh)
    assert len(specs) == k
    endpoints = [(s, runtime.planned_placement(s)) for s in specs]
    defaults = load_defaults()
    configs = [
        plan.render(mesh, s, p, endpoints, version=1, defaults=defaults).model_dump_json().encode()
        for s, p in endpoints
    ]
    await runtime.prepare(mesh, specs, lambda _: None)
    try:
        t0 = time.perf_counter()
        started = await asyncio.gather(
            *(runtime.start_pod(s, c, "token") for s, c in zip(specs, configs, strict=True))
        )
        spawned = time.perf_counter() - t0
        ready_at: list[float] = []

        async def ready(admin_url: str) -> None:
            while not await http_ok(f"{admin_url}/ready"):
                if time.perf_counter() - t0 > READY_TIMEOUT_S:
                    raise TimeoutError(f"{admin_url} not ready")
                await asyncio.sleep(0.01)
            ready_at.append(time.perf_counter() - t0)

        await asyncio.gather(*(ready(s.admin_url) for s in started))
        all_ready = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # settle: what each holds once serving, not mid-start
        labelled = procscan.labelled_processes(name)
        sidecars = [p.pid for p in labelled if p.role == "sidecar"]
        templates = [p.pid for p in labelled if p.role == "sidecar-template"]
        pss = [v for pid in sidecars if (v := pss_kb(pid)) is not None]
        template_pss = [v for pid in templates if (v := pss_kb(pid)) is not None]
        # Serving touches objects (their reference counts), which copies the template's pages
        # it shares into the sidecar: what each holds after some traffic is the fair figure.
        pods = [(spec, s) for spec, s in zip(specs, started, strict=True) if not spec.is_ingress]
        apps = await fake_apps([(s.placement.address, spec.port) for spec, s in pods])

        async def drive(inbound: str, admin: str) -> None:
            for i in range(traffic):
                answer = await loopback.request("GET", f"{inbound}/")
                assert answer.status == 200, answer.status
                if i % 10 == 0:
                    await loopback.request("GET", f"{admin}/stats?format=json")

        await asyncio.gather(*(drive(s.inbound_url, s.admin_url) for _, s in pods))
        pss_after = [v for pid in sidecars if (v := pss_kb(pid)) is not None]
        for app in apps:
            app.close()
        return {
            "mode": mode,
            "k": k,
            "spawned_s": round(spawned, 3),
            "all_ready_s": round(all_ready, 3),
            "first_ready_s": round(min(ready_at), 3),
            "sidecars_found": len(sidecars),
            "pss_mb_median": round(statistics.median(pss) / 1024, 2),
            "pss_mb_max": round(max(pss) / 1024, 2),
            "template_pss_mb": round(sum(template_pss) / 1024, 2),
            "requests_per_sidecar": traffic,
            "pss_mb_after_traffic_median": round(statistics.median(pss_after) / 1024, 2),
            # The template's share spread over the sidecars it serves: the honest per-pod cost.
            "pss_mb_with_template_share": round(
                (sum(pss) + sum(template_pss)) / len(pss) / 1024, 2
            ),
        }
    finally:
        await runtime.teardown()


def time_up(folder: Path, services: int, mode: str) -> dict[str, Any]:
    env = {**os.environ, ENV_SIDECAR_START: mode}
    name = f"scu{secrets.token_hex(3)}"
    app = folder / "app.py"
    app.write_text(APP)
    mesh_file = folder / f"{name}.yaml"
    mesh_file.write_text(mesh_yaml(name, services, 2, "python app.py"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshdev",
            "up",
            "--headless",
            "--runtime",
            "process",
            str(mesh_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    out: list[str] = []
    ready = None
    # Where the time goes: seconds from the command's start to its progress lines.
    marks: dict[str, float] = {}
    pods_ready: list[float] = []
    try:
        for line in proc.stdout:
            at = round(time.perf_counter() - t0, 2)
            out.append(line.rstrip())
            if line.startswith("starting "):
                marks["starting_pods"] = at
            elif line.startswith("pod ") and line.rstrip().endswith(" ready"):
                pods_ready.append(at)
            elif line.startswith("applied "):
                marks["pushed"] = at
                marks["applied_line"] = line.strip()  # type: ignore[assignment]
            if line.startswith("ready:"):
                ready = time.perf_counter() - t0
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(
            [sys.executable, "-m", "meshdev", "down", str(mesh_file)],
            env=env,
            check=False,
            capture_output=True,  # stdout is the JSON result
        )
    if ready is None:
        raise RuntimeError("up never printed ready:\n" + "\n".join(out[-20:]))
    if pods_ready:
        marks["first_pod_ready"], marks["last_pod_ready"] = pods_ready[0], pods_ready[-1]
    return {
        "mode": mode,
        "services": services,
        "pods": services * 2 + 1,
        "up_s": round(ready, 2),
        "marks": marks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="exec,template")
    parser.add_argument("--traffic", type=int, default=500, help="requests per sidecar")
    parser.add_argument("--up", action="store_true", help="also time `up` of 11 and 41 pods")
    parser.add_argument("--up-runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sidecar-start-") as tmp:
        folder = Path(tmp)
        os.environ["MESHDEV_STATE_DIR"] = str(folder / "state")
        results: dict[str, Any] = {"load_before": os.getloadavg(), "sidecars": [], "up": []}
        for _ in range(args.runs):
            for mode in args.modes.split(","):
                assert mode in get_args(SidecarStart), mode
                for k in (5, 20):
                    started = start_sidecars(folder, k, cast(SidecarStart, mode), args.traffic)
                    results["sidecars"].append(asyncio.run(started))
                    print(json.dumps(results["sidecars"][-1]), file=sys.stderr)
        if args.up:
            for _ in range(args.up_runs):
                for mode in args.modes.split(","):
                    for n in (5, 20):
                        results["up"].append(time_up(folder, n, mode))
                        print(json.dumps(results["up"][-1]), file=sys.stderr)
        results["load_after"] = os.getloadavg()
        results["summary"] = summarise(results)
    json.dump(results, sys.stdout, indent=2)
    print()


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in {r["mode"] for r in results["sidecars"]}:
        rows = {
            k: [r for r in results["sidecars"] if r["mode"] == mode and r["k"] == k]
            for k in (5, 20)
        }

        def med(k: int, key: str, rows: dict[int, list[dict[str, Any]]] = rows) -> float:
            return round(float(statistics.median(r[key] for r in rows[k])), 3)

        out[mode] = {
            "ready_s_k5": med(5, "all_ready_s"),
            "ready_s_k20": med(20, "all_ready_s"),
            "ratio_k20_k5": round(med(20, "all_ready_s") / med(5, "all_ready_s"), 2),
            "pss_mb_k20": med(20, "pss_mb_median"),
            "pss_mb_k20_after_traffic": med(20, "pss_mb_after_traffic_median"),
            "pss_mb_with_template_share_k20": med(20, "pss_mb_with_template_share"),
        }
    for mode in {r["mode"] for r in results["up"]}:
        by = {
            n: statistics.median(
                r["up_s"] for r in results["up"] if r["services"] == n and r["mode"] == mode
            )
            for n in (5, 20)
        }
        out[f"up_{mode}"] = {
            "s_11_pods": by[5],
            "s_41_pods": by[20],
            "ratio": round(by[20] / by[5], 2),
        }
    return out


if __name__ == "__main__":
    main()
