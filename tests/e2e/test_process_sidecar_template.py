"""Sidecars forked by the mesh's template (process runtime), through the real thing: from
outside each looks as an exec'd one did (its pod's labels in /proc/PID/environ, `-m meshdev
sidecar --config FILE` as its command line, its own session), `down` finds every one after the
control process is killed -9, and a sidecar's exit code reaches self-healing through the
template."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from meshdev.runtime.process import procscan
from meshdev.runtime.process.template import ROLE as TEMPLATE_ROLE
from tests.e2e.meshrun import MeshUp, env_for
from tests.support import free_port, wait_until_sync

pytestmark = [pytest.mark.slow]

APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

HTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

MESH = """\
name: {name}
services:
  web: {{command: python3 app.py, replicas: 2}}
  other: {{command: python3 app.py}}
ingress:
  port: {port}
  routes:
    - {{to: web}}
"""


def _up(tmp_path: Path, name: str) -> tuple[MeshUp, Path]:
    (tmp_path / "app.py").write_text(APP)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=free_port()))
    env = {**env_for(tmp_path), "MESHDEV_SIDECAR_START": "template"}
    return MeshUp(mesh_file, env, "--runtime", "process"), mesh_file


def _ppid(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rfind(")") + 2 :].split()[1])


def test_forked_sidecars_look_exec_d_and_down_finds_them_after_kill_9(tmp_path: Path) -> None:
    name = f"tmpl-{os.getpid()}"
    up, mesh_file = _up(tmp_path, name)
    try:
        up.wait_for("ready:")
        labelled = procscan.labelled_processes(name)
        [template] = [p for p in labelled if p.role == TEMPLATE_ROLE]
        assert template.pod == ""  # not a pod: status and stop_pod leave it alone
        sidecars = {p.pod: p for p in labelled if p.role == "sidecar"}
        assert set(sidecars) == {"ingress", "web-0", "web-1", "other-0"}
        state = tmp_path / "state" / name
        for pod, proc in sidecars.items():
            assert _ppid(proc.pid) == template.pid  # forked, not exec'd
            assert os.getsid(proc.pid) == os.getpgid(proc.pid) == proc.pid
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            assert f"MESHDEV_POD={pod}".encode() in environ
            assert b"MESHDEV_ROLE=sidecar" in environ
            args = [a for a in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0") if a]
            assert args[1:] == [
                b"-m",
                b"meshdev",
                b"sidecar",
                b"--config",
                str(state / f"{pod}.sidecar.json").encode(),
            ]
        assert up.status()["pods"] and {p["name"] for p in up.status()["pods"]} == {
            "ingress",
            "web-0",
            "web-1",
            "other-0",
        }

        up.stop(signal.SIGKILL)
        # Its runtime gone, the template exits (EOF on its requests); the sidecars run on.
        wait_until_sync(
            lambda: not procscan.alive(template.pid) or None, "the template's exit", timeout=10
        )
        left = {p.pid for p in procscan.labelled_processes(name) if p.role == "sidecar"}
        assert left == {p.pid for p in sidecars.values()}
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
    for pod, proc in sidecars.items():
        assert f"{pod} (sidecar, pid {proc.pid})" in res.stdout
    assert procscan.labelled_processes(name) == []


def test_a_forked_sidecars_exit_code_reaches_self_healing(tmp_path: Path) -> None:
    name = f"tmpl-heal-{os.getpid()}"
    up, mesh_file = _up(tmp_path, name)
    try:
        up.wait_for("ready:")
        [sidecar] = [
            p
            for p in procscan.labelled_processes(name)
            if p.pod == "other-0" and p.role == "sidecar"
        ]
        # SIGUSR1's default action ends it: 128 + 10, as a shell and Docker report it.
        os.kill(sidecar.pid, signal.SIGUSR1)
        line = up.wait_for("pod other-0: its sidecar exited")
        assert "exited with code 138; restarting now" in line, line
        up.wait_for("pod other-0: restarted (1 restarts)")
        pod = next(p for p in up.status()["pods"] if p["name"] == "other-0")
        assert (pod["state"], pod["restarts"], pod["exit_code"]) == ("running", 1, 138)
        [again] = [
            p
            for p in procscan.labelled_processes(name)
            if p.pod == "other-0" and p.role == "sidecar"
        ]
        assert again.pid != sidecar.pid
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 10
    while procscan.labelled_processes(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert procscan.labelled_processes(name) == []
