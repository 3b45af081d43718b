"""The code loop when a service's folder is replaced while `meshdev up --headless` runs on the
process runtime (`git checkout` of another branch renames or rewrites the folder whole): the
new folder's code rolls out, later saves in it still roll, `up` says it follows the new folder,
and no request fails under load meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from meshdev.loadgen import LoadGenerator, LoadSpec
from tests.e2e.meshrun import MeshUp, env_for, get
from tests.e2e.test_code_loop import APP, failed
from tests.support import free_port

pytestmark = pytest.mark.slow

MESH = """\
name: {name}
services:
  web:
    build: ./web
    command: python app.py
    replicas: 2
    watch: ["*.py"]
ingress:
  port: {port}
  routes:
    - {{match: {{prefix: /}}, to: web}}
"""


def write_app(folder: Path, code: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "app.py").write_text(APP.format(code=code, extra=""))


def codes(port: int, n: int = 20) -> set[str]:
    out = set()
    for _ in range(n):
        status, body = get(f"http://127.0.0.1:{port}/")
        assert status == 200, body
        out.add(json.loads(body)["code"])
    return out


async def test_a_replaced_service_folder_rolls_and_is_followed(tmp_path: Path) -> None:
    port = free_port()
    web = tmp_path / "web"
    write_app(web, "v1")
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH.format(name=f"cf-{os.getpid()}", port=port))
    up = MeshUp(path, env_for(tmp_path), "--runtime", "process")
    try:
        await asyncio.to_thread(up.wait_for, "ready:")
        gen = LoadGenerator(LoadSpec(f"http://127.0.0.1:{port}/", rps=40, retry_stale=False))
        gen.start()
        await asyncio.sleep(0.5)

        # As `git checkout` of a branch whose web/ differs: a new folder renamed into place.
        fresh = tmp_path / "web.new"
        write_app(fresh, "v2")
        web.rename(tmp_path / "web.old")
        fresh.rename(web)
        followed = f"web: code folder {web.resolve()} was replaced; following the new one"
        await asyncio.to_thread(up.wait_for, followed, 30)
        line = await asyncio.to_thread(up.wait_for, "web: rolled", 60)
        assert "web-0 -> web-0-r1" in line, line
        assert await asyncio.to_thread(codes, port) == {"v2"}

        # Followed, not read once: the old watch on the moved folder sees nothing of this.
        write_app(web, "v3")
        await asyncio.to_thread(up.wait_for, "web: rolled", 60)
        assert await asyncio.to_thread(codes, port) == {"v3"}

        # Deleted and made again (a tool that rewrites the folder): the same, once more.
        shutil.rmtree(web)
        await asyncio.sleep(0.5)
        write_app(web, "v4")
        await asyncio.to_thread(up.wait_for, "web: rolled", 60)
        assert await asyncio.to_thread(codes, port) == {"v4"}

        result = await gen.stop()
        assert result.responses >= 40, json.dumps(result.to_json())
        assert failed(result) == 0, json.dumps(result.to_json())
        rolls = [ln for ln in up.lines if "rolling its pods" in ln]
        assert len(rolls) == 3, rolls  # the folder gone meanwhile rolled nothing
    finally:
        up.run("down", str(path))
        up.stop()
