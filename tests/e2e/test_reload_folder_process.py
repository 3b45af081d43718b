"""Live reload when the mesh file's folder is replaced while `meshdev up --headless` runs on
the process runtime (`git checkout` of a branch without the folder and back, a tool that
renames a fresh copy into place): the saves after it are still applied."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.meshrun import MeshUp, env_for, get
from tests.e2e.test_reload_services_process import mesh_text
from tests.support import free_port, wait_until_sync

pytestmark = pytest.mark.slow


def test_saves_apply_after_the_folder_is_deleted_and_made_again(tmp_path: Path) -> None:
    name, port = f"rf-{os.getpid()}", free_port()
    # The state folder (env_for) stays out of the folder that is replaced.
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "mesh.yaml"
    path.write_text(mesh_text(name, port, extra=False))
    with MeshUp(path, env_for(tmp_path), "--runtime", "process") as up:
        up.wait_for("ready:")
        shutil.rmtree(folder)
        up.wait_for(f"{path}: not applied, still serving v1", timeout=30)
        folder.mkdir()
        path.write_text(mesh_text(name, port, extra=False, replicas=2))
        assert "started 1, stopped 0 pods" in up.wait_for("applied v2", timeout=60)
        # Said before or after that apply (the deletion's event may have read the file first).
        followed = f"{path}: its folder was replaced; following the new one"
        wait_until_sync(lambda: followed in up.lines, "the watcher saying it follows", timeout=10)
        # Followed, not just read once: the watcher's old inotify watch saw nothing of these.
        path.write_text(mesh_text(name, port, extra=False, replicas=3))
        assert "started 1, stopped 0 pods" in up.wait_for("applied v3", timeout=60)
        assert {p["name"] for p in up.status()["pods"]} == {"ingress", "web-0", "web-1", "web-2"}
        assert get(f"http://127.0.0.1:{port}/")[0] == 200


def test_a_folder_renamed_into_place_is_applied_and_followed(tmp_path: Path) -> None:
    name, port = f"rr-{os.getpid()}", free_port()
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "mesh.yaml"
    path.write_text(mesh_text(name, port, extra=False))
    fresh = tmp_path / "project.new"
    fresh.mkdir()
    (fresh / "mesh.yaml").write_text(mesh_text(name, port, extra=True))
    with MeshUp(path, env_for(tmp_path), "--runtime", "process") as up:
        up.wait_for("ready:")
        folder.rename(tmp_path / "project.old")
        fresh.rename(folder)
        assert "started 1, stopped 0 pods" in up.wait_for("applied v2", timeout=60)
        path.write_text(mesh_text(name, port, extra=False))
        assert "stopped 1 pods" in up.wait_for("applied v3", timeout=60)
