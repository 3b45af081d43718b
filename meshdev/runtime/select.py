"""Choosing a runtime: Docker when asked for or when an engine answers, else local processes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from meshdev.config.model import Mesh
from meshdev.runtime.base import Runtime, RuntimeFailure
from meshdev.runtime.process.runtime import ProcessRuntime

DEFAULT_BASE_IMAGE = "python:3.12-slim"


def base_image(flag: str | None, mesh: Mesh) -> str:
    """The flag wins, then MESHDEV_BASE_IMAGE (a machine's mirror), then mesh.yaml."""
    return flag or os.environ.get("MESHDEV_BASE_IMAGE") or mesh.base_image or DEFAULT_BASE_IMAGE


def docker_client(probe_timeout: int = 3) -> Any | None:
    """A client of an engine that answers a ping within `probe_timeout` seconds, or None."""
    try:
        import docker
        from docker.errors import DockerException

        from meshdev.runtime.docker.engine import connect
    except ImportError:
        return None
    with warnings.catch_warnings():
        # docker-py leaves the socket of a failed connect to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            # A short probe decides; the working client then allows slow calls under load.
            probe = docker.from_env(timeout=probe_timeout)
            probe.ping()
            probe.close()
        except (DockerException, OSError):
            return None
    try:
        return connect()
    except RuntimeFailure:
        return None


# Said once when the process runtime is chosen: it cannot capture traffic (that needs root and a
# network namespace per pod), so only clients that honour HTTP_PROXY are meshed there.
PROXY_NOTICE = (
    "process runtime: no traffic capture; apps reach services through HTTP_PROXY (their "
    "sidecar), which curl, Python's urllib/requests/httpx and Go's default client honour, "
    "but Node's http, Java's HttpClient and aiohttp (without trust_env) do not; "
    "see docs/capture.md"
)


def make_runtime(
    kind: str | None,
    mesh: Mesh,
    mesh_file: Path,
    base: str,
    notice: Any,
    *,
    capture: bool = True,
) -> Runtime:
    if kind == "process":
        notice(PROXY_NOTICE)
        return ProcessRuntime(mesh, mesh_file)
    client = docker_client()
    if client is None:
        if kind == "docker":
            raise RuntimeFailure(
                "no Docker engine answers (is dockerd running? is DOCKER_HOST right?); "
                "use --runtime process to run the pods as local processes"
            )
        notice("no Docker engine answers: running the pods as local processes instead")
        notice(PROXY_NOTICE)
        return ProcessRuntime(mesh, mesh_file)
    from meshdev.runtime.docker.runtime import DockerRuntime

    if not capture:
        notice("docker runtime without traffic capture: apps reach services through HTTP_PROXY")
    return DockerRuntime(mesh, mesh_file, base, client=client, capture=capture)
