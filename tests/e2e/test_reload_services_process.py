"""Saves that add and remove whole services while `meshdev up --headless` runs on the process
runtime, as a user makes them: each is applied, and the saves after them still are."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from meshdev.config import parse_mesh
from meshdev.config.model import Mesh
from meshdev.control import ReloadReport
from meshdev.runtime.process.runtime import ProcessRuntime
from meshdev.session import Session
from tests.e2e.meshrun import MeshUp, env_for, get
from tests.support import free_port, wait_until

pytestmark = pytest.mark.slow

# Python's own file server: a pod starts in a fraction of a second.
SERVER = "python3 -m http.server --bind $HOST $PORT"

MESH = """\
name: {name}
services:
{extra}  web:
    command: {server}
    replicas: {replicas}
ingress:
  port: {port}
  routes:
    - {{match: {{prefix: /}}, to: web}}
"""


def mesh_text(name: str, port: int, *, extra: bool, replicas: int = 1) -> str:
    more = f"  extra:\n    command: {SERVER}\n" if extra else ""
    return MESH.format(name=name, port=port, extra=more, server=SERVER, replicas=replicas)


def test_a_save_that_removes_a_service_is_applied_and_later_saves_still_are(
    tmp_path: Path,
) -> None:
    name, port = f"rs-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(mesh_text(name, port, extra=False))
    with MeshUp(path, env_for(tmp_path), "--runtime", "process") as up:
        up.wait_for("ready:")
        path.write_text(mesh_text(name, port, extra=True))
        assert "started 1, stopped 0 pods" in up.wait_for("applied v2", timeout=60)
        # The removed service's pod still takes the new endpoints while it drains; rendering
        # its config once raised KeyError and ended the file's follower for good.
        path.write_text(mesh_text(name, port, extra=False))
        assert "stopped 1 pods" in up.wait_for("applied v3", timeout=60)
        assert {p["name"] for p in up.status()["pods"]} == {"ingress", "web-0"}
        path.write_text(mesh_text(name, port, extra=False, replicas=2))
        assert "started 1, stopped 0 pods" in up.wait_for("applied v4", timeout=60)
        assert get(f"http://127.0.0.1:{port}/")[0] == 200


def test_a_file_put_back_after_a_rejected_save_ends_the_rejection(tmp_path: Path) -> None:
    name, port = f"rb-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    good = mesh_text(name, port, extra=False)
    path.write_text(good)
    with MeshUp(path, env_for(tmp_path), "--runtime", "process") as up:
        up.wait_for("ready:")
        path.write_text(good.replace("replicas: 1", "replicas: -1"))
        up.wait_for(f"{path}: not applied, still serving v1", timeout=60)
        assert up.status()["last_reload"]["ok"] is False
        # The user undoes the edit: the file is what v1 serves again. Skipped as "touched,
        # not changed", it left the rejection on show (status, the dashboard's banner).
        path.write_text(good)
        assert "(0 changed)" in up.wait_for("applied v2", timeout=60)
        assert up.status()["last_reload"]["ok"] is True


def test_a_save_that_moves_the_ingress_port_moves_the_gateway(tmp_path: Path) -> None:
    name, port, moved = f"rp-{os.getpid()}", free_port(), free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(mesh_text(name, port, extra=False))
    with MeshUp(path, env_for(tmp_path), "--runtime", "process") as up:
        up.wait_for("ready:")
        # The new gateway's admin address was checked while the old gateway still held it:
        # "reload failed ... the gateway's admin port ... free it or change the port".
        path.write_text(mesh_text(name, moved, extra=False))
        line = up.wait_for("applied v2", timeout=60)
        assert "started 1" in line, up.lines
        assert get(f"http://127.0.0.1:{moved}/")[0] == 200
        assert not any("reload failed" in line for line in up.lines), up.lines


def test_a_save_that_renames_the_running_mesh_is_rejected_with_its_place(tmp_path: Path) -> None:
    name, port = f"rn-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    good = mesh_text(name, port, extra=False)
    path.write_text(good)
    up = MeshUp(path, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        # Applied, the running pods kept the old name's labels and state: `status` of this
        # file said "not running", the old name's state went stale.
        path.write_text(good.replace(f"name: {name}", f"name: {name}-b"))
        up.wait_for(f"{path}: not applied, still serving v1", timeout=60)
        problem = up.wait_for("  ")
        assert problem.startswith(f"  {path}:1:7 name: the running mesh is named '{name}'")
        status = up.status()
        assert (status["mesh"], status["running"], status["last_reload"]["ok"]) == (
            name,
            True,
            False,
        )
    finally:
        up.run("down", "--name", name)
        up.stop()


def test_a_save_that_removes_the_ingress_stops_the_gateway_and_later_saves_still_apply(
    tmp_path: Path,
) -> None:
    name, port = f"ri-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    good = mesh_text(name, port, extra=False)
    path.write_text(good)
    with MeshUp(path, env_for(tmp_path), "--runtime", "process") as up:
        up.wait_for("ready:")
        # The gateway on its way out has no config to render: that raised (an assert) and
        # ended the file's follower for good, and then Ctrl-C hung and left every pod behind.
        path.write_text(good.split("ingress:")[0])
        assert "stopped 1 pods" in up.wait_for("applied v2", timeout=60)
        assert {p["name"] for p in up.status()["pods"]} == {"web-0"}
        path.write_text(good)
        assert "started 1" in up.wait_for("applied v3", timeout=60)
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        assert up.stop(timeout=30) == 0


async def test_a_save_meshdev_fails_to_apply_is_said_and_the_next_save_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path / "state"))
    name, port = f"rf-{os.getpid()}", free_port()
    path = tmp_path / "mesh.yaml"
    path.write_text(mesh_text(name, port, extra=False))
    lines: list[str] = []
    mesh = parse_mesh(path.read_bytes(), str(path), tmp_path)
    session = Session(mesh, path, ProcessRuntime(mesh, path), lines.append)
    assert (await session.start()).ok
    applying = session.control.apply
    failures = iter([KeyError("extra")])

    async def apply_failing_once(new: Mesh) -> ReloadReport:
        # Stands for a bug of meshdev's in a reload (two were a KeyError and an assert).
        for exc in failures:
            raise exc
        return await applying(new)

    monkeypatch.setattr(session.control, "apply", apply_failing_once)
    following = asyncio.create_task(session.follow_file())
    try:
        path.write_text(mesh_text(name, port, extra=True))
        await wait_until(lambda: any("applying it failed: KeyError" in ln for ln in lines), "said")
        assert f"{path}: not applied, still serving v1:" in lines
        assert session.last_reload is not None and session.last_reload["ok"] is False
        path.write_text(mesh_text(name, port, extra=False, replicas=2))
        await wait_until(lambda: any(ln.startswith("applied v") for ln in lines), "applied")
        assert not following.done()
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError, KeyError):
            await following
        await session.stop()
