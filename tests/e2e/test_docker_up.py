"""`meshdev up --headless --runtime docker` on the example, end to end through the CLI: the
ingress answers through frontend -> backend sidecars, status lists every pod at one version, a
killed backend container shows, and down (also after SIGKILL) leaves no container or network."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import docker
import pytest

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, example_copy, get
from tests.support import free_port, wait_until_sync

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def labelled(client: docker.DockerClient, name: str) -> tuple[list[str], list[str]]:
    flt: dict[str, str | list[str] | bool] = {"label": f"meshdev.mesh={name}"}
    containers = [str(c.name) for c in client.containers.list(all=True, filters=flt)]
    networks = [str(n.name) for n in client.networks.list(filters=flt)]
    return containers, networks


def test_example_on_docker(
    tmp_path: Path, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    name = f"dk-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        assert up.wait_for("ready:", 600) == f"ready: http://127.0.0.1:{port}/"
        status, body = get(f"http://127.0.0.1:{port}/items")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["pod"] == "frontend-0"
        assert answer["answered_by"]["pod"].startswith("backend-")

        st = up.status()
        assert st["runtime"] == "docker"
        pods = {p["name"]: p for p in st["pods"]}
        assert set(pods) == {
            "ingress",
            "frontend-0",
            "backend-v1-0",
            "backend-v1-1",
            "backend-v2-0",
        }
        assert all(p["ready"] and p["state"] == "running" for p in pods.values())
        assert {p["config_version"] for p in pods.values()} == {st["version"]}
        assert all(p["admin_url"].startswith("http://127.0.0.1:") for p in pods.values())
        front = admin_stats(
            pods["frontend-0"]["admin_url"], r"^cluster\.backend\.v[12]\.upstream_rq_2xx$"
        )
        assert sum(front.values()) >= 1

        docker_client.containers.get(f"meshdev-{name}-backend-v2-0-app").kill()
        backend = wait_until_sync(
            lambda: up.pod_unless_running("backend-v2-0"),
            "meshdev status to see backend-v2-0's app container gone",
            timeout=20,
            step=0.3,
        )
        assert backend["state"] != "running"
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
    assert labelled(docker_client, name) == ([], [])


def test_sigkill_then_down_on_docker(
    tmp_path: Path, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    name = f"dk-kill-{os.getpid()}"
    mesh_file = example_copy(tmp_path, name, free_port())
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        up.wait_for("ready:", 600)
        up.stop(signal.SIGKILL)
        containers, networks = labelled(docker_client, name)
        assert len(containers) == 9  # 5 sidecars + 4 apps, orphaned by the crash
        assert networks == [f"meshdev-{name}"]
        # The next `up` would sweep them too; `down` does it without starting anything.
        res = up.run("down", str(mesh_file))
        assert res.returncode == 0, res.stderr
    finally:
        up.run("down", str(mesh_file))
    assert labelled(docker_client, name) == ([], [])
