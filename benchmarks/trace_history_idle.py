"""What the session's trace history costs `meshdev up` at idle: its CPU over a window, tracing
off (`sampling: 0`: the history reads nothing) against on (it asks every pod for new spans once
a second), alternating, on the process runtime.

    .venv/bin/python -m benchmarks.trace_history_idle [--pods 41] [--rounds 2] [--seconds 30]

`--pods 7`: the example mesh (ingress, frontend, backend v1/v2, ...); any other even number
+ 1: benchmarks/scale_mesh.py's mesh of that many pods (services of 2 replicas and a gateway).
Prints one JSON document: `up`'s CPU in percent of a core, per run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.scale_mesh import app_env, mesh_text
from tests.e2e.meshrun import EXAMPLE_DIR, MeshUp, example_copy
from tests.support import free_port

SETTLE_S = 5.0  # after `ready:`: the first polls and the pods' own start-up work are over


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mesh_file(tmp: Path, pods: int, sampling: int) -> Path:
    name = f"idle{pods}-{sampling}-{os.getpid()}"
    tracing = f"\ntracing: {{sampling: {sampling}}}\n"
    if pods == 7:
        text = (EXAMPLE_DIR / "mesh.yaml").read_text() + tracing
        return example_copy(tmp, name, free_port(), text)
    path = tmp / "mesh.yaml"
    services = (pods - 1) // 2
    path.write_text(mesh_text(name, services, free_port(), calls=True, fault=False) + tracing)
    return path


def one_run(pods: int, sampling: int, seconds: float) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="meshdev-idle-"))
    mesh = mesh_file(tmp, pods, sampling)
    up = MeshUp(mesh, app_env(tmp), "--runtime", "process")
    try:
        up.wait_for("ready:", timeout=300)
        time.sleep(SETTLE_S)
        before = cpu_seconds(up.proc.pid)
        time.sleep(seconds)
        return (cpu_seconds(up.proc.pid) - before) / seconds * 100
    finally:
        up.run("down", str(mesh))
        up.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=41)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.pods != 7 and (args.pods < 3 or args.pods % 2 == 0):
        parser.error("--pods: 7 (the example) or an odd number of 3 or more")
    runs: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.rounds):
        for label, sampling in (("off", 0), ("on", 100)):
            runs[label].append(round(one_run(args.pods, sampling, args.seconds), 2))
    print(json.dumps({"pods": args.pods, "seconds": args.seconds, "up_cpu_percent": runs}))


if __name__ == "__main__":
    main()
