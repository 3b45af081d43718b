"""ControlPlane.roll, on stand-in sidecars: one pod at a time, each new pod ready and in every
caller's endpoints before its old one leaves them and stops; a new pod that does not start
replaces nothing; a crash-looping pod is started at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.config import parse_mesh
from meshdev.control import ControlPlane, RollReport
from meshdev.plan import PodSpec
from meshdev.runtime.base import RuntimeFailure, StartedPod
from tests.security.standins import StandIns

MESH = """
name: roll
services:
  web: {command: x, replicas: 2, watch: ["*.py"]}
  api: {command: x}
ingress:
  port: 8000
  routes: [{match: {prefix: /}, to: web}]
"""


class Recording(StandIns):
    """Stand-ins that note what happens, and which web pods the gateway routes to then."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.fail: set[str] = set()
        # Failing pods fail their health check rather than exit.
        self.unhealthy = False
        # What code_version says (None: it cannot tell, as the process runtime).
        self.code: str | None = None
        # Pods whose readiness never comes (their wait runs into the readiness timeout).
        self.hang: set[str] = set()

    def code_version(self, spec: PodSpec) -> str | None:
        return self.code

    def routed(self) -> list[str]:
        gateway = self.sidecars["ingress"].config
        return sorted(e.pod for c in gateway.clusters if c.name == "web" for e in c.endpoints)

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        if "ingress" in self.sidecars and spec.name.startswith("web"):
            self.log.append(f"start {spec.name} (gateway routes to {', '.join(self.routed())})")
        else:
            self.log.append(f"start {spec.name}")
        return await super().start_pod(spec, sidecar_config, token)

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        if spec.name.split("-r")[0] in self.hang:
            self.log.append(f"waiting for {spec.name}")
            await asyncio.sleep(timeout)
            raise RuntimeFailure(f"pod {spec.name}: not ready within {timeout:g}s")
        if spec.name.split("-r")[0] in self.fail:
            if self.unhealthy:
                raise RuntimeFailure(f"pod {spec.name}: app did not answer /healthz within 10s")
            raise RuntimeFailure(f"pod {spec.name}: app exited with code 1 at start", exit_code=1)
        await super().wait_ready(spec, started, timeout)

    async def stop_pod(self, pod: str) -> None:
        if "ingress" in self.sidecars and pod.startswith("web"):
            self.log.append(f"stop {pod} (gateway routes to {', '.join(self.routed())})")
        else:
            self.log.append(f"stop {pod}")
        await super().stop_pod(pod)


@pytest.fixture
async def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ControlPlane, Recording]]:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path))
    runtime = Recording()
    # The stand-ins have no /stats: the drain waits its whole (short) timeout.
    control = ControlPlane(runtime, "s3cret", ready_timeout=10, drain_timeout=0.05)
    report = await control.up(parse_mesh(MESH.encode(), "mesh.yaml"))
    assert report.ok, report.errors
    runtime.log.clear()
    yield control, runtime
    await control.down()


def _endpoint_pods(cfg: SidecarConfig, cluster: str) -> list[str]:
    return sorted(e.pod for c in cfg.clusters if c.name == cluster for e in c.endpoints)


async def test_two_replicas_roll_one_at_a_time(running: tuple[ControlPlane, Recording]) -> None:
    control, runtime = running
    report = await control.roll("web")
    assert report.ok, report.error
    assert report.replaced == (("web-0", "web-0-r1"), ("web-1", "web-1-r1"))
    assert report.serving_ms is not None and report.serving_ms <= report.elapsed_ms
    # Each old pod stops once its new one is ready and routed in its place, and the next new
    # pod starts only then (while the old one drains): 2 always routed, one swap at a time.
    assert sorted(runtime.log) == [
        "start web-0-r1 (gateway routes to web-0, web-1)",
        "start web-1-r1 (gateway routes to web-0-r1, web-1)",
        "stop web-0 (gateway routes to web-0-r1, web-1)",
        "stop web-1 (gateway routes to web-0-r1, web-1-r1)",
    ]
    assert runtime.log.index("start web-0-r1 (gateway routes to web-0, web-1)") == 0
    assert sorted(p.name for p in control.pods.values() if p.spec.service == "web") == [
        "web-0-r1",
        "web-1-r1",
    ]
    assert {p.key for p in control.pods.values() if p.spec.service == "web"} == {"web-0", "web-1"}
    # Every caller's endpoints follow, the other service's pods untouched.
    assert _endpoint_pods(runtime.sidecars["api-0"].config, "web") == ["web-0-r1", "web-1-r1"]
    assert "api-0" in control.pods
    # The next roll goes back to the plain names.
    again = await control.roll("web")
    assert again.replaced == (("web-0-r1", "web-0"), ("web-1-r1", "web-1"))


@pytest.mark.parametrize("unhealthy", [False, True], ids=["crashes", "fails-health-check"])
async def test_new_code_that_does_not_start_replaces_nothing(
    running: tuple[ControlPlane, Recording], unhealthy: bool
) -> None:
    control, runtime = running
    runtime.fail.add("web-0")
    runtime.unhealthy = unhealthy
    report = await control.roll("web")
    assert not report.ok
    assert report.replaced == ()
    assert report.kept == ("web-0", "web-1")
    why = "did not answer /healthz" if unhealthy else "app exited with code 1 at start"
    assert why in (report.error or "")
    assert "keep serving" in report.summary()
    # The failed new pod is stopped; the old ones stay routed.
    assert runtime.log == [
        "start web-0-r1 (gateway routes to web-0, web-1)",
        "stop web-0-r1 (gateway routes to web-0, web-1)",
    ]
    assert runtime.routed() == ["web-0", "web-1"]
    # The next save tries again.
    runtime.fail.clear()
    assert (await control.roll("web")).ok


async def test_a_roll_that_fails_half_way_names_the_pods_left_on_the_old_code(
    running: tuple[ControlPlane, Recording],
) -> None:
    control, runtime = running
    assert (await control.roll("web")).ok  # now web-0-r1, web-1-r1
    runtime.fail.add("web-1")
    report = await control.roll("web")
    assert not report.ok
    assert report.replaced == (("web-0-r1", "web-0"),)
    assert report.kept == ("web-1-r1",)
    assert "1 replaced before it" in report.summary()
    assert runtime.routed() == ["web-0", "web-1-r1"]


async def test_a_service_without_pods_rolls_nothing(
    running: tuple[ControlPlane, Recording],
) -> None:
    control, runtime = running
    report = await control.roll("gone")
    assert report.ok and report.replaced == ()
    assert runtime.log == []


async def test_a_crash_looping_pod_is_started_at_once(
    running: tuple[ControlPlane, Recording],
) -> None:
    control, runtime = running
    # As after a crash: out of the pods, its restart waiting out a long backoff.
    pod = control.pods["api-0"]
    pod.routable = False
    await control._stop(pod)
    control._healing["api-0"] = asyncio.create_task(asyncio.sleep(300))
    report = await control.roll("api")
    assert report.ok, report.error
    assert report.replaced == (("api-0 (crash-looping)", "api-0"),)
    assert "api-0" in control.pods and control.pods["api-0"].routable
    assert "api-0" not in control._healing
    assert _endpoint_pods(runtime.sidecars["web-0"].config, "api") == ["api-0"]


async def test_pods_that_run_what_the_save_built_are_not_replaced(
    running: tuple[ControlPlane, Recording],
) -> None:
    control, runtime = running
    runtime.code = "sha256:aaa"
    assert (await control.roll("web")).replaced  # started with code the runtime can name
    runtime.log.clear()
    report = await control.roll("web")  # the build gave the same image
    assert report.ok and report.unchanged and report.replaced == ()
    assert report.summary() == "web: its image did not change; its pods keep running"
    assert runtime.log == []
    runtime.code = "sha256:bbb"
    assert len((await control.roll("web")).replaced) == 2


async def test_newer_code_saved_while_a_new_pod_starts_stops_it_at_once(
    running: tuple[ControlPlane, Recording],
) -> None:
    control, runtime = running
    runtime.hang.add("web-1")  # the first pod rolls, the second's new code never gets ready
    superseded = asyncio.Event()
    roll = asyncio.create_task(control.roll("web", superseded))
    while "waiting for web-1-r1" not in runtime.log:
        await asyncio.sleep(0.01)
    superseded.set()
    # Well within the fixture's 10 s readiness timeout.
    report = await asyncio.wait_for(roll, 2)
    assert report.superseded and not report.ok and report.error is None
    assert report.replaced == (("web-0", "web-0-r1"),)
    assert report.kept == ("web-1",)
    assert "newer code saved" in report.summary() and "1 replaced before it" in report.summary()
    # The pod that was starting is stopped, never routed; the old one serves on.
    assert "stop web-1-r1 (gateway routes to web-0-r1, web-1)" in runtime.log
    assert "web-1-r1" not in control.pods
    assert runtime.routed() == ["web-0-r1", "web-1"]
    assert RollReport.from_json(report.to_json()).superseded
    # The lock is free: the next roll (the newest code) goes at once.
    runtime.hang.clear()
    again = await asyncio.wait_for(control.roll("web", asyncio.Event()), 5)
    assert again.ok and again.replaced == (("web-0-r1", "web-0"), ("web-1", "web-1-r2"))
    assert runtime.routed() == ["web-0", "web-1-r2"]


async def test_a_roll_superseded_before_it_starts_a_pod_starts_none(
    running: tuple[ControlPlane, Recording],
) -> None:
    control, runtime = running
    superseded = asyncio.Event()
    superseded.set()
    report = await control.roll("web", superseded)
    assert report.superseded and report.replaced == ()
    assert runtime.log == []
