"""Save of an app's code -> every replica serving the new code (issue 11 part 2).

Runs `meshdev up --headless` on a copy of the example (its folder copied, so the example itself
is never edited; its own name and port), then saves the frontend's app.py N times (a changed
comment: new content). Each save is timed from just before the file is written until only new
pods answer through the gateway: a client polls GET / (which names the answering pod) every
10 ms, and the time is that of the first answer of the run of 4 x replicas answers in a row
from pods that were not there before the save, the run that ends it. Also reported: until
`up` prints that the frontend rolled (every old pod drained and stopped too), and the control
plane's own part (the roll's "in N ms": image build, start, readiness, push, drain; and its
"only new code answering after N ms"), the rest being the watcher's quiet period.

    .venv/bin/python benchmarks/code_loop.py [--runtime process|docker|both] [--saves 10]
        [--replicas 1]

Docker needs MESHDEV_BASE_IMAGE (an image in the engine); the example's dependency layer comes
from the engine's build cache, so a save rebuilds only the layers from `COPY app.py` on. The
images the run built are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout: the e2e helpers start `meshdev up` the way the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.meshrun import EXAMPLE_DIR, MeshUp, env_for, free_port, get

ROLLED = re.compile(
    r"^frontend: rolled (?P<pods>.*) in (?P<ms>\d+) ms "
    r"\(only new code answering after (?P<serving>\d+) ms\)$"
)


def example(tmp: Path, name: str, port: int, replicas: int) -> Path:
    """The example's folder copied to `tmp/app` and its mesh file at `tmp/mesh.yaml`."""
    shutil.copytree(EXAMPLE_DIR, tmp / "app", ignore=shutil.ignore_patterns("mesh.yaml"))
    text = (EXAMPLE_DIR / "mesh.yaml").read_text()
    text = text.replace("name: demo", f"name: {name}", 1)
    text = text.replace("  port: 8000", f"  port: {port}", 1)
    text = text.replace("build: .", "build: ./app")
    front = text.index("  frontend:\n")
    text = text[:front] + text[front:].replace("replicas: 1", f"replicas: {replicas}", 1)
    if "watch:" not in text[front : text.index("  backend:\n")]:
        raise SystemExit("the example's frontend has no watch: to measure")
    path = tmp / "mesh.yaml"
    path.write_text(text)
    return path


def pod_answering(port: int) -> str | None:
    try:
        status, body = get(f"http://127.0.0.1:{port}/", timeout=2)
    except OSError:
        return None
    return str(json.loads(body)["pod"]) if status == 200 else None


def until_only_new(port: int, old: set[str], streak: int, t0: float) -> float:
    """Seconds from `t0` to the first answer of `streak` answers in a row from pods not in
    `old` (see the module's doc)."""
    run_started: float | None = None
    count = 0
    deadline = t0 + 120
    while time.perf_counter() < deadline:
        at = time.perf_counter()
        pod = pod_answering(port)
        if pod is not None and pod not in old:
            if run_started is None:
                run_started = at
            count += 1
            if count >= streak:
                return run_started - t0
        else:
            run_started, count = None, 0
        time.sleep(0.01)
    raise AssertionError(f"old pods {old} still answer after 120 s")


def answering_pods(port: int, n: int) -> set[str]:
    pods = set()
    for _ in range(n):
        status, body = get(f"http://127.0.0.1:{port}/")
        if status != 200:
            raise AssertionError(f"GET / answered {status}: {body[:300]}")
        pods.add(json.loads(body)["pod"])
    return pods


def load_average() -> float:
    return os.getloadavg()[0]


def run(runtime: str, saves: int, replicas: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        name = f"bench-code-{runtime[:4]}-{os.getpid()}"
        port = free_port()
        mesh_file = example(Path(tmp), name, port, replicas)
        app = Path(tmp) / "app" / "app.py"
        original = app.read_text()
        env = env_for(Path(tmp))
        up = MeshUp(mesh_file, env, "--runtime", runtime)
        images: set[str] = set()
        totals: list[float] = []
        rolled: list[float] = []
        control: list[float] = []
        control_serving: list[float] = []
        load = [load_average()]
        try:
            up.wait_for("ready:", 600)
            time.sleep(1.0)
            old = answering_pods(port, 4 * replicas)
            for i in range(saves):
                t0 = time.perf_counter()
                app.write_text(f"{original}\n# code loop benchmark: save {i}\n")
                totals.append(until_only_new(port, old, 4 * replicas, t0))
                line = up.wait_for("frontend: rolled", 120)
                rolled.append(time.perf_counter() - t0)
                match = ROLLED.match(line)
                if match is None:
                    raise AssertionError(line)
                control.append(int(match["ms"]) / 1000)
                control_serving.append(int(match["serving"]) / 1000)
                new = {pair.split(" -> ")[1] for pair in match["pods"].split(", ")}
                old = new
                if runtime == "docker":
                    images.add(_image_id(f"meshdev-{name}-frontend:latest"))
                served = answering_pods(port, 4 * replicas)
                if not served <= new:
                    raise AssertionError(f"old pods still answer after {line!r}: {served}")
                time.sleep(0.5)
            load.append(load_average())
        except BaseException:
            print("\n".join(up.lines[-30:]), file=sys.stderr)
            raise
        finally:
            up.run("down", str(mesh_file))
            up.stop()
            if runtime == "docker":
                _remove_images(name, images)
    return {
        "runtime": runtime,
        "frontend_replicas": replicas,
        "saves": saves,
        "save_to_all_serving_s": {
            "median": round(statistics.median(totals), 3),
            "max": round(max(totals), 3),
            "runs": [round(t, 3) for t in totals],
        },
        "save_to_rolled_line_s": {
            "median": round(statistics.median(rolled), 3),
            "max": round(max(rolled), 3),
        },
        "control_plane_s": {
            "to_only_new_answering_median": round(statistics.median(control_serving), 3),
            "to_old_pods_stopped_median": round(statistics.median(control), 3),
        },
        "load_average_1m": {"start": round(load[0], 2), "end": round(load[-1], 2)},
    }


def _image_id(tag: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _remove_images(mesh: str, built: set[str]) -> None:
    """Every image tag this mesh's builds made, and every image a save built (each save's
    leaves the engine dangling once the next one takes the tag)."""
    tags = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"meshdev-{mesh}-*"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    for image in [*tags, *sorted(built)]:
        subprocess.run(["docker", "rmi", image], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["process", "docker", "both"], default="both")
    parser.add_argument("--saves", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=1, help="the frontend's replicas")
    args = parser.parse_args()
    runtimes = ["process", "docker"] if args.runtime == "both" else [args.runtime]
    results = [run(r, args.saves, args.replicas) for r in runtimes]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
