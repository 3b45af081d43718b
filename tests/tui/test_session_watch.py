"""`watch --mesh FILE` (and each tab of `up --web`): the dashboard follows a `meshdev up` that
runs in another process through its state file: header, pods and their states, the sidecars to
stream from, reloads applied and rejected, and the session going away."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from meshdev.config import load_mesh
from meshdev.config.splits import split_weights
from meshdev.control import ControlPlane, ReloadReport, RollReport
from meshdev.runtime.paths import BY_KEY, STATE_FILE, mesh_dir
from meshdev.testing.sample_views import sample_view
from meshdev.tui.app import MeshdevApp
from meshdev.tui.logic.actions import shift_canary
from meshdev.tui.remote_keys import RemoteKeys
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.session_watch import GONE, WAITING, SessionWatchController
from meshdev.tui.widgets.header import ReloadBanner
from tests.support import DEMO_MESH, wait_until
from tests.tui.tuifakes import FakeRuntime, FakeSource

MESH = "followed"


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path / "state"))
    return mesh_dir(MESH)


def pod(name: str, service: str, port: int, **health: Any) -> dict[str, Any]:
    # The keys ControlPlane.snapshot() writes for a pod (control.py), with its health record.
    return {
        "name": name,
        "key": name,
        "service": service or None,
        "subset": None,
        "protocol": "http" if service else None,
        "address": "127.0.0.1",
        "admin_url": f"http://127.0.0.1:{port}",
        "routable": True,
        "config_version": 3,
        "config_hash": "0123456789abcdef",
        "spiffe_id": None,
        "cert_expires": None,
        "state": "running",
        "restarts": 0,
        "exit_code": None,
        "last_exit": None,
        "next_try_in": None,
        **health,
    }


def write(where: Path, **changes: Any) -> dict[str, Any]:
    applied = ReloadReport(version=3, ok=True, sidecars=2, serving=2, pushed=1, elapsed_ms=12.0)
    state: dict[str, Any] = {
        "mesh": MESH,
        "file": str(where / "mesh.yaml"),
        "runtime": "process",
        "pid": 1,
        "ingress_url": "http://127.0.0.1:18080",
        "token": "t",
        "last_reload": {"at": time.time() - 5, **applied.to_json()},
        "last_rolls": {},
        "version": 3,
        "health": {},
        "down": [],
        "pods": [
            pod("ingress", "", 15000),
            pod("backend-0", "backend", 15001, state="crash-looping", restarts=2, exit_code=1),
        ],
        **changes,
    }
    path = where / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)  # as the session writes it: never half a file
    return state


def header(app: MeshdevApp) -> str:
    return str(app.dashboard.query_one("#header").render())


async def test_the_dashboard_shows_the_session_as_its_state_file_says(state_dir: Path) -> None:
    state = write(state_dir)
    source = FakeSource()
    app = MeshdevApp(source, SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        d = app.dashboard
        await wait_until(lambda: "applied v3" in header(app), "the header", pause=pilot.pause)
        text = header(app)
        assert "process" in text and "v3" in text and "127.0.0.1:18080" in text
        assert "applied v3 to 2/2 sidecars in 12 ms (1 changed)" in text
        assert source.targets == [
            ("ingress", "http://127.0.0.1:15000"),
            ("backend-0", "http://127.0.0.1:15001"),
        ]
        await pilot.press("2")
        await wait_until(lambda: "backend-0" in d.pods.keys, "the pods", pause=pilot.pause)
        assert d.pods.cell_text("backend-0", "state").strip() == "crash-looping"
        assert d.pods.cell_text("backend-0", "restarts").strip() == "2"
        assert "last exit 1" in d.pods.cell_text("backend-0", "detail")
        assert d.pods.cell_text("ingress", "state").strip() == "running"

        # A save that did not validate: the banner, the events, the header, as `up` shows them.
        write(
            state_dir,
            last_reload={
                "ok": False,
                "at": time.time(),
                "version": 3,
                "errors": ["mesh.yaml:7: routes.backend[0].timeout: not a duration"],
            },
        )
        banner = d.query_one("#banner", ReloadBanner)
        await wait_until(lambda: banner.display, "the banner", pause=pilot.pause)
        assert banner.errors == ("mesh.yaml:7: routes.backend[0].timeout: not a duration",)
        assert "not applied (1 error)" in header(app)

        # The next save applies with a pod more: the banner goes, the new pod is streamed from.
        pods = [*state["pods"], pod("backend-1", "backend", 15002)]
        applied = ReloadReport(version=4, ok=True, sidecars=3, serving=3, pushed=3, elapsed_ms=40)
        write(state_dir, version=4, pods=pods, last_reload={"at": time.time(), **applied.to_json()})
        await wait_until(lambda: "applied v4" in header(app), "v4", pause=pilot.pause)
        assert not banner.display
        assert ("backend-1", "http://127.0.0.1:15002") in source.targets
        await wait_until(lambda: "backend-1" in d.pods.keys, "the new pod", pause=pilot.pause)

        # `up` ended: its state file is gone, and the header says so.
        (state_dir / STATE_FILE).unlink()
        await wait_until(lambda: GONE in header(app), "the session gone", pause=pilot.pause)
        # Nothing here can act on the mesh: the demo keys say where they act.
        await pilot.press("b")
        await wait_until(
            lambda: any("not running here" in n.message for n in app._notifications),
            "the refusal",
            pause=pilot.pause,
        )


async def test_a_canary_keys_apply_is_told_as_up_tells_it_not_as_a_save(
    state_dir: Path,
) -> None:
    write(state_dir)
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50), notifications=True) as pilot:
        await wait_until(lambda: "applied v3" in header(app), "the header", pause=pilot.pause)
        shifted = ReloadReport(version=4, ok=True, sidecars=2, serving=2, pushed=2, elapsed_ms=9)
        write(
            state_dir,
            version=4,
            last_reload={"at": time.time(), **shifted.to_json(), BY_KEY: True},
        )
        await wait_until(lambda: "applied v4" in header(app), "v4", pause=pilot.pause)
        assert "canary key; mesh.yaml unchanged" in header(app)
        assert not any(n.title == "mesh.yaml reloaded" for n in app._notifications)


async def test_routes_are_explained_with_the_weights_the_canary_key_applied(
    state_dir: Path,
) -> None:
    # `w` in `up` shifted backend/items from 90/10 to 70/30 on the sidecars, not in the file:
    # this dashboard read the file again at the new version, and its route detail said 90/10.
    file = state_dir / "mesh.yaml"
    file.write_text(DEMO_MESH.read_text())
    control = ControlPlane(FakeRuntime(), "t")
    shifted = shift_canary(load_mesh(file), ["backend/items"])
    assert shifted is not None and shifted[1] == "backend/items: backend.v1 70 / backend.v2 30"
    control.mesh = shifted[0]
    applied = ReloadReport(version=4, ok=True, sidecars=2, serving=2, pushed=2, elapsed_ms=9)
    write(
        state_dir,
        version=4,
        weights=control.snapshot()["weights"],
        last_reload={"at": time.time(), **applied.to_json(), BY_KEY: True},
    )
    source = FakeSource()
    app = MeshdevApp(source, SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(140, 45)) as pilot:
        await wait_until(lambda: "applied v4" in header(app), "v4", pause=pilot.pause)
        view = sample_view(4)
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        app.dashboard.routes.focus()
        await pilot.press("enter")
        await wait_until(
            lambda: isinstance(app.screen, RouteDetailScreen), "detail", pause=pilot.pause
        )
        body = str(app.screen.query_one("#detail-body", Static).render())
        assert "route backend/items  -> backend.v1 70, backend.v2 30" in body
        await pilot.press("escape")
        # A save puts the file's weights back on the sidecars: the state says so too.
        control.mesh = load_mesh(file)
        saved = ReloadReport(version=5, ok=True, sidecars=2, serving=2, pushed=2, elapsed_ms=9)
        write(
            state_dir,
            version=5,
            weights=control.snapshot()["weights"],
            last_reload={"at": time.time(), **saved.to_json()},
        )
        await wait_until(lambda: "applied v5" in header(app), "v5", pause=pilot.pause)
        mesh = app.controller.mesh()
        assert mesh is not None
        assert split_weights(mesh)["backend/items"] == {"backend.v1": 90, "backend.v2": 10}


async def test_a_pod_down_waiting_for_its_restart_is_listed(state_dir: Path) -> None:
    write(
        state_dir,
        pods=[pod("ingress", "", 15000)],
        down=["backend-0"],
        health={
            "backend-0": {
                "state": "exited",
                "restarts": 3,
                "exit_code": 137,
                "last_exit": None,
                "next_try_in": 8.0,
            }
        },
    )
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("2")
        d = app.dashboard
        await wait_until(lambda: "backend-0" in d.pods.keys, "the down pod", pause=pilot.pause)
        assert d.pods.cell_text("backend-0", "state").strip() == "exited"
        assert d.pods.cell_text("backend-0", "restarts").strip() == "3"
        detail = d.pods.cell_text("backend-0", "detail")
        assert "last exit 137" in detail and "next try in 8 s" in detail


async def test_quitting_while_the_pods_countdown_refreshes_ends_cleanly(state_dir: Path) -> None:
    """The countdown of a pod waiting for its restart redraws the Pods table at every poll; a
    poll that came while the app shut down (its tables already removed, the screen not yet)
    ended the app with a NoMatches traceback."""
    health = {"state": "exited", "restarts": 1, "exit_code": 1, "next_try_in": 8.0}
    write(state_dir, pods=[pod("ingress", "", 15000)], down=["backend-0"],
          health={"backend-0": {**health, "last_exit": None}})  # fmt: skip
    for _ in range(10):
        assert await _open_pods_and_quit() in (0, None)


async def _open_pods_and_quit() -> int | None:
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.01))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        pods = app.dashboard.pods
        await wait_until(lambda: "backend-0" in pods.keys, "the pod", pause=pilot.pause)
    return app.return_code


def test_reports_come_back_from_their_json() -> None:
    reload = ReloadReport(3, True, 5, 5, 2, 17.5, ("a-1",), ("a-0",), (), ("b-0",))
    assert ReloadReport.from_json(json.loads(json.dumps(reload.to_json()))) == reload
    roll = RollReport("web", False, (("web-0", "web-2"),), 900.0, "boom", ("web-1",), None)
    assert RollReport.from_json(json.loads(json.dumps(roll.to_json()))) == roll
    with pytest.raises(KeyError):
        ReloadReport.from_json({"ok": True})


async def test_the_logs_tab_reads_the_pods_logs_where_the_runtime_keeps_them(
    state_dir: Path,
) -> None:
    write(state_dir)
    # The process runtime's log files, in the mesh's state folder (runtime/process).
    (state_dir / "ingress.sidecar.log").write_text("GET /items 200\nGET /x 503 UO\n")
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("4")
        logs = app.dashboard.logs
        await wait_until(lambda: len(logs.lines) == 2, "the ingress's lines", pause=pilot.pause)
        assert logs.current == ("ingress", "sidecar")
        assert list(logs.lines) == ["GET /items 200", "GET /x 503 UO"]
        assert ("backend-0", "app") in logs.sources
        with (state_dir / "ingress.sidecar.log").open("a") as log:
            log.write("GET /items 200 (later)\n")
        await wait_until(lambda: len(logs.lines) == 3, "a line written since", pause=pilot.pause)


async def test_a_tab_opened_while_up_starts_waits_for_the_session(state_dir: Path) -> None:
    source = FakeSource()
    app = MeshdevApp(source, SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(lambda: WAITING in header(app), "waiting", pause=pilot.pause)
        assert source.targets == []
        state = write(state_dir)
        await wait_until(lambda: "applied v3" in header(app), "the session", pause=pilot.pause)
        assert len(source.targets) == 2
        # A pod that exits is an event, as `up` tells it.
        pods = [state["pods"][0], pod("backend-0", "backend", 15001, state="exited", exit_code=3)]
        write(state_dir, pods=pods)
        events = app.dashboard.events
        await wait_until(
            lambda: any("pod backend-0 is exited" in line for line in events.texts),
            "the exit event",
            pause=pilot.pause,
        )


async def test_a_tabs_keys_come_with_the_session_and_follow_its_token(state_dir: Path) -> None:
    controller = SessionWatchController(MESH, poll_every=0.05, keys_url="http://127.0.0.1:18090/")
    app = MeshdevApp(FakeSource(), controller)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(lambda: WAITING in header(app), "waiting", pause=pilot.pause)
        assert app.dashboard.commands is None  # nothing to act on yet
        write(state_dir, token="first")
        await wait_until(lambda: app.dashboard.commands is not None, "keys", pause=pilot.pause)
        keys = app.dashboard.commands
        assert isinstance(keys, RemoteKeys) and keys.token == "first"
        assert keys.base_url == "http://127.0.0.1:18090/meshdev/"
        # `up` restarted: a new session, a new token; its start is not a reload to toast.
        write(state_dir, token="second", pid=os.getpid())
        await wait_until(
            lambda: (
                isinstance(app.dashboard.commands, RemoteKeys)
                and app.dashboard.commands.token == "second"
            ),
            "the new token",
            pause=pilot.pause,
        )
        assert not any("reloaded" in (n.title or "") for n in app._notifications)


async def test_an_up_killed_with_its_state_left_behind_is_gone(state_dir: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    write(state_dir, pid=dead.pid)
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(lambda: GONE in header(app), "gone", pause=pilot.pause)
        events = app.dashboard.events.texts
        assert sum(GONE in line for line in events) == 1  # said once, not at every look


async def test_a_code_roll_is_told_as_up_tells_it(state_dir: Path) -> None:
    write(state_dir)
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(lambda: "applied v3" in header(app), "the session", pause=pilot.pause)
        rolled = RollReport("backend", True, (("backend-0", "backend-0-r1"),), 812.0)
        write(state_dir, last_rolls={"backend": {"at": time.time(), **rolled.to_json()}})
        await wait_until(
            lambda: any(n.title == "backend: code rolled" for n in app._notifications),
            "the roll's toast",
            pause=pilot.pause,
        )
        assert any(
            "backend: rolled backend-0 -> backend-0-r1" in t for t in app.dashboard.events.texts
        )


async def test_rolls_from_before_the_dashboard_opened_are_events_not_toasts(
    state_dir: Path,
) -> None:
    rolled = RollReport("backend", True, (("backend-0", "backend-0-r1"),), 812.0)
    write(state_dir, last_rolls={"backend": {"at": time.time() - 60, **rolled.to_json()}})
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(lambda: "applied v3" in header(app), "the session", pause=pilot.pause)
        texts = app.dashboard.events.texts
        assert any("backend: rolled backend-0 -> backend-0-r1" in t for t in texts)
        assert not any("rolled" in (n.title or "") for n in app._notifications)


async def test_a_watch_does_not_offer_a_load_it_cannot_send(state_dir: Path) -> None:
    # The `up` in another terminal may well be sending load: "load off, l: send" was wrong twice.
    write(state_dir)
    app = MeshdevApp(FakeSource(), SessionWatchController(MESH, poll_every=0.05))
    async with app.run_test(size=(160, 50)) as pilot:
        await wait_until(lambda: "applied v3" in header(app), "the header", pause=pilot.pause)
        line = app.dashboard._load_text.plain
        assert "load off" not in line and "l: send" not in line, line
        assert "meshdev up" in line, line
        await pilot.press("l")
        await wait_until(
            lambda: any("that runs it" in n.message for n in app._notifications),
            "the refusal, saying where the keys act",
            pause=pilot.pause,
        )
