"""Shared fixtures, and the rules for tests that need a Docker engine.

A test marked `@pytest.mark.docker` gets a live `docker_client`. Where no engine answers it is
skipped with the reason, except when MESHDEV_REQUIRE_DOCKER=1 (CI sets it): then it fails, and
so does any docker test that would have been skipped for any other reason, so CI can never go
green by quietly skipping the Docker path.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    import docker

REQUIRE_DOCKER_ENV = "MESHDEV_REQUIRE_DOCKER"
BASE_IMAGE_ENV = "MESHDEV_BASE_IMAGE"
DEFAULT_BASE_IMAGE = "python:3.12-slim"


def docker_required() -> bool:
    return os.environ.get(REQUIRE_DOCKER_ENV) == "1"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the running test, or fail it when CI demands Docker."""
    if docker_required():
        pytest.fail(f"{REQUIRE_DOCKER_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of a Docker engine that answered a ping."""
    # Imported here so test runs that never touch Docker never load the SDK.
    import docker
    from docker.errors import DockerException

    failure: str | None = None
    # docker-py leaves the socket of a failed connect unclosed; it is collected here, with its
    # ResourceWarning ignored, rather than at some later point where `-W error` turns it into a
    # failure of whatever test happens to be running.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            # from_env already asks the engine for its API version; ping covers a pinned one.
            # requests' errors (an engine that vanished mid-call) are OSErrors.
            client = docker.from_env(timeout=30)
            client.ping()
        except (DockerException, OSError) as exc:
            failure = f"no Docker engine answers ({exc}); start one or run scripts/docker-setup.sh"
        if failure is not None:
            gc.collect()
    if failure is not None:
        skip_or_fail(failure)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image() -> str:
    """meshdev's base-image setting: the image every image meshdev builds starts from."""
    return os.environ.get(BASE_IMAGE_ENV) or DEFAULT_BASE_IMAGE


@pytest.fixture(scope="session")
def docker_base_image(docker_client: docker.DockerClient, base_image: str) -> str:
    """The base image, present in the engine (pulled if it must be), or the test skips/fails."""
    from docker.errors import DockerException, ImageNotFound

    try:
        docker_client.images.get(base_image)
    except ImageNotFound:
        try:
            docker_client.images.pull(base_image)
        except DockerException as exc:
            skip_or_fail(
                f"base image {base_image!r} is not in the engine and cannot be pulled ({exc}); "
                f"set {BASE_IMAGE_ENV} to a local image (scripts/docker-setup.sh prints one)"
            )
    return base_image


@pytest.fixture(autouse=True)
def _docker_marker(request: pytest.FixtureRequest) -> None:
    # A docker-marked test needs an engine even when it does not ask for the client itself.
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_client")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and docker_required()
        and item.get_closest_marker("docker") is not None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_DOCKER_ENV}=1 but this docker test was skipped: {reason}"
    return report
