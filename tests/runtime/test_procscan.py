"""Stopping a process-runtime pod stops everything its command started, with real processes:
a pod's shell forks its app, and the app (like redis-server rewriting its process title) loses
the MESHDEV_MESH label from /proc/PID/environ, so only its session and group still tie it to
the pod."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshdev.config.model import Mesh
from meshdev.runtime.process import procscan
from meshdev.runtime.process.runtime import ProcessRuntime
from tests.support import wait_until_sync

POD = "cache-0"
# The app is forked by the shell (which stays, waiting for it) and runs with an empty
# environment, so nothing in /proc/<app>/environ says which mesh or pod it belongs to.
FORKED_UNLABELLED = "env -i sleep 1000 >/dev/null & echo $!; wait"


class Pod:
    """A pod-like app process as ProcessRuntime starts one: `sh -c command`, labelled, as the
    leader of its own session and process group."""

    def __init__(self, mesh: str, command: str) -> None:
        labels = {
            procscan.ENV_MESH: mesh,
            procscan.ENV_POD: POD,
            procscan.ENV_ROLE: "app",
            procscan.ENV_ADDRESS: "127.0.9.2",
            procscan.ENV_SERVICE: "cache",
            procscan.ENV_SUBSET: "",
        }
        self.shell = subprocess.Popen(
            ["/bin/sh", "-c", command],
            env={**os.environ, **labels},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.children: list[int] = []

    def forked_app(self) -> int:
        """The pid of the app the shell forked, once its environ has lost the label."""
        assert self.shell.stdout is not None
        app = int(self.shell.stdout.readline())
        self.children.append(app)
        wait_until_sync(lambda: not labelled(app), f"the app (pid {app}) to run without its label")
        return app

    def close(self) -> None:
        # A failed test must not leak its sleepers: killed by pid, then our shell is reaped.
        for pid in [*self.children, self.shell.pid]:
            if procscan.alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.shell.wait()
        assert self.shell.stdout is not None
        self.shell.stdout.close()


def labelled(pid: int) -> bool:
    try:
        return b"MESHDEV_MESH=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


@pytest.fixture
def mesh() -> str:
    return f"procscan-{os.getpid()}"


@pytest.fixture
def pods(mesh: str) -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.close()


def start(pods: list[Pod], mesh: str, command: str) -> Pod:
    pod = Pod(mesh, command)
    pods.append(pod)
    return pod


def runtime_of(mesh: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProcessRuntime:
    """The runtime `meshdev down` builds in another process: it knows only the mesh's name."""
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path / "state"))
    return ProcessRuntime(Mesh.model_construct(name=mesh, services={}), tmp_path / "mesh.yaml")


async def test_terminate_stops_the_app_a_pod_shell_forked(mesh: str, pods: list[Pod]) -> None:
    pod = start(pods, mesh, FORKED_UNLABELLED)
    app = pod.forked_app()
    await procscan.terminate([pod.shell.pid], grace=5.0)
    assert not procscan.alive(pod.shell.pid)
    assert not procscan.alive(app), "the shell's forked app outlived its pod"


async def test_sigkill_reaches_the_group_after_its_leader_died(mesh: str, pods: list[Pod]) -> None:
    # The app ignores SIGTERM (SIG_IGN survives exec) while its shell dies of it at once: the
    # escalation must still find the app, by its group, after the leader is gone.
    pod = start(pods, mesh, f"trap '' TERM; {FORKED_UNLABELLED}")
    app = pod.forked_app()
    await procscan.terminate([pod.shell.pid], grace=0.3)
    wait_until_sync(lambda: not procscan.alive(app), f"SIGKILL to reach the app (pid {app})")


def test_the_sweep_finds_a_pod_process_that_lost_its_label(mesh: str, pods: list[Pod]) -> None:
    pod = start(pods, mesh, FORKED_UNLABELLED)
    app = pod.forked_app()
    found = {p.pid: p for p in procscan.labelled_processes(mesh)}
    assert set(found) == {pod.shell.pid, app}
    # Under its leader's label: the pod and role it belongs to.
    assert (found[app].pod, found[app].role, found[app].mesh) == (POD, "app", mesh)


async def test_down_sweep_stops_the_unlabelled_app_of_a_crashed_run(
    mesh: str, pods: list[Pod], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = start(pods, mesh, FORKED_UNLABELLED)
    app = pod.forked_app()
    removed = await runtime_of(mesh, tmp_path, monkeypatch).teardown()
    assert not procscan.alive(app), "down left the pod's forked app running"
    assert f"{POD} (app, pid {app})" in removed
    assert procscan.labelled_processes(mesh) == []


async def test_down_stops_a_pod_leader_that_lost_its_own_label(
    mesh: str, pods: list[Pod], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shell execs the app, which then runs with no label at all: only the record the
    # runtime kept at start finds it.
    pod = start(pods, mesh, "exec env -i sleep 1000")
    wait_until_sync(lambda: not labelled(pod.shell.pid), "the leader to lose its label")
    runtime = runtime_of(mesh, tmp_path, monkeypatch)
    procscan.record(runtime.record_path(POD, "app"), pod.shell.pid)
    assert procscan.labelled_processes(mesh) == []
    removed = await runtime.teardown()
    assert not procscan.alive(pod.shell.pid)
    assert removed == [f"{POD} (app, pid {pod.shell.pid})"]
    assert not runtime.record_path(POD, "app").exists()


def test_a_record_names_only_the_process_it_was_made_for(
    mesh: str, pods: list[Pod], tmp_path: Path
) -> None:
    pod = start(pods, mesh, "exec sleep 1000")
    path = tmp_path / "pod.app.pid"
    procscan.record(path, pod.shell.pid)
    assert procscan.recorded_pid(path) == pod.shell.pid
    # The same pid started at another time is another process (the kernel reuses pids).
    pid, boot, started = path.read_text().split()
    path.write_text(f"{pid} {boot} {int(started) + 1}\n")
    assert procscan.recorded_pid(path) is None
    procscan.record(path, pod.shell.pid)
    pod.close()
    assert procscan.recorded_pid(path) is None
    path.write_text("garbage")
    assert procscan.recorded_pid(path) is None


def test_a_labelled_process_in_a_foreign_session_takes_nothing_along(mesh: str) -> None:
    # Started in this test's own session and group (as a process of a user whose shell
    # exported the label would be): the sweep finds it, but nothing else of its session.
    proc = subprocess.Popen(
        ["sleep", "1000"], env={**os.environ, procscan.ENV_MESH: mesh, procscan.ENV_POD: POD}
    )
    try:
        assert [p.pid for p in procscan.labelled_processes(mesh)] == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


async def test_terminate_leaves_the_callers_own_group_alone(mesh: str) -> None:
    proc = subprocess.Popen(["sleep", "1000"])
    sibling = subprocess.Popen(["sleep", "1000"])
    try:
        await procscan.terminate([proc.pid], grace=5.0)
        assert proc.wait(timeout=5) == -signal.SIGTERM
        assert sibling.poll() is None
    finally:
        sibling.kill()
        sibling.wait()
