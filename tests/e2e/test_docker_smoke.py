"""The Docker path, proven end to end: build the example from the base image, run it, call it.

This is the smallest thing meshdev's docker runtime does (build, run, publish on loopback, wait
for health), so CI shows the engine and the base image work before any mesh is involved.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from docker.errors import BuildError, DockerException, NotFound
from docker.models.containers import Container

from tests.support import ROOT

pytestmark = pytest.mark.docker

EXAMPLE = ROOT / "examples" / "flask-app"
LABEL = {"meshdev.test": "smoke"}
APP_PORT = 9090
HEALTH_TIMEOUT_S = 30.0

# The test's own requests go straight to 127.0.0.1, whatever proxy the machine sets.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> tuple[int, bytes]:
    try:
        with _DIRECT.open(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


@pytest.fixture
def smoke_labels() -> dict[str, str]:
    """Labels for this run's containers (the image gets the shared one); all are removed after."""
    return {**LABEL, "meshdev.test.run": uuid.uuid4().hex[:12]}


@pytest.fixture
def example_image(
    docker_client: docker.DockerClient, docker_base_image: str, smoke_labels: dict[str, str]
) -> Iterator[str]:
    tag = f"meshdev-smoke:{smoke_labels['meshdev.test.run']}"
    try:
        docker_client.images.build(
            path=str(EXAMPLE),
            tag=tag,
            buildargs={"BASE_IMAGE": docker_base_image},
            # Only the shared label: the classic builder adds one LABEL layer per label, and the
            # run's own would leave the shared one behind on an untagged parent.
            labels=LABEL,
            rm=True,
            forcerm=True,
        )
    except BuildError as exc:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
        pytest.fail(f"building {EXAMPLE} from {docker_base_image} failed: {exc}\n{log[-3000:]}")
    try:
        yield tag
    finally:
        _remove_containers(docker_client, smoke_labels)
        # noprune keeps the unlabelled parent layers (pip install included): they are the build
        # cache that makes the next run take seconds.
        with contextlib.suppress(NotFound):
            docker_client.images.remove(tag, force=True, noprune=True)


def _remove_containers(client: docker.DockerClient, labels: dict[str, str]) -> None:
    wanted = [f"{k}={v}" for k, v in labels.items()]
    for container in client.containers.list(all=True, filters={"label": wanted}):
        # NotFound: it went away on its own meanwhile, which is what we wanted.
        with contextlib.suppress(NotFound):
            container.remove(force=True)


@pytest.fixture
def running_app(
    docker_client: docker.DockerClient, example_image: str, smoke_labels: dict[str, str]
) -> Iterator[tuple[Container, str]]:
    container: Container = docker_client.containers.run(
        example_image,
        detach=True,
        environment={"PORT": str(APP_PORT), "SERVICE": "smoke", "VERSION": "v7", "POD": "smoke-0"},
        ports={f"{APP_PORT}/tcp": ("127.0.0.1", 0)},  # 0: the engine picks a free port
        labels=smoke_labels,
    )
    try:
        yield container, _wait_healthy(container)
    finally:
        _remove_containers(docker_client, smoke_labels)


def _wait_healthy(container: Container) -> str:
    """The app's base URL once /healthz answers 200; fails with the container's log if not."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    last_error = "no published port yet"
    while time.monotonic() < deadline:
        container.reload()
        if container.status in {"exited", "dead"}:
            break
        bindings = container.ports.get(f"{APP_PORT}/tcp") or []
        if bindings:
            url = f"http://127.0.0.1:{bindings[0]['HostPort']}"
            try:
                status, _ = _get(url + "/healthz")
            except OSError as exc:
                last_error = str(exc)
            else:
                if status == 200:
                    return url
                last_error = f"/healthz answered {status}"
        time.sleep(0.1)
    logs = _logs(container)
    pytest.fail(
        f"container {container.short_id} ({container.status}) never got healthy: "
        f"{last_error}\n--- its log ---\n{logs}"
    )


def _logs(container: Container) -> str:
    try:
        return bytes(container.logs(tail=50)).decode(errors="replace")
    except DockerException as exc:
        return f"(no log: {exc})"


def _json(body: bytes) -> Any:
    return json.loads(body)


def test_example_image_serves_its_identity_and_status_codes(
    docker_client: docker.DockerClient,
    running_app: tuple[Container, str],
) -> None:
    container, url = running_app

    status, body = _get(url + "/")
    assert status == 200, body
    who = _json(body)
    assert (who["service"], who["version"], who["pod"]) == ("smoke", "v7", "smoke-0")
    # Docker names the container's host after its id, so this is the container answering.
    container.reload()
    assert who["hostname"] == container.attrs["Config"]["Hostname"]

    status, body = _get(url + "/status/418")
    assert status == 418
    assert _json(body) == {"pod": "smoke-0", "status": 418}

    assert docker_client.images.get(container.attrs["Image"]).labels["meshdev.test"] == "smoke"

    # The app is PID 1 and must exit on SIGTERM itself; a SIGKILL after the grace would be 137.
    container.stop(timeout=20)
    container.reload()
    assert container.attrs["State"]["ExitCode"] == 0, _logs(container)
