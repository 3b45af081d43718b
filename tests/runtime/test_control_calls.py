"""The control plane's own calls through the loopback client, against sidecars on real
loopback sockets that answer garbage: a config push fails in words, a drain waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from meshdev import plan
from meshdev.config import load_mesh
from meshdev.config.model import Mesh
from meshdev.control import ControlPlane, Pod
from meshdev.plan import Placement, PodSpec
from meshdev.runtime.base import (
    Container,
    PodExit,
    PodState,
    Progress,
    RuntimeFailure,
    RuntimeKind,
    StartedPod,
)
from tests.runtime.rawhttp import raw_server
from tests.support import DEMO_MESH, free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
GARBAGE = b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"


class PodsElsewhere:
    """A runtime whose pods the test placed itself: it only records what is stopped."""

    kind: RuntimeKind = "process"

    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def remove_leftovers(self) -> list[str]:
        return []

    async def prepare(self, mesh: Mesh, specs: list[PodSpec], progress: Progress) -> None:
        return None

    def planned_placement(self, spec: PodSpec) -> Placement:
        return Placement(spec.name, "127.0.0.1", "127.0.0.1", "127.0.0.1")

    def code_version(self, spec: PodSpec) -> str | None:
        return None

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        raise RuntimeFailure("this runtime starts no pods")

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        return None

    async def exits(self) -> list[PodExit]:
        return []  # its pods never exit on their own

    async def stop_pod(self, pod: str) -> None:
        self.stopped.append(pod)

    async def pod_states(self) -> list[PodState]:
        return []

    async def logs(self, pod: str, container: Container) -> AsyncIterator[str]:
        lines: list[str] = []
        for line in lines:
            yield line

    async def last_lines(self, pod: str, container: Container, n: int = 20) -> list[str]:
        return []

    async def teardown(self) -> list[str]:
        return []


def running(admin_url: str, *, drain_timeout: float = 5.0) -> tuple[ControlPlane, Mesh]:
    """A control plane at v1 of the demo mesh, every sidecar's admin API at admin_url."""
    mesh = load_mesh(DEMO_MESH)
    control = ControlPlane(PodsElsewhere(), "token", drain_timeout=drain_timeout)
    control.mesh, control.version = mesh, 1
    for spec in plan.pods(mesh):
        control.pods[spec.name] = _pod(spec.name, spec, admin_url)
    return control, mesh


def _pod(key: str, spec: PodSpec, admin_url: str) -> Pod:
    placement = Placement(spec.name, "127.0.0.1", "127.0.0.1", "127.0.0.1")
    started = StartedPod(placement, admin_url)
    return Pod(key, spec, started, routable=True, hash="old", version=1)


async def test_a_config_push_answered_with_garbage_is_a_worded_failure() -> None:
    async with raw_server(GARBAGE) as admin:
        control, mesh = running(admin)
        report = await control.apply(mesh)
    assert not report.ok
    assert sorted(report.errors) == sorted(
        f"{name}: the sidecar at {admin}/config gave an unreadable answer to the config push "
        "(bad Content-Length: '-1'); whether it applied v2 is unknown"
        for name in control.pods
    )
    # What they serve is unknown, so the next push sends their config again.
    assert {p.hash for p in control.pods.values()} == {"old"}
    async with raw_server(OK) as admin:
        for pod in control.pods.values():
            pod.started = replace(pod.started, admin_url=admin)
        again = await control.apply(mesh)
    assert again.ok
    assert again.pushed == len(control.pods)


async def test_a_drain_waits_while_the_stats_answer_is_garbage() -> None:
    # It may still be serving: better the whole (bounded) drain than cut-off requests.
    async with raw_server(OK) as admin, raw_server(GARBAGE) as leaving:
        control, mesh = running(admin, drain_timeout=0.5)
        spec = next(iter(control.pods.values())).spec
        control.pods["gone-0"] = _pod("gone-0", replace(spec, name="gone-0"), leaving)
        t0 = time.monotonic()
        report = await control.apply(mesh)
        waited = time.monotonic() - t0
    assert report.ok
    assert report.stopped == ("gone-0",)
    assert isinstance(control.runtime, PodsElsewhere)
    assert control.runtime.stopped == ["gone-0"]
    assert waited >= 0.5


async def test_a_drain_of_a_sidecar_that_is_gone_stops_it_at_once() -> None:
    async with raw_server(OK) as admin:
        control, mesh = running(admin, drain_timeout=60)
        spec = next(iter(control.pods.values())).spec
        gone_url = f"http://127.0.0.1:{free_port()}"
        control.pods["gone-0"] = _pod("gone-0", replace(spec, name="gone-0"), gone_url)
        report = await asyncio.wait_for(control.apply(mesh), 30)
    assert report.ok
    assert isinstance(control.runtime, PodsElsewhere)
    assert control.runtime.stopped == ["gone-0"]
