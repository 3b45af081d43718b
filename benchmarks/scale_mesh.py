"""A 41-pod mesh against an 11-pod one, in one run: `up`, a save's apply, save -> serving, PSS.

Issue 15. Generates meshes of N services (N = 5 and 20 by default), each service 2 replicas of
a tiny standard-library HTTP app (tests/fixtures/tinyapp/app.py), an ingress gateway with a
path route per service, and on every service two routes with a local rate limit (`probe` and
`main`). With --calls every service declares `calls: [<the next service>]` and its app is the
next one's only caller; without it every sidecar sees every service, as before `calls:`.

For each size and run, on the process runtime (or with --runtime docker, on Docker: the apps
then run in the base image, $MESHDEV_BASE_IMAGE, with the mesh's folder mounted, so the app is
copied beside each generated mesh file instead of named by `build:`, which on Docker wants a
Dockerfile; one untimed `up` first builds the proxy image if meshdev's code changed):

1. `up`: `meshdev up --headless` from its spawn to its `ready:` line.
2. PSS of every sidecar and app, from /proc/PID/smaps_rollup, a moment after `ready:`
   (process runtime only).
3. saves: each edit toggles a fault abort (100%, status 418) on one service's `probe` route and
   is timed from just before the file is written
   - until a request stream through the gateway to that route sees the new answer (418 or
     200): save -> serving, p50 / p99;
   - and `up`'s own report, "applied vN to K/K sidecars in X ms (P changed)": the apply
     time and how many sidecars needed a push.

The sizes run one after the other in one process, so their ratios are from the same machine
state; absolute times on a shared 2-core VM are not (the load average is recorded).

    PYTHONPATH=. .venv/bin/python benchmarks/scale_mesh.py [--quick] [--calls] \
        [--sizes 5,20] [--runs 1] [--edits 20] [--runtime docker]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

# Run from a checkout: the e2e helpers start `meshdev up` the way the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.up_speed import TimedUp
from meshdev.runtime.process.procscan import labelled_processes
from tests.e2e.meshrun import MESHDEV, MeshUp, env_for, free_port
from tests.support import ROOT

APP_DIR = ROOT / "tests" / "fixtures" / "tinyapp"
READY_TIMEOUT_S = 300.0
EDITED = 1  # the service whose probe route the saves edit
FAULT_STATUS = 418
APPLIED = re.compile(r"^applied v(\d+) to (\d+)/(\d+) sidecars in (\d+) ms \((\d+) changed\)")


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def service(i: int) -> str:
    return f"s{i:02d}"


def app_env(workdir: Path) -> dict[str, str]:
    """`up`'s environment, with this interpreter's folder first on PATH: the apps' `python`
    is then this Python, not whatever a version manager puts there (pyenv's shim is a bash
    script that costs ~90 ms of CPU per app start, more than the app itself)."""
    env = env_for(workdir)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def mesh_text(name: str, n: int, port: int, *, calls: bool, fault: bool, build: bool = True) -> str:
    """The mesh file: n services, the `probe` route of service EDITED aborting if `fault`.
    Without `build`, the app is the mesh folder's app.py."""
    lines = [f"name: {name}", "services:"]
    for i in range(n):
        lines += [
            f"  {service(i)}:",
            *([f"    build: {APP_DIR}"] if build else []),
            "    command: python app.py",
            "    replicas: 2",
            "    health_path: /healthz",
        ]
        if calls:
            lines.append(f"    calls: [{service((i + 1) % n)}]")
    lines += ["ingress:", f"  port: {port}", "  routes:"]
    for i in range(n):
        s = service(i)
        lines.append(f"    - {{name: {s}, match: {{prefix: /{s}/}}, to: {s}}}")
    lines.append("routes:")
    for i in range(n):
        s = service(i)
        abort = ""
        if fault and i == EDITED:
            abort = f", fault: {{abort: {{percent: 100, status: {FAULT_STATUS}}}}}"
        lines += [
            f"  {s}:",
            f"    - {{name: probe, match: {{prefix: /{s}/probe}}, "
            f"rate_limit: {{requests_per_second: 5000, burst: 1000}}{abort}}}",
            "    - {name: main, match: {prefix: /}, "
            "rate_limit: {requests_per_second: 5000, burst: 1000}}",
        ]
    lines.append("policies:")
    for i in range(n):
        lines.append(f"  {service(i)}: {{circuit_breaker: {{max_requests: 500}}}}")
    return "\n".join(lines) + "\n"


def pss_kb(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def memory(name: str) -> dict[str, Any]:
    """PSS of the mesh's sidecars and apps (the app's shell excluded: `sh -c` execs python)."""
    by_role: dict[str, list[int]] = {"sidecar": [], "app": []}
    for p in labelled_processes(name):
        kb = pss_kb(p.pid)
        if kb is not None and p.role in by_role:
            by_role[p.role].append(kb)
    out: dict[str, Any] = {}
    for role, values in by_role.items():
        if values:
            out[f"{role}_pss_mb"] = {
                "count": len(values),
                "median": round(statistics.median(values) / 1024, 1),
                "max": round(max(values) / 1024, 1),
                "total": round(sum(values) / 1024, 1),
            }
    return out


class Stream:
    """Requests through the gateway to the edited route, one after another, noting answers."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[float, int]] = []  # (when the answer came, status)
        self.errors = 0
        self._stop = False

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(trust_env=False, timeout=timeout) as session:
            while not self._stop:
                try:
                    async with session.get(self.url) as resp:
                        await resp.read()
                        self.answers.append((time.perf_counter(), resp.status))
                except (aiohttp.ClientError, TimeoutError):
                    self.errors += 1
                    await asyncio.sleep(0.01)

    def stop(self) -> None:
        self._stop = True

    async def seen(self, status: int, since: float, timeout: float) -> float:
        """When the first answer with `status` after `since` came."""
        deadline = time.perf_counter() + timeout
        i = len(self.answers)
        while i > 0 and self.answers[i - 1][0] > since:
            i -= 1
        while time.perf_counter() < deadline:
            while i < len(self.answers):
                when, got = self.answers[i]
                if when > since and got == status:
                    return when
                i += 1
            await asyncio.sleep(0.001)
        raise TimeoutError(f"no {status} from {self.url} within {timeout}s")


async def saves(
    up: TimedUp, n: int, port: int, edits: int, calls: bool, build: bool
) -> dict[str, Any]:
    name = up_name(up)
    stream = Stream(f"http://127.0.0.1:{port}/{service(EDITED)}/probe")
    task = asyncio.create_task(stream.run())
    serving: list[float] = []
    applied: list[float] = []
    changed: list[int] = []
    try:
        await stream.seen(200, 0.0, 30)
        for i in range(edits):
            fault = i % 2 == 0
            text = mesh_text(name, n, port, calls=calls, fault=fault, build=build)
            seen_lines = len(up.stamps)
            t0 = time.perf_counter()
            up.mesh_file.write_text(text)
            when = await stream.seen(FAULT_STATUS if fault else 200, t0, 30)
            serving.append((when - t0) * 1000)
            report = await applied_line(up, seen_lines, 30)
            applied.append(float(report.group(4)))
            changed.append(int(report.group(5)))
            if report.group(2) != report.group(3):
                raise RuntimeError(f"not every sidecar serves: {report.group(0)}")
            await asyncio.sleep(0.3)  # let the watcher settle between saves
    finally:
        stream.stop()
        await task
    return {
        "edits": edits,
        "save_to_serving_ms": {
            "p50": pct(serving, 0.5),
            "p99": pct(serving, 0.99),
            "all": [round(v, 1) for v in serving],
        },
        "applied_ms": {
            "median": statistics.median(applied),
            "p99": pct(applied, 0.99),
            "all": applied,
        },
        "sidecars_pushed_median": statistics.median(changed),
        "stream_requests": len(stream.answers),
        "stream_errors": stream.errors,
    }


async def applied_line(up: TimedUp, after: int, timeout: float) -> re.Match[str]:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for _, line in up.stamps[after:]:
            if line.startswith("reload failed"):
                raise RuntimeError(line)
            found = APPLIED.match(line)
            if found:
                return found
        await asyncio.sleep(0.005)
    raise TimeoutError("no `applied` line:\n" + "\n".join(up.lines[-20:]))


def up_name(up: MeshUp) -> str:
    first = up.mesh_file.read_text().splitlines()[0]
    return first.split(": ", 1)[1].strip()


def one_run(
    workdir: Path, n: int, edits: int, calls: bool, runtime: str = "process"
) -> dict[str, Any]:
    name = f"scale{n}-{os.getpid()}"
    port = free_port()
    workdir.mkdir(parents=True)
    build = runtime == "process"
    if not build:
        shutil.copy(APP_DIR / "app.py", workdir / "app.py")
    mesh_file = workdir / "mesh.yaml"
    mesh_file.write_text(mesh_text(name, n, port, calls=calls, fault=False, build=build))
    env = app_env(workdir)
    up = TimedUp(mesh_file, env, "--runtime", runtime)
    try:
        up.wait_for("ready:", READY_TIMEOUT_S)
        ready = next(t for t, line in up.stamps if line.startswith("ready:"))
        first = next((APPLIED.match(line) for _, line in up.stamps if APPLIED.match(line)), None)
        time.sleep(1.0)  # the sidecars' first requests and imports settle before PSS is read
        mem = memory(name)
        result = asyncio.run(saves(up, n, port, edits, calls, build))
    except BaseException:
        note("\n".join(up.lines[-30:]))
        raise
    finally:
        code = up.stop()
        if code != 0:
            note(f"meshdev up exited with {code}")
        left = labelled_processes(name)
        if left or runtime != "process":
            if left:
                note(f"leftovers of {name}: {len(left)} processes; meshdev down")
            subprocess.run(
                [MESHDEV, "down", "--name", name, str(mesh_file)],
                env=env,
                capture_output=True,
                check=False,
            )
    return {
        "runtime": runtime,
        "services": n,
        "pods": 2 * n + 1,
        "up_ready_s": round(ready, 2),
        # `up`'s own "applied v1 ... in X ms": from the control plane's start of `up` (pods
        # started and ready, then the first push), so most of `up_ready_s`, not a push alone.
        "up_control_plane_ms": int(first.group(4)) if first else None,
        **mem,
        **result,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pods": rows[0]["pods"],
        "up_ready_s": statistics.median(r["up_ready_s"] for r in rows),
        "applied_ms_median": statistics.median(r["applied_ms"]["median"] for r in rows),
        "save_to_serving_p50_ms": statistics.median(r["save_to_serving_ms"]["p50"] for r in rows),
        "save_to_serving_p99_ms": max(r["save_to_serving_ms"]["p99"] for r in rows),
        "sidecars_pushed_median": statistics.median(r["sidecars_pushed_median"] for r in rows),
    }
    if all("sidecar_pss_mb" in r for r in rows):
        out["sidecar_pss_mb_median"] = statistics.median(
            r["sidecar_pss_mb"]["median"] for r in rows
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20", help="services per mesh (default 5,20)")
    parser.add_argument("--runs", type=int, default=2, help="runs per size, interleaved")
    parser.add_argument("--edits", type=int, default=20, help="saves per run")
    parser.add_argument("--calls", action="store_true", help="each service declares calls:")
    parser.add_argument("--quick", action="store_true", help="1 run per size, 6 saves")
    parser.add_argument("--runtime", choices=["process", "docker"], default="process")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.edits = 1, 6
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "runtime": args.runtime,
        "calls": args.calls,
        "runs": args.runs,
        "edits": args.edits,
    }
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory(prefix="scale_mesh-") as tmp:
        if args.runtime == "docker":
            # Untimed: builds the proxy image when meshdev's code changed since its last build.
            one_run(Path(tmp) / "warm-up", EDITED + 1, 1, args.calls, args.runtime)
        for run in range(args.runs):
            for n in sizes:
                row = one_run(Path(tmp) / f"{n}-{run}", n, args.edits, args.calls, args.runtime)
                rows[n].append(row)
                note(
                    f"{row['pods']} pods, run {run + 1}: ready {row['up_ready_s']} s, "
                    f"applied median {row['applied_ms']['median']} ms, save->serving "
                    f"p50 {row['save_to_serving_ms']['p50']} / p99 "
                    f"{row['save_to_serving_ms']['p99']} ms, "
                    f"sidecar PSS {row.get('sidecar_pss_mb', {}).get('median')} MB"
                )
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["sizes"] = {str(n): summarize(r) for n, r in rows.items()}
    result["runs_detail"] = {str(n): r for n, r in rows.items()}
    if len(sizes) >= 2:
        small, big = result["sizes"][str(sizes[0])], result["sizes"][str(sizes[-1])]
        result["growth"] = {
            "up_ready": round(big["up_ready_s"] / small["up_ready_s"], 2),
            "applied": round(big["applied_ms_median"] / max(small["applied_ms_median"], 1), 2),
        }
        result["targets"] = {
            "up_growth_le_2_0": result["growth"]["up_ready"] <= 2.0,
            "applied_median_le_150_ms": big["applied_ms_median"] <= 150,
            "save_to_serving_p99_le_300_ms": big["save_to_serving_p99_ms"] <= 300,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
