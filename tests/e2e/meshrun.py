"""Running `meshdev up --headless` as a user does, for end-to-end tests: a real process, a
copy of the example mesh under a unique name and port, and helpers to wait and clean up."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import MESHDEV, ROOT, free_port

EXAMPLE_DIR = ROOT / "examples" / "flask-app"


def example_copy(tmp: Path, name: str, port: int, text: str | None = None) -> Path:
    """The example mesh with its own name and ingress port, building from the example folder."""
    body = text or (EXAMPLE_DIR / "mesh.yaml").read_text()
    body = body.replace("name: demo", f"name: {name}", 1)
    body = body.replace("  port: 8000", f"  port: {port}", 1)
    body = body.replace("build: .", f"build: {EXAMPLE_DIR}")
    path = tmp / "mesh.yaml"
    path.write_text(body)
    return path


def env_for(tmp: Path) -> dict[str, str]:
    return {**os.environ, "MESHDEV_STATE_DIR": str(tmp / "state"), "NO_COLOR": "1"}


class MeshUp:
    """`meshdev up --headless` in the background, its output collected line by line."""

    def __init__(self, mesh_file: Path, env: dict[str, str], *extra: str) -> None:
        self.mesh_file = mesh_file
        self.env = env
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [MESHDEV, "up", "--headless", str(mesh_file), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self._q.empty():
                    break
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting {prefix!r}; output:\n" + "\n".join(self.lines))

    def __enter__(self) -> MeshUp:
        return self

    def __exit__(self, *_: object) -> None:
        # The mesh goes whatever the test did: `down` finds every leftover by its labels.
        self.run("down", str(self.mesh_file))
        self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MESHDEV, *args], capture_output=True, text=True, env=self.env, timeout=120
        )

    def status(self, name: str | None = None) -> dict[str, Any]:
        by_name = ["--name", name] if name else []
        res = self.run("status", "--json", *by_name, str(self.mesh_file))
        assert res.returncode == 0, res.stderr
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    def pod_unless_running(self, pod: str) -> dict[str, Any] | None:
        """`status`'s entry for `pod` once it is in any state but running (None while it is)."""
        entry: dict[str, Any] = next(p for p in self.status()["pods"] if p["name"] == pod)
        return None if entry["state"] == "running" else entry


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def admin_stats(admin_url: str, pattern: str) -> dict[str, int]:
    _, body = get(f"{admin_url}/stats?format=json&filter={urllib.parse.quote(pattern)}")
    return {s["name"]: s["value"] for s in json.loads(body)["stats"] if "value" in s}


# MESHDEV and free_port live in tests/support.py; they stay importable from here because
# benchmarks/reload_latency.py and benchmarks/up_speed.py take them from this module.
__all__ = [
    "EXAMPLE_DIR",
    "MESHDEV",
    "MeshUp",
    "admin_stats",
    "env_for",
    "example_copy",
    "free_port",
    "get",
]
