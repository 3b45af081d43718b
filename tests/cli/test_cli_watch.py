"""`meshdev watch`'s arguments: admin URLs or --mesh, worded refusals, and --web on a taken
port (the real command line, as a user types it)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.support import MESHDEV


def _watch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MESHDEV, "watch", *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_watch_needs_admin_urls_or_a_mesh(tmp_path: Path) -> None:
    done = _watch(cwd=tmp_path)
    assert done.returncode == 2
    assert "give either ADMIN_URLs or --mesh FILE" in done.stderr
    both = _watch("http://127.0.0.1:1", "--mesh", "mesh.yaml", cwd=tmp_path)
    assert both.returncode == 2


def test_watch_mesh_of_no_running_up_is_worded(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("name: nobody-runs-me\nservices:\n  web: {command: python app.py}\n")
    done = _watch("--mesh", str(mesh), cwd=tmp_path)
    assert done.returncode == 1
    assert "no `meshdev up` of mesh nobody-runs-me is running" in done.stderr


def test_watch_web_on_a_taken_port_is_worded(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _watch("http://127.0.0.1:1", "--web", str(port), cwd=tmp_path)
    assert done.returncode == 1
    assert f"127.0.0.1:{port} is taken" in done.stderr
