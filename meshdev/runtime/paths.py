"""Where a mesh keeps its local files: logs, sidecar configs, the session's status."""

from __future__ import annotations

import os
from pathlib import Path


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
