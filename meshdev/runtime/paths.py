"""Where a mesh keeps its local files: logs, sidecar configs, the session's status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# What a running `meshdev up` writes about itself, for `status` and `down` in other terminals.
STATE_FILE = "session.json"
# In the state's last_reload record: a dashboard key (the canary shift) applied this version,
# with the mesh file untouched.
BY_KEY = "by_key"


def state_root() -> Path:
    explicit = os.environ.get("MESHDEV_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "meshdev"


def mesh_dir(mesh: str) -> Path:
    path = state_root() / mesh
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def read_state(mesh_name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((mesh_dir(mesh_name) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def live_session_pid(state: dict[str, Any] | None) -> int | None:
    """The pid of the `meshdev up` that wrote `state`, if it still runs. A state file
    outlives an `up` that was killed (kill -9, a closed terminal), and its pid may since
    have gone to another program: that one must not count as the mesh's `up`."""
    pid = state.get("pid") if state is not None else None
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # someone else's process: alive, and its command line tells whose
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None  # it ended meanwhile
    except OSError:
        return pid  # no /proc (macOS): a live pid is all we can know
    return pid if b"meshdev" in cmdline else None


def trace_relay(mesh_name: str) -> tuple[str, str] | None:
    """Where the live `meshdev up` of this mesh serves its trace history, and the token it
    asks for (observability/trace_history.py); None when no live `up` serves one."""
    state = read_state(mesh_name)
    if state is None or live_session_pid(state) is None:
        return None
    url, token = state.get("traces_url"), state.get("token")
    if isinstance(url, str) and url and isinstance(token, str):
        return url, token
    return None


def mesh_following(path: Path) -> str | None:
    """The name of the mesh whose live `meshdev up` follows the file at `path`: how a
    command finds the mesh while its file is half edited and names nothing."""
    wanted = str(path.resolve())
    for state_file in sorted(state_root().glob(f"*/{STATE_FILE}")):
        try:
            data = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or data.get("file") != wanted:
            continue
        name = data.get("mesh")
        if isinstance(name, str) and live_session_pid(data) is not None:
            return name
    return None
