"""`meshdev up --headless` on the example with the process runtime, end to end, as a user runs
it: a request through ingress -> frontend -> backend (the sidecars' stats show it), status,
a killed pod, and down leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from meshdev.runtime.process import procscan
from meshdev.runtime.select import PROXY_NOTICE
from tests.e2e.meshrun import MeshUp, admin_stats, env_for, example_copy, get
from tests.support import free_port

pytestmark = pytest.mark.slow


def test_example_end_to_end(tmp_path: Path) -> None:
    name = f"e2e-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        ready = up.wait_for("ready:")
        assert ready == f"ready: http://127.0.0.1:{port}/"
        # Said once: which clients are meshed here, where nothing captures their traffic.
        assert up.lines.count(PROXY_NOTICE) == 1

        # ingress -> frontend -> backend, all through sidecars.
        status, body = get(f"http://127.0.0.1:{port}/items")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["pod"].startswith("frontend-")
        assert answer["answered_by"]["pod"].startswith("backend-")

        st = up.status()
        pods = {p["name"]: p for p in st["pods"]}
        assert set(pods) == {
            "ingress",
            "frontend-0",
            "backend-v1-0",
            "backend-v1-1",
            "backend-v2-0",
            "greeter-0",
            "greeter-1",
        }
        assert st["runtime"] == "process"
        assert all(p["ready"] and p["state"] == "running" for p in pods.values())
        versions = {p["config_version"] for p in pods.values()}
        assert versions == {st["version"]}
        assert all(p["current"] for p in pods.values())

        # The stats show the hops: the gateway routed to frontend, frontend's sidecar to backend.
        ingress = admin_stats(pods["ingress"]["admin_url"], r"cluster\.frontend\.upstream_rq_2xx")
        assert ingress.get("cluster.frontend.upstream_rq_2xx", 0) >= 1
        front = admin_stats(
            pods["frontend-0"]["admin_url"], r"^cluster\.backend\.v[12]\.upstream_rq_2xx$"
        )
        assert sum(front.values()) >= 1

        # Kill one backend pod's app (the shell running its command and the app itself).
        for proc in procscan.labelled_processes(name):
            if proc.pod == "backend-v2-0" and proc.role == "app":
                os.kill(proc.pid, signal.SIGKILL)
        # The pod heals: restarted at once, the restart and the exit code in status.
        assert "exited with code 137; restarting now" in up.wait_for(
            "pod backend-v2-0: its app exited"
        )
        up.wait_for("pod backend-v2-0: restarted (1 restarts)")
        backend = next(p for p in up.status()["pods"] if p["name"] == "backend-v2-0")
        assert (backend["state"], backend["restarts"], backend["exit_code"]) == (
            "running",
            1,
            137,
        )
    finally:
        res = up.run("down", str(mesh_file))
    assert res.returncode == 0, res.stderr
    up.stop()
    assert procscan.labelled_processes(name) == []
    # down is idempotent
    again = up.run("down", str(mesh_file))
    assert again.returncode == 0
    assert "nothing to remove" in again.stdout
    after = up.status()
    assert (after["running"], after["runtime"], after["pods"]) == (False, None, [])


def test_sigterm_tears_everything_down(tmp_path: Path) -> None:
    name = f"e2e-term-{os.getpid()}"
    mesh_file = example_copy(tmp_path, name, free_port())
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    up.wait_for("ready:")
    assert len(procscan.labelled_processes(name)) >= 9  # 5 sidecars + 4 apps
    assert up.stop(signal.SIGTERM) == 0
    assert procscan.labelled_processes(name) == []


def test_sigkill_then_down_leaves_nothing(tmp_path: Path) -> None:
    name = f"e2e-kill-{os.getpid()}"
    mesh_file = example_copy(tmp_path, name, free_port())
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    up.wait_for("ready:")
    up.stop(signal.SIGKILL)
    assert procscan.labelled_processes(name)  # orphans of the crashed run
    res = up.run("down", str(mesh_file))
    assert res.returncode == 0, res.stderr
    assert procscan.labelled_processes(name) == []
