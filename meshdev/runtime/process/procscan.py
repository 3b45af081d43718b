"""Finding and stopping the local processes of a mesh by their label.

Processes carry the mesh's label as environment variables (MESHDEV_MESH, MESHDEV_POD, ...),
which every child inherits, so a shell, the app it runs and anything that app forks are all
found again from /proc: by `meshdev down` in another process, or after a crash.

A label can be lost, though: an app that rewrites its process title (redis-server does)
overwrites the memory /proc/PID/environ shows, and one started with an empty environment never
had it. So each pod process is also started as the leader of its own session and process
group, and what a pod's leader leads is the pod's too: it is found through the session id in
/proc/PID/stat and stopped with its whole group. A leader that lost its own label is found by
the record its runtime keeps of it (`record`, `recorded_pid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
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


@dataclass(frozen=True, slots=True)
class _Stat:
    """The fields of /proc/PID/stat this module needs."""

    state: str
    pgrp: int
    session: int
    start: int  # clock ticks after boot: with the boot, what tells a reused pid from the old


def labelled_processes(mesh: str | None = None) -> list[LabelledProcess]:
    """The live processes labelled for `mesh` (any mesh if None), and the unlabelled ones in
    the session of a labelled session leader, under that leader's label."""
    out: list[LabelledProcess] = []
    unlabelled: list[int] = []
    leaders: dict[int, LabelledProcess] = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            raw = (entry / "environ").read_bytes()
            if b"MESHDEV_MESH=" not in raw:
                unlabelled.append(pid)
                continue
            stat = _stat(pid)
        except OSError:
            continue  # gone, or not ours to read
        if stat.state == "Z":
            continue
        env = dict(
            item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
        )
        if ENV_MESH not in env or (mesh is not None and env[ENV_MESH] != mesh):
            continue
        found = LabelledProcess(
            pid=pid,
            mesh=env[ENV_MESH],
            pod=env.get(ENV_POD, ""),
            role=env.get(ENV_ROLE, ""),
            address=env.get(ENV_ADDRESS, ""),
            service=env.get(ENV_SERVICE, ""),
            subset=env.get(ENV_SUBSET, ""),
        )
        out.append(found)
        # Only a session the label's owner leads is the pod's: a labelled process in someone
        # else's session (a shell a user exported the label in) must not take that along.
        if stat.session == pid:
            leaders[pid] = found
    leaders.pop(os.getsid(0), None)  # never our own session, whoever leads it
    if leaders:
        for pid in unlabelled:
            try:
                stat = _stat(pid)
            except OSError:
                continue
            if stat.state != "Z" and stat.session in leaders:
                out.append(dataclasses.replace(leaders[stat.session], pid=pid))
    return out


def _stat(pid: int) -> _Stat:
    # "pid (name) S ppid pgrp session ..." -- the fields follow the last ')' since names may
    # hold spaces and parentheses; starttime is the 22nd field.
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()
    return _Stat(fields[0], pgrp=int(fields[2]), session=int(fields[3]), start=int(fields[19]))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return _stat(pid).state != "Z"
    except OSError:
        return False


# -- records of the processes a runtime started ---------------------------------------------


@functools.cache
def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _identity(pid: int) -> str | None:
    """What tells this process from a later one given the same pid: its boot and start time."""
    try:
        return f"{_boot_id()} {_stat(pid).start}"
    except OSError:
        return None


def record(path: Path, pid: int) -> None:
    """Note at `path` which process `pid` is, so that it is found again without its label."""
    identity = _identity(pid)
    if identity is not None:
        path.write_text(f"{pid} {identity}\n")


def recorded_pid(path: Path) -> int | None:
    """The process `record` noted at `path`, if that very process still runs (not a later one
    that got its pid)."""
    try:
        pid_text, identity = path.read_text().strip().split(" ", 1)
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _identity(pid) == identity and alive(pid) else None


# -- stopping --------------------------------------------------------------------------------


async def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever still runs after `grace` seconds.

    A pid that leads its own process group is signalled with its group, and one that leads its
    own session with every process of that session: a pod's shell dies of SIGTERM at once,
    while the app it forked may not, and once orphaned that app is found only by the group and
    session ids it keeps (those ids are not reused while a process still has them).
    """
    own_group, own_session = os.getpgid(0), os.getsid(0)
    groups: set[int] = set()
    sessions: set[int] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid != own_group:
                groups.add(pid)
            if os.getsid(pid) == pid != own_session:
                sessions.add(pid)

    def members() -> set[int]:
        return _members(groups, sessions) if groups or sessions else set()

    def send(sig: int) -> None:
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        for pid in set(pids) | members():
            _signal(pid, sig)

    send(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while any(alive(p) for p in pids) or members():
        if loop.time() > deadline:
            send(signal.SIGKILL)
            break
        await asyncio.sleep(0.05)


def _members(groups: set[int], sessions: set[int]) -> set[int]:
    """The live processes (not zombies, not this one) in any of `groups` or `sessions`."""
    out: set[int] = set()
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = _stat(int(entry.name))
        except OSError:
            continue
        if stat.state != "Z" and (stat.pgrp in groups or stat.session in sessions):
            out.add(int(entry.name))
    return out


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
