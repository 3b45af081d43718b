"""Finding and stopping the local processes of a mesh by their label.

Processes carry the mesh's label as environment variables (MESHDEV_MESH, MESHDEV_POD, ...),
which every child inherits, so a shell, the app it runs and anything that app forks are all
found again from /proc: by `meshdev down` in another process, or after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

ENV_MESH = "MESHDEV_MESH"
ENV_POD = "MESHDEV_POD"
ENV_ROLE = "MESHDEV_ROLE"
ENV_ADDRESS = "MESHDEV_ADDRESS"
ENV_SERVICE = "MESHDEV_SERVICE"
ENV_SUBSET = "MESHDEV_SUBSET"


@dataclass(frozen=True, slots=True)
class LabelledProcess:
    pid: int
    mesh: str
    pod: str
    role: str
    address: str
    service: str
    subset: str


def labelled_processes(mesh: str | None = None) -> list[LabelledProcess]:
    out: list[LabelledProcess] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "environ").read_bytes()
            if b"MESHDEV_MESH=" not in raw or _is_zombie(entry):
                continue
        except OSError:
            continue  # gone, or not ours to read
        env = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        if ENV_MESH not in env or (mesh is not None and env[ENV_MESH] != mesh):
            continue
        out.append(
            LabelledProcess(
                pid=int(entry.name),
                mesh=env[ENV_MESH],
                pod=env.get(ENV_POD, ""),
                role=env.get(ENV_ROLE, ""),
                address=env.get(ENV_ADDRESS, ""),
                service=env.get(ENV_SERVICE, ""),
                subset=env.get(ENV_SUBSET, ""),
            )
        )
    return out


def _is_zombie(entry: Path) -> bool:
    # "pid (name) S ..." -- the state follows the last ')' since names may hold spaces.
    stat = (entry / "stat").read_text()
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return not _is_zombie(Path(f"/proc/{pid}"))
    except OSError:
        return False


async def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever still runs after `grace` seconds."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + grace
    while any(alive(p) for p in pids):
        if asyncio.get_running_loop().time() > deadline:
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            break
        await asyncio.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
