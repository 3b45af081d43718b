"""Where a scale mesh's `up` goes on the process runtime: CPU by role, per pod, and when.

Issue 15. Runs `meshdev up --headless` of scale_mesh.py's mesh (N services x 2 replicas of the
tiny app, and the gateway) for each size, alternating, and at its `ready:` line reads:

- the CPU of every process of the mesh, by role (the `up` process, the sidecar template, the
  sidecars, the apps: each app is its `sh -c` and the Python it runs, both labelled), from
  /proc/PID/task/*/schedstat (nanoseconds; /proc/PID/stat's ticks are 10 ms, as long as a
  sidecar's whole start), and their minor page faults (a forked sidecar's copy-on-write);
- the machine's CPU from /proc/stat over the same span (busy, idle: other sessions' load
  shows here, and idle cores show what waited on something serial);
- when each pod's sidecar and app processes were started, and when `up` said it was ready;
- per pod: (CPU at the larger size - CPU at the smaller) / (pods between them), by role.

The mesh's processes are started as `up` starts them; nothing here probes them (a poller of
its own would compete for the same two cores).

    PYTHONPATH=. .venv/bin/python benchmarks/up_breakdown.py [--sizes 5,20] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.scale_mesh import app_env, mesh_text
from benchmarks.up_speed import TimedUp
from meshdev.runtime.process.procscan import labelled_processes
from tests.e2e.meshrun import MESHDEV, free_port

TICK = os.sysconf("SC_CLK_TCK")
BOOT = float(Path("/proc/stat").read_text().split("btime ")[1].split()[0])
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def process(pid: int) -> tuple[float, int, float] | None:
    """(CPU seconds of all its threads, minor faults, start as a Unix time)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        ns = sum(
            int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
            for t in os.listdir(f"/proc/{pid}/task")
        )
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return ns / 1e9, int(fields[7]), int(fields[19]) / TICK + BOOT


def one_up(workdir: Path, n: int) -> dict[str, Any]:
    name = f"breakdown{n}-{os.getpid()}"
    workdir.mkdir(parents=True)
    mesh_file = workdir / "mesh.yaml"
    mesh_file.write_text(mesh_text(name, n, free_port(), calls=False, fault=False))
    env = app_env(workdir)
    before = machine()
    up = TimedUp(mesh_file, env, "--runtime", "process")
    started = time.time() - (time.perf_counter() - up.t0)
    try:
        up.wait_for("ready:", 300)
        after = machine()
        ready = next(t for t, line in up.stamps if line.startswith("ready:"))
        cpu: dict[str, list[float]] = {}
        faults: dict[str, list[int]] = {}
        starts: dict[str, dict[str, float]] = {}
        own = process(up.proc.pid)
        if own is not None:
            cpu["up"] = [own[0]]
        # An app's `sh -c` and the Python it forked both carry the pod's labels.
        for p in labelled_processes(name):
            seen = process(p.pid)
            if seen is None:
                continue
            cpu.setdefault(p.role, []).append(seen[0])
            faults.setdefault(p.role, []).append(seen[1])
            if p.pod:
                first = starts.setdefault(p.pod, {}).get(p.role, seen[2])
                starts[p.pod][p.role] = min(first, seen[2])
    finally:
        up.stop()
        if labelled_processes(name):
            subprocess.run(
                [MESHDEV, "down", "--name", name, str(mesh_file)],
                env=env,
                capture_output=True,
                check=False,
            )
    span = {k: round((b - a) / TICK, 2) for k, a, b in zip(STAT_FIELDS, before, after, strict=True)}
    pods = [s for pod, s in starts.items() if pod != "ingress"]
    ready_lines = [t for t, line in up.stamps if line.startswith("pod ") and "ready" in line]
    return {
        "pods": 2 * n + 1,
        "ready_s": round(ready, 3),
        "load": [round(x, 2) for x in os.getloadavg()],
        "machine_s": span,
        "cpu_s": {role: round(sum(v), 3) for role, v in cpu.items()},
        "minor_faults_median": {role: statistics.median(v) for role, v in faults.items()},
        "lines": [(round(t, 3), line) for t, line in up.stamps if not line.startswith("pod ")],
        "timeline_s": {
            what: [round(min(v), 2), round(statistics.median(v), 2), round(max(v), 2)]
            for what, v in (
                ("sidecar_started", [s["sidecar"] - started for s in pods if "sidecar" in s]),
                ("app_started", [s["app"] - started for s in pods if "app" in s]),
                ("pod_ready_line", ready_lines or [0.0]),
            )
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,20", help="services per mesh (default 5,20)")
    parser.add_argument("--runs", type=int, default=3, help="runs per size, alternating")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory(prefix="up_breakdown-") as tmp:
        for run in range(args.runs):
            for n in sizes:
                row = one_up(Path(tmp) / f"{n}-{run}", n)
                rows[n].append(row)
                print(
                    f"{row['pods']} pods: ready {row['ready_s']} s, load {row['load'][0]}, "
                    f"CPU {row['cpu_s']}",
                    file=sys.stderr,
                    flush=True,
                )
    medians = {
        n: {
            "ready_s": statistics.median(r["ready_s"] for r in rs),
            "cpu_s": {
                role: round(statistics.median(r["cpu_s"].get(role, 0.0) for r in rs), 3)
                for role in rs[0]["cpu_s"]
            },
        }
        for n, rs in rows.items()
    }
    result: dict[str, Any] = {"medians": medians, "runs": rows}
    if len(sizes) >= 2:
        small, big = medians[sizes[0]], medians[sizes[-1]]
        extra = 2 * (sizes[-1] - sizes[0])
        result["growth"] = round(big["ready_s"] / small["ready_s"], 2)
        result["cpu_ms_per_extra_pod"] = {
            role: round(1000 * (big["cpu_s"][role] - small["cpu_s"].get(role, 0.0)) / extra, 1)
            for role in big["cpu_s"]
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
