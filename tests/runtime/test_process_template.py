"""The process runtime's pods as its sidecar template starts them, with real processes: a
program that cannot be exec'd fails the start in words and leaves no half of its pod running,
a command's program is found on the PATH the app is given, an app that exits at once reports
its code, and should the template be killed its pods run on, are still watched, and the next
start brings a new template."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshdev import plan
from meshdev.config import load_mesh
from meshdev.control import load_defaults
from meshdev.runtime.base import RuntimeFailure
from meshdev.runtime.process import procscan
from meshdev.runtime.process.runtime import ProcessRuntime
from meshdev.runtime.process.template import ROLE as TEMPLATE_ROLE
from meshdev.runtime.readiness import http_status

MESH = """\
name: {name}
services:
  sleeper: {{command: exec sleep 600, port: 8080}}
  quitter: {{command: exit 7, port: 8080}}
  missing: {{command: [/nonexistent/program], port: 8080}}
  which:
    command: [python, -c, "import sys, time; print(sys.executable, flush=True); time.sleep(99)"]
    port: 8080
"""


@pytest.fixture
async def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ProcessRuntime]:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path / "state"))
    name = f"tmpl-rt-{secrets.token_hex(3)}"
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name))
    rt = ProcessRuntime(load_mesh(mesh_file), mesh_file, sidecar_start="template")
    try:
        yield rt
    finally:
        await rt.teardown()
    assert procscan.labelled_processes(name) == []


async def _start(rt: ProcessRuntime, service: str) -> str:
    """Starts the service's pod; returns its sidecar's admin URL."""
    specs = plan.pods(rt.mesh)
    endpoints = [(s, rt.planned_placement(s)) for s in specs]
    [(spec, placement)] = [(s, p) for s, p in endpoints if s.service == service]
    cfg = plan.render(rt.mesh, spec, placement, endpoints, version=1, defaults=load_defaults())
    await rt.prepare(rt.mesh, [spec], lambda _: None)
    started = await rt.start_pod(spec, cfg.model_dump_json().encode(), "token")
    if service not in ("sleeper", "which"):
        await rt.wait_ready(spec, started, 20)
    return started.admin_url


async def _sidecar_up(admin_url: str) -> None:
    """Until the sidecar answers: its SIGTERM handler is in place from then on (a SIGTERM
    before that ends it with the default action, 143)."""
    for _ in range(200):
        status, _why = await http_status(f"{admin_url}/ready")
        if status is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{admin_url} never answered")


def _pids(rt: ProcessRuntime, role: str, pod: str = "") -> list[int]:
    return [
        p.pid
        for p in procscan.labelled_processes(rt.mesh.name)
        if p.role == role and (not pod or p.pod == pod)
    ]


async def test_a_program_that_cannot_be_execd_fails_its_start_in_words(
    runtime: ProcessRuntime,
) -> None:
    with pytest.raises(RuntimeFailure) as failed:
        await _start(runtime, "missing")
    assert "pod missing-0: cannot start app (/nonexistent/program)" in str(failed.value)
    assert "No such file or directory" in str(failed.value)
    # Its sidecar, asked for at the same time and started, was stopped with the failure.
    assert _pids(runtime, "sidecar", "missing-0") == []
    assert not runtime.record_path("missing-0", "sidecar").exists()


async def test_a_commands_program_is_found_on_the_path_its_app_is_given(
    runtime: ProcessRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not on the template's PATH: `python` is the Python meshdev runs on because the runtime
    # puts its folder first on the app's PATH.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    await _start(runtime, "which")
    log = runtime.log_path("which-0", "app")
    for _ in range(100):
        if log.exists() and log.read_text().strip():
            break
        await asyncio.sleep(0.05)
    assert Path(log.read_text().split()[0]).parent == Path(sys.executable).parent


async def test_an_app_that_exits_at_once_reports_its_code(runtime: ProcessRuntime) -> None:
    with pytest.raises(RuntimeFailure) as failed:
        await _start(runtime, "quitter")
    assert failed.value.exit_code == 7
    assert "app exited with code 7 at start" in str(failed.value)


async def test_pods_outlive_a_killed_template_and_are_still_watched(
    runtime: ProcessRuntime,
) -> None:
    # Once it answers, the sidecar has written its labels over the template's it was forked
    # with (and its app was started with it).
    await _sidecar_up(await _start(runtime, "sleeper"))
    [template] = _pids(runtime, TEMPLATE_ROLE)
    [sidecar] = _pids(runtime, "sidecar", "sleeper-0")
    os.kill(template, signal.SIGKILL)
    await asyncio.sleep(0.3)
    assert procscan.alive(sidecar)
    assert await runtime.exits() == []
    # Its exit code went with the template: the exit is seen, without a code.
    os.kill(sidecar, signal.SIGKILL)
    for _ in range(50):
        if await runtime.exits():
            break
        await asyncio.sleep(0.1)
    [gone] = await runtime.exits()
    assert (gone.pod, gone.container, gone.exit_code) == ("sleeper-0", "sidecar", None)
    # The next start brings a new template.
    await runtime.stop_pod("sleeper-0")
    await _start(runtime, "sleeper")
    [again] = _pids(runtime, TEMPLATE_ROLE)
    assert again != template


async def test_a_template_stopped_with_its_pods_still_reports_their_exit_codes(
    runtime: ProcessRuntime,
) -> None:
    # As `down` in another terminal does: SIGTERM to the template and the pods at once.
    await _sidecar_up(await _start(runtime, "sleeper"))
    [template] = _pids(runtime, TEMPLATE_ROLE)
    [sidecar] = _pids(runtime, "sidecar", "sleeper-0")
    os.kill(template, signal.SIGTERM)
    os.kill(sidecar, signal.SIGTERM)
    for _ in range(50):
        if await runtime.exits():
            break
        await asyncio.sleep(0.1)
    [gone] = await runtime.exits()
    assert (gone.pod, gone.container, gone.exit_code) == ("sleeper-0", "sidecar", 0)
    # The pod's app was not stopped: the template waits for it no longer than 3 s, then goes
    # and leaves it running, to be stopped with the pod.
    for _ in range(50):
        if not procscan.alive(template):
            break
        await asyncio.sleep(0.1)
    assert not procscan.alive(template)
    [app] = _pids(runtime, "app", "sleeper-0")
    assert procscan.alive(app)
