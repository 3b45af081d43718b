"""`meshdev up` with its dashboard in a real terminal (tmux), on the example mesh with the
process runtime: start load, trip the breaker, read the screen with capture-pane, quit with
q, and find nothing of the mesh left running."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshdev.runtime.process import procscan
from tests.e2e.meshrun import MeshUp, env_for, example_copy, get
from tests.support import MESHDEV, free_port, wait_until_sync

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 160, 50


class Tmux:
    """One tmux server of our own (-L), so nothing else the user runs is touched."""

    def __init__(self, name: str) -> None:
        self.socket = name
        self.session = name

    def run(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout

    def start(self, command: str, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.run(
            "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), command
        )

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def wait_for(self, check: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        """The screen once `check` passes on it."""
        screen = ""

        def showing() -> str | None:
            nonlocal screen
            screen = self.screen()
            return screen if check(screen) else None

        return wait_until_sync(
            showing, lambda: f"{what}; the screen:\n{screen}", timeout=timeout, step=0.2
        )

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def cluster_rows(screen: str) -> dict[str, str]:
    """The clusters panel's rows by cluster name (between its title and its bottom border)."""
    rows: dict[str, str] = {}
    inside = False
    for line in screen.splitlines():
        if "Clusters" in line and "╭" in line:
            inside = True
            continue
        if inside and "╰" in line:
            break
        if inside:
            cells = line.strip("│ ").split()
            if cells and cells[0] != "CLUSTER":
                rows[cells[0]] = line
    return rows


def breaker_tripped(screen: str) -> bool:
    return any(re.search(r"\s(OPEN|tripped)\s", row) for row in cluster_rows(screen).values())


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is required in CI (scripts/test.sh installs it)")
        pytest.skip("tmux is not installed (apt-get install -y tmux); required when CI=true")
    t = Tmux(f"meshdev-e2e-{os.getpid()}")
    try:
        yield t
    finally:
        t.kill()


def _shell_env(env: dict[str, str]) -> str:
    # PYTHONPATH too: run from a worktree with it set, the pytest process tests that tree, and
    # the meshdev in tmux must as well (not the one the venv was installed from).
    keep = ("MESHDEV_STATE_DIR", "PATH", "PYTHONPATH", "HOME", "LANG", "TERM", "VIRTUAL_ENV")
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k in keep)


def test_dashboard_in_a_real_terminal(tmp_path: Path, tmux: Tmux) -> None:
    name = f"tui-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    env = env_for(tmp_path)
    env.pop("NO_COLOR", None)
    env.update(LANG="C.UTF-8", TERM="xterm-256color")
    up = f"{shlex.quote(MESHDEV)} up --runtime process {shlex.quote(str(mesh_file))}"
    command = f"env {_shell_env(env)} {up}; echo meshdev-exit=$?; sleep 600"
    try:
        tmux.start(command)
        # Start-up happens in the app; then the dashboard with every sidecar streaming.
        screen = tmux.wait_for(
            lambda s: "sidecars 7/7 live" in s and "Clusters" in s, "the dashboard", 120
        )
        assert f"http://127.0.0.1:{port}/" in screen
        assert {"frontend", "backend", "backend.v1", "backend.v2"} <= set(cluster_rows(screen))

        tmux.keys("l")
        tmux.wait_for(
            lambda s: "load on" in s and re.search(r"sent [1-9]", s) is not None, "load", 30
        )
        screen = tmux.wait_for(
            lambda s: re.search(r"backend/items\s+[1-9]", s) is not None, "route traffic", 30
        )

        tmux.keys("b")
        screen = tmux.wait_for(breaker_tripped, "a breaker tripped on screen", 30)
        tripped = [c for c, row in cluster_rows(screen).items() if re.search(r"OPEN|tripped", row)]
        assert tripped, screen
        tmux.wait_for(lambda s: "503 UO (breaker open)" in s, "the burst's result", 30)

        # The Traces tab lists what the session's history read from the sidecars. With the
        # load stopped: while it runs, the newest rows lack the hops whose sidecars the
        # history has not read again yet (within a second).
        tmux.keys("l")
        tmux.wait_for(lambda s: "load off" in s, "the load to stop", 30)
        tmux.keys("6")
        tmux.wait_for(
            lambda s: (
                re.search(r"\d+ shown of [1-9]\d* kept", s) is not None
                and re.search(r"GET /items\s+ingress\W+frontend\W+backend", s) is not None
            ),
            "whole traces of the load",
            30,
        )

        tmux.keys("q")
        screen = tmux.wait_for(lambda s: "meshdev-exit=" in s, "meshdev to exit", 90)
        assert "meshdev-exit=0" in screen, screen
        assert re.search(r"removed \d+ processes", screen), screen
        assert procscan.labelled_processes(name) == []
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=2),
        ):
            pass  # the gateway's port is closed: nothing listens for this mesh any more
    finally:
        if procscan.labelled_processes(name):
            subprocess.run(
                [MESHDEV, "down", str(mesh_file)], env=env, capture_output=True, timeout=120
            )


NOT_FOUND_MESH = """\
name: {name}
services:
  web: {{command: python3 -m http.server --bind $HOST $PORT}}
ingress:
  port: {port}
  load_path: /nothing-here
  routes: [{{to: web}}]
"""


def test_a_load_that_404s_is_not_ok_on_an_80_column_terminal(tmp_path: Path, tmux: Tmux) -> None:
    """The load line counted 4xx answers as ok: every request 404ing read "ok 100.0%"."""
    name = f"tui404-{os.getpid()}"
    port = free_port()
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(NOT_FOUND_MESH.format(name=name, port=port))
    env = env_for(tmp_path)
    env.pop("NO_COLOR", None)
    env.update(LANG="C.UTF-8", TERM="xterm-256color")
    up = f"{shlex.quote(MESHDEV)} up --runtime process {shlex.quote(str(mesh_file))}"
    try:
        tmux.start(f"env {_shell_env(env)} {up}; echo meshdev-exit=$?; sleep 600", width=80)
        tmux.wait_for(lambda s: "sidecars 2/2 live" in s, "the dashboard", 120)
        tmux.keys("l")
        screen = tmux.wait_for(
            lambda s: re.search(r"sent [1-9]", s) is not None and "4xx" in s, "load", 30
        )
        line = next(x for x in screen.splitlines() if "load on" in x)
        assert re.search(r"-> /nothing-here  sent \d+  ok 0\.0%  4xx 100\.0%", line), screen
        tmux.keys("q")
        screen = tmux.wait_for(lambda s: "meshdev-exit=" in s, "meshdev to exit", 90)
        assert "meshdev-exit=0" in screen, screen
    finally:
        if procscan.labelled_processes(name):
            subprocess.run(
                [MESHDEV, "down", str(mesh_file)], env=env, capture_output=True, timeout=120
            )


def test_closing_the_terminal_tears_the_mesh_down(tmp_path: Path, tmux: Tmux) -> None:
    """The terminal window closed (SIGHUP) quits like q: nothing of the mesh is left running
    detached, holding the ingress port for the next `up`."""
    name = f"hup-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    env = env_for(tmp_path)
    env.pop("NO_COLOR", None)
    env.update(LANG="C.UTF-8", TERM="xterm-256color")
    up = f"{shlex.quote(MESHDEV)} up --runtime process {shlex.quote(str(mesh_file))}"
    try:
        tmux.start(f"env {_shell_env(env)} {up}")
        tmux.wait_for(lambda s: "sidecars 7/7 live" in s and "Clusters" in s, "the dashboard", 120)
        tmux.kill()  # the terminal goes away: meshdev gets SIGHUP
        wait_until_sync(
            lambda: procscan.labelled_processes(name) == [], "the mesh torn down", timeout=60
        )
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=2),
        ):
            pass
        # And `up` itself ends: its shut-down, writing to the terminal that is gone, hung for
        # ever (its pid kept in the mesh's state, refusing the next `up`).
        wait_until_sync(lambda: not _ups_of(mesh_file), "the up process gone", timeout=20)
    finally:
        if procscan.labelled_processes(name):
            subprocess.run(
                [MESHDEV, "down", str(mesh_file)], env=env, capture_output=True, timeout=120
            )


def test_closing_the_terminal_of_a_headless_up_tears_the_mesh_down(
    tmp_path: Path, tmux: Tmux
) -> None:
    """`up --headless` (and `up --web`) likewise: SIGHUP's default, dying at once, left the
    mesh running detached; and its last lines must not go to the terminal that is gone."""
    name = f"huph-{os.getpid()}"
    port = free_port()
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(
        f"name: {name}\nservices:\n  web:\n    command: python3 -m http.server --bind $HOST $PORT\n"
        f"ingress:\n  port: {port}\n  routes:\n    - {{match: {{prefix: /}}, to: web}}\n"
    )
    env = env_for(tmp_path)
    up = f"{shlex.quote(MESHDEV)} up --headless --runtime process {shlex.quote(str(mesh_file))}"
    try:
        tmux.start(f"env {_shell_env(env)} {up}")
        tmux.wait_for(lambda s: "ready:" in s, "ready", 120)
        assert procscan.labelled_processes(name)
        tmux.kill()
        wait_until_sync(
            lambda: procscan.labelled_processes(name) == [], "the mesh torn down", timeout=60
        )
        wait_until_sync(lambda: not _ups_of(mesh_file), "the up process gone", timeout=20)
    finally:
        if procscan.labelled_processes(name):
            subprocess.run(
                [MESHDEV, "down", str(mesh_file)], env=env, capture_output=True, timeout=120
            )


def _ups_of(mesh_file: Path) -> list[int]:
    """Pids of the `meshdev up` processes running `mesh_file`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"up" in argv and str(mesh_file).encode() in argv:
            found.append(int(entry.name))
    return found


def test_watch_in_a_real_terminal(tmp_path: Path, tmux: Tmux) -> None:
    """`meshdev watch` on the sidecars of a mesh started elsewhere: their traffic shows, and
    q closes the dashboard leaving the mesh running."""
    name = f"watch-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    env = env_for(tmp_path)
    up = MeshUp(mesh_file, env, "--runtime", "process")
    try:
        up.wait_for("ready:")
        pods = up.status()["pods"]
        targets = [f"{p['name']}={p['admin_url']}" for p in pods]
        env.pop("NO_COLOR", None)
        env.update(LANG="C.UTF-8", TERM="xterm-256color")
        args = " ".join(shlex.quote(t) for t in targets)
        tmux.start(
            f"env {_shell_env(env)} {shlex.quote(MESHDEV)} watch {args}"
            "; echo meshdev-exit=$?; sleep 600"
        )
        live = f"sidecars {len(pods)}/{len(pods)} live"
        screen = tmux.wait_for(lambda s: live in s and "Clusters" in s, "the dashboard", 60)
        assert f"watching {len(pods)} proxies" in screen
        assert {"frontend", "backend"} <= set(cluster_rows(screen))
        load = subprocess.Popen(
            [MESHDEV, "load", f"http://127.0.0.1:{port}/items", "--rps", "40", "--duration", "20s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            tmux.wait_for(
                lambda s: re.search(r"backend/items\s+[1-9]", s) is not None, "route traffic", 30
            )
        finally:
            load.kill()
            load.wait(10)
        tmux.keys("q")
        screen = tmux.wait_for(lambda s: "meshdev-exit=" in s, "watch to exit", 30)
        assert "meshdev-exit=0" in screen, screen
        # Watching stopped nothing: the mesh still answers.
        assert get(f"http://127.0.0.1:{port}/items")[0] == 200
        assert all(p["state"] == "running" for p in up.status()["pods"])
    finally:
        up.stop()
