"""A mesh that a `meshdev up` runs already, met again by the user: a second `up` of it is
refused and leaves the first serving; `status` finds it while its file is mid-edit; a mesh
whose name maps to the same loopback /24 is refused with the reason, not crash-looped;
`status` says when no `up` follows the mesh; a pod slow to get ready is said to be waited for,
as long as its service's `ready_timeout` says."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from meshdev.runtime.paths import live_session_pid
from meshdev.runtime.process.runtime import subnet_of
from tests.e2e.meshrun import MeshUp, env_for, get
from tests.support import free_port

MESH = """\
name: {name}
services:
  web:
    command: python3 -m http.server --bind $HOST $PORT
ingress:
  port: {port}
  routes:
    - {{match: {{prefix: /}}, to: web}}
"""


WEB_COMMAND = "command: python3 -m http.server --bind $HOST $PORT"


def mesh_text(name: str, port: int, web: str) -> str:
    """MESH with the web service's line(s) `web` in place of its http.server command."""
    return MESH.format(name=name, port=port).replace(WEB_COMMAND, web)


@pytest.mark.slow
def test_a_second_up_of_a_running_mesh_is_refused_and_the_first_keeps_serving(
    tmp_path: Path,
) -> None:
    name, port = f"su-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH.format(name=name, port=port))
    up = MeshUp(path, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        # It took the first one's pods for leftovers of a crashed run and removed them.
        second = up.run("up", "--headless", "--runtime", "process", str(path))
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"mesh {name} is already running" in second.stderr
        assert f"(pid {up.proc.pid})" in second.stderr
        assert "leftovers" not in second.stdout
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        assert up.proc.poll() is None
        assert not any("exited" in line for line in up.lines), up.lines

        # A save in progress names no mesh; the `up` following the file still does.
        path.write_text(f"name: {name}\nservices: [\n")
        status = up.run("status", "--json", str(path))
        assert status.returncode == 0, status.stderr
        assert {p["name"] for p in json.loads(status.stdout)["pods"]} == {"ingress", "web-0"}
    finally:
        up.run("down", "--name", name)
        up.stop()


def test_a_dead_or_foreign_pid_in_a_state_file_is_no_running_up() -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        # The pid of a program that is not meshdev (an `up` killed, its pid reused).
        assert live_session_pid({"pid": other.pid}) is None
    finally:
        other.kill()
        other.wait()
    assert live_session_pid({"pid": other.pid}) is None  # gone
    assert live_session_pid({"pid": "7"}) is None
    assert live_session_pid(None) is None
    assert live_session_pid({"pid": os.getpid()}) is None  # this very process


@pytest.mark.slow
def test_a_mesh_whose_name_maps_to_a_running_meshs_subnet_is_refused(tmp_path: Path) -> None:
    name, port = f"sa-{os.getpid()}", free_port()
    twin = next(f"sb-{i}" for i in range(100_000) if subnet_of(f"sb-{i}") == subnet_of(name))
    first = tmp_path / "a" / "mesh.yaml"
    first.parent.mkdir()
    first.write_text(MESH.format(name=name, port=port))
    # No ingress: no published port to be found taken; its pods took the first one's
    # addresses and crash-looped on "address already in use".
    second = tmp_path / "b" / "mesh.yaml"
    second.parent.mkdir()
    second.write_text(MESH.format(name=twin, port=0).split("ingress:")[0])
    up = MeshUp(first, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        other = up.run("up", "--headless", "--runtime", "process", str(second))
        assert other.returncode == 1, other.stdout + other.stderr
        assert f"the pods of mesh {name} run on {subnet_of(name)}.0/24" in other.stderr
        assert "another `name:`" in other.stderr
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        assert not any("exited" in line for line in up.lines), up.lines
    finally:
        up.run("down", "--name", twin)
        up.run("down", "--name", name)
        up.stop()


@pytest.mark.slow
def test_status_says_when_no_up_follows_the_mesh_any_more(tmp_path: Path) -> None:
    name, port = f"sk-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH.format(name=name, port=port))
    up = MeshUp(path, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        assert up.status()["followed"] is True
        assert "no `meshdev up` follows" not in up.run("status", str(path)).stdout
        up.proc.kill()  # as a closed terminal or an OOM kill: its pods serve on
        up.proc.wait(30)
        status = up.status()
        assert (status["running"], status["followed"]) == (True, False)
        table = up.run("status", str(path)).stdout
        assert f"no `meshdev up` follows {path.resolve()}: saves are not applied" in table
    finally:
        up.run("down", "--name", name)
        up.stop()


@pytest.mark.slow
def test_a_pod_slow_to_get_ready_is_said_to_be_waited_for(tmp_path: Path) -> None:
    name, port = f"sw-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    # Answers after 12 s, as a slow app does: `up` was silent all that time.
    slow = "sleep 12; exec python3 -m http.server --bind $HOST $PORT"
    path.write_text(mesh_text(name, port, f"command: {slow}"))
    up = MeshUp(path, env_for(tmp_path), "--runtime", "process")
    try:
        line = up.wait_for("pod web-0: not ready", timeout=30)
        assert line == (
            "pod web-0: not ready after 10 s; waiting up to 60 s for its app and sidecar to answer"
        )
        up.wait_for("ready:", timeout=60)
        assert sum("not ready after" in line for line in up.lines) == 1, up.lines
    finally:
        up.run("down", "--name", name)
        up.stop()


@pytest.mark.slow
def test_a_service_s_ready_timeout_is_how_long_its_pods_are_waited_for(tmp_path: Path) -> None:
    name, port = f"rt-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    # An app that never listens: with `ready_timeout: 2s` up fails after 2 s, not 60.
    deaf = "command: sleep 600\n    ready_timeout: 2s"
    path.write_text(mesh_text(name, port, deaf))
    up = MeshUp(path, env_for(tmp_path), "--runtime", "process")
    try:
        started = time.monotonic()
        # up ends by itself, well before the default's 60 s; stop() then reads its last line.
        code = up.proc.wait(timeout=40)
        assert time.monotonic() - started < 30 and code != 0, up.lines
        up.stop()
        said = "\n".join(up.lines)
        assert "web-0" in said and "within 2s" in said, said
    finally:
        up.run("down", "--name", name)
        up.stop()

    # A slow starter given more than the default: waited for, and said so with its own time.
    slow = (
        "command: sleep 12; exec python3 -m http.server --bind $HOST $PORT\n    ready_timeout: 90s"
    )
    path.write_text(mesh_text(name, port, slow))
    up = MeshUp(path, env_for(tmp_path), "--runtime", "process")
    try:
        line = up.wait_for("pod web-0: not ready", timeout=30)
        assert line.endswith("waiting up to 90 s for its app and sidecar to answer"), line
        up.wait_for("ready:", timeout=60)
    finally:
        up.run("down", "--name", name)
        up.stop()
