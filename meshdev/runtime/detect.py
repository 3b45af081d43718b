"""Finding a mesh that runs (for `status`) and removing all of it (for `down`), from any
process: by the session's state file, by Docker labels, and by process labels."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshdev.config.model import Mesh
from meshdev.runtime.base import Runtime
from meshdev.runtime.paths import STATE_FILE, mesh_dir, read_state
from meshdev.runtime.process import procscan
from meshdev.runtime.process.runtime import ProcessRuntime
from meshdev.runtime.select import DEFAULT_BASE_IMAGE, docker_client


def _stub_mesh(name: str) -> Mesh:
    # Discovery and removal need only the name; the file may be gone or broken by now.
    return Mesh.model_construct(name=name, services={})


def running_runtime(name: str, mesh_file: Path, state: dict[str, Any] | None) -> Runtime | None:
    kind = (state or {}).get("runtime")
    if kind == "process" or (kind is None and procscan.labelled_processes(name)):
        return ProcessRuntime(_stub_mesh(name), mesh_file)
    client = docker_client()
    if client is None:
        return None
    from meshdev.runtime.docker.runtime import DockerRuntime

    return DockerRuntime(_stub_mesh(name), mesh_file, DEFAULT_BASE_IMAGE, client=client)


async def remove_everything(name: str, mesh_file: Path, echo: Callable[[str], None]) -> list[str]:
    """Stop a live `meshdev up` of this mesh (it tears down itself), then sweep by label."""
    state = read_state(name)
    pid = (state or {}).get("pid")
    stopped: list[str] = []
    if isinstance(pid, int) and pid != os.getpid() and procscan.alive(pid):
        echo(f"asking meshdev up (pid {pid}) to stop and remove its pods")
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if not procscan.alive(pid):
                break
            await asyncio.sleep(0.1)
        pods = len((state or {}).get("pods", []))
        stopped.append(f"meshdev up (pid {pid}) with its {pods} pods")
    removed = stopped + await ProcessRuntime(_stub_mesh(name), mesh_file).teardown()
    client = docker_client()
    if client is not None:
        from meshdev.runtime.docker.runtime import DockerRuntime

        runtime = DockerRuntime(_stub_mesh(name), mesh_file, DEFAULT_BASE_IMAGE, client=client)
        removed += await runtime.teardown()
    # A crashed session leaves its state file behind; nothing it describes runs any more.
    (mesh_dir(name) / STATE_FILE).unlink(missing_ok=True)
    for line in removed:
        echo(f"  removed {line}")
    return removed
