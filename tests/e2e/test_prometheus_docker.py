"""A mesh's Prometheus on the Docker runtime whose container exits at its start (a bad config,
its port taken inside): said at once, with the exit code and the last lines of its log, not at
the 30 s readiness deadline. The stand-in image is built on the base image (no registry is
needed) and exits as a Prometheus refusing its config does."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from meshdev.config.model import PrometheusSettings
from meshdev.observability.prometheus import START_TIMEOUT, DockerLauncher, PrometheusServer
from meshdev.runtime.base import RuntimeFailure
from tests.e2e.meshrun import MeshUp, env_for
from tests.support import free_port

pytestmark = [pytest.mark.docker]

# `sh -c SCRIPT ARGS...`: the flags meshdev passes arrive as $0 and on; the first is the config.
EXITING = """\
FROM {base}
ENTRYPOINT ["sh", "-c", "echo starting >&2; echo \\"error loading config from $0\\" >&2; exit 3"]
"""
SAID = "error loading config from --config.file=/prometheus-meshdev/prometheus.json"


@pytest.fixture(scope="module")
def exiting_image(docker_client: docker.DockerClient, docker_base_image: str) -> Iterator[str]:
    tag = f"meshdev-test-prometheus-exits:{os.getpid()}"
    dockerfile = EXITING.format(base=docker_base_image).encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, pull=False)
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


def _labelled(client: docker.DockerClient, mesh: str) -> list[str]:
    flt: dict[str, str | list[str] | bool] = {"label": f"meshdev.mesh={mesh}"}
    return [str(c.name) for c in client.containers.list(all=True, filters=flt)]


def _sweep(client: docker.DockerClient, mesh: str) -> None:
    flt: dict[str, str | list[str] | bool] = {"label": f"meshdev.mesh={mesh}"}
    for c in client.containers.list(all=True, filters=flt):
        c.remove(force=True)
    for n in client.networks.list(filters=flt):
        n.remove()


async def test_an_exited_container_is_said_at_once_with_its_code_and_log(
    tmp_path: Path, docker_client: docker.DockerClient, exiting_image: str
) -> None:
    mesh = f"promx-{os.getpid()}"
    settings = PrometheusSettings(port=free_port(), image=exiting_image)
    server = PrometheusServer(
        mesh, settings, tmp_path / "prometheus", DockerLauncher(mesh, exiting_image)
    )
    began = time.monotonic()
    try:
        with pytest.raises(RuntimeFailure) as failed:
            await server.start()
        took = time.monotonic() - began
        message = str(failed.value)
        # Only the readiness deadline ended it before.
        assert took < START_TIMEOUT / 3, (took, message)
        assert message.startswith("prometheus exited at its start with code 3;"), message
        assert failed.value.exit_code == 3
        assert message.splitlines()[-2:] == ["  starting", f"  {SAID}"], message
        # Its container is not left behind, exited, holding the name the next `up` needs.
        assert _labelled(docker_client, mesh) == []
    finally:
        _sweep(docker_client, mesh)


MESH = """\
name: {name}
services:
  web:
    image: {base}
    command: python3 -m http.server --bind $HOST $PORT
ingress:
  port: {port}
  routes: [{{to: web}}]
prometheus: {{port: {prom}, image: {image}}}
"""


@pytest.mark.slow
def test_up_fails_with_the_containers_exit_code_and_log(
    tmp_path: Path,
    docker_client: docker.DockerClient,
    docker_base_image: str,
    exiting_image: str,
) -> None:
    name = f"promup-{os.getpid()}"
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(
        MESH.format(
            name=name,
            base=docker_base_image,
            port=free_port(),
            prom=free_port(),
            image=exiting_image,
        )
    )
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        up.wait_for("starting ", 600)  # images built: from here it is the start itself
        began = time.monotonic()
        code = up.proc.wait(120)
        took = time.monotonic() - began
        up.stop()
        output = "\n".join(up.lines)
        assert code == 1, output
        assert "Error: prometheus exited at its start with code 3;" in output
        assert SAID in output
        assert "scraping the sidecars" not in output
        assert took < START_TIMEOUT, (took, output)
        assert _labelled(docker_client, name) == []
    finally:
        if up.proc.poll() is None:
            up.stop()
        _sweep(docker_client, name)
