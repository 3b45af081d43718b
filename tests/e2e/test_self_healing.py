"""Pods heal themselves (Kubernetes' restartPolicy Always), through the real thing: `kill -9` of
a pod's app and of its sidecar brings traffic back within seconds, with the restart counted
and the exit code shown; an app that crashes at each start is crash-looping with its exit code
and backoff while the rest of the mesh serves, and comes back once it can start. On the
process runtime, and in Docker (a container killed from outside)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.meshrun import MeshUp, env_for, get
from tests.support import free_port, wait_until_sync

pytestmark = [pytest.mark.slow]

# Serves while no `broken` file is beside it; exits 3 at once when there is one.
APP = """\
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "broken")):
    print("broken: exiting with 3", flush=True)
    sys.exit(3)

HERE = os.path.dirname(os.path.abspath(__file__))

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/alive" and os.path.exists(os.path.join(HERE, "sick")):
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        data = json.dumps({"pod": os.environ["POD"], "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

MESH = """\
name: {name}
services:
  web: {{command: python3 app.py, health_path: /healthz}}
  other: {{command: python3 app.py, health_path: /healthz}}
  third: {{command: python3 app.py, health_path: /healthz}}
ingress:
  port: {port}
  routes:
    - {{match: {{prefix: /other}}, to: other}}
    - {{to: web}}
"""


def pod(up: MeshUp, name: str) -> dict[str, Any]:
    return next(p for p in up.status()["pods"] if p["name"] == name)


def wait_until(what: str, check: Any, timeout: float = 30) -> Any:
    return wait_until_sync(check, what, timeout=timeout, step=0.2)


def served(port: int, path: str = "/") -> dict[str, Any] | None:
    try:
        status, body = get(f"http://127.0.0.1:{port}{path}", timeout=3)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def test_killed_pods_are_restarted_and_crash_loops_back_off(tmp_path: Path) -> None:
    name = f"heal-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port))
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        first = served(port)
        assert first is not None and first["pod"] == "web-0"

        # kill -9 of the app: restarted at once (the first restart has no backoff).
        os.kill(first["pid"], signal.SIGKILL)
        line = up.wait_for("pod web-0: its app exited")
        assert "exited with code 137; restarting now" in line
        up.wait_for("pod web-0: restarted (1 restarts)")
        back = wait_until("web-0 serving again", lambda: served(port))
        assert back["pid"] != first["pid"]
        status = pod(up, "web-0")
        assert (status["restarts"], status["exit_code"], status["state"]) == (1, 137, "running")
        assert status["last_exit"].endswith("Z")

        # kill -9 of another pod's sidecar: that pod is restarted too.
        sidecar = next(
            p["pid"] for p in _labelled(name) if p["pod"] == "other-0" and p["role"] == "sidecar"
        )
        os.kill(sidecar, signal.SIGKILL)
        assert "its sidecar exited with code 137" in up.wait_for("pod other-0: its sidecar exited")
        up.wait_for("pod other-0: restarted (1 restarts)")
        again = wait_until(
            "other-0 serving after its sidecar's restart", lambda: served(port, "/other")
        )
        assert again["pod"] == "other-0"

        # An app that exits 3 at every start: its restart fails, and it is crash-looping with
        # Kubernetes' backoff (10 s after the second crash), shown in status, while the rest
        # of the mesh serves.
        (tmp_path / "broken").write_text("")
        third = next(
            p["pid"] for p in _labelled(name) if p["pod"] == "third-0" and p["role"] == "app"
        )
        os.kill(third, signal.SIGKILL)
        up.wait_for("pod third-0: its app exited with code 137; restarting now")
        failed = up.wait_for("pod third-0: restart 1 failed")
        assert "next try in 10 s (crash-looping, exit 3, next try in 10 s)" in failed
        status = pod(up, "third-0")
        assert (status["state"], status["exit_code"], status["ready"]) == (
            "crash-looping",
            3,
            False,
        )
        assert status["detail"].startswith("next try in")
        assert served(port) is not None  # the rest of the mesh serves meanwhile
        # It can start again: the next try brings it back.
        (tmp_path / "broken").unlink()
        up.wait_for("pod third-0: restarted (2 restarts)", 30)
        assert pod(up, "third-0")["state"] == "running"
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr


def _labelled(mesh: str) -> list[dict[str, Any]]:
    from meshdev.runtime.process import procscan

    return [{"pid": p.pid, "pod": p.pod, "role": p.role} for p in procscan.labelled_processes(mesh)]


@pytest.mark.docker
def test_a_container_killed_from_outside_is_restarted_in_docker(
    tmp_path: Path, docker_client: Any, docker_base_image: str
) -> None:
    name = f"dkheal-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port))
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        up.wait_for("ready:", 600)
        assert served(port) is not None
        docker_client.containers.get(f"meshdev-{name}-web-0-app").kill()
        line = up.wait_for("pod web-0: its app exited", 30)
        assert "exited with code 137; restarting now" in line
        up.wait_for("pod web-0: restarted (1 restarts)", 60)
        wait_until("web-0 serving again", lambda: served(port))
        status = pod(up, "web-0")
        assert (status["restarts"], status["exit_code"], status["state"]) == (1, 137, "running")
        # Its sidecar stopped from outside: the pod comes back as well.
        docker_client.containers.get(f"meshdev-{name}-other-0").stop(timeout=1)
        up.wait_for("pod other-0: its sidecar exited", 30)
        up.wait_for("pod other-0: restarted (1 restarts)", 60)
        wait_until("other-0 serving again", lambda: served(port, "/other"))
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr


CRASHING = """\
name: {name}
services:
  web: {{command: python3 app.py, health_path: /healthz}}
  doomed: {{command: "python3 -c \\"import sys; print('doomed: no config'); sys.exit(3)\\""}}
ingress:
  port: {port}
  routes: [{{to: web}}]
"""


def test_a_service_that_crashes_at_start_does_not_take_the_mesh_down(tmp_path: Path) -> None:
    name = f"crash-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(CRASHING.format(name=name, port=port))
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        crashed = up.wait_for("pod doomed-0: crashed at start")
        assert "(exit 3)" in crashed
        summary = up.wait_for("applied v1")
        assert summary.endswith("; crash-looping: doomed-0")
        assert up.wait_for("ready:") == f"ready: http://127.0.0.1:{port}/"
        assert served(port) is not None  # the rest of the mesh serves
        # Its log tail is shown when a retry fails, with the growing backoff.
        failed = up.wait_for("pod doomed-0: restart 1 failed")
        assert "next try in 10 s" in failed
        assert "doomed: no config" in "\n".join(up.lines)
        status = pod(up, "doomed-0")
        assert (status["state"], status["exit_code"]) == ("crash-looping", 3)
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr


LIVENESS = """\
name: {name}
services:
  web: {{command: python3 app.py, health_path: /healthz, liveness_path: /alive}}
ingress:
  port: {port}
  routes: [{{to: web}}]
"""


def test_a_failing_liveness_probe_restarts_the_pod(tmp_path: Path) -> None:
    name = f"live-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(LIVENESS.format(name=name, port=port))
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        first = served(port)
        assert first is not None
        (tmp_path / "sick").write_text("")
        up.wait_for("pod web-0: its liveness probe /alive failed 3 times in a row", 30)
        assert "does not answer its liveness probe; restarting now" in up.wait_for(
            "pod web-0: its app does not answer"
        )
        (tmp_path / "sick").unlink()
        up.wait_for("pod web-0: restarted (1 restarts)", 30)
        back = wait_until("web-0 serving again", lambda: served(port))
        assert back["pid"] != first["pid"]
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
