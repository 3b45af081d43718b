"""Where a mesh keeps its local files: logs, sidecar configs, the session's status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# What a running `meshdev up` writes about itself, for `status` and `down` in other terminals.
STATE_FILE = "session.json"


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
