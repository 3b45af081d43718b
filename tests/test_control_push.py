"""A save pushes only to the sidecars whose rendered config changed: with `calls:`, a policy
of one service reaches its callers (and the gateway) and no other sidecar, whose config
version stays where it was while the report counts it as serving the new one. `up` on a
runtime that knows the pods' addresses before they start gives each sidecar its endpoints
with its first config, and then pushes only what a pod's crash at start changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.config import parse_mesh
from meshdev.config.model import Mesh
from meshdev.control import ControlPlane
from tests.security.standins import StandIns

MESH = """
name: scoped
services:
  frontend: {image: example/app, calls: [backend]}
  backend: {image: example/app, replicas: 2, calls: [db]}
  db: {image: example/app, calls: []}
  audit: {image: example/app, calls: []}
ingress:
  port: 8000
  routes: [{name: web, match: {prefix: /}, to: frontend}]
policies:
  db: {circuit_breaker: {max_requests: LIMIT}}
"""


def mesh(limit: int) -> Mesh:
    return parse_mesh(MESH.replace("LIMIT", str(limit)).encode(), "mesh.yaml")


@pytest.fixture
async def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StandIns]:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path))
    standins = StandIns()
    yield standins
    await standins.teardown()


async def test_a_policy_save_pushes_to_the_sidecars_that_route_to_its_service_only(
    runtime: StandIns,
) -> None:
    control = ControlPlane(runtime, "s3cret", ready_timeout=10)
    assert (await control.up(mesh(100))).ok
    assert {n: s.config.version for n, s in runtime.sidecars.items()} == dict.fromkeys(
        ["ingress", "frontend-0", "backend-0", "backend-1", "db-0", "audit-0"], 1
    )
    report = await control.apply(mesh(200))
    assert report.ok, report.errors
    # db's callers are backend's pods (calls: [db]) and the gateway (every service);
    # db's own sidecar needs no route to itself (calls: []), its inbound is the same.
    assert (report.version, report.pushed, report.serving, report.sidecars) == (2, 3, 6, 6)
    versions = {n: s.config.version for n, s in runtime.sidecars.items()}
    assert versions == {
        "ingress": 2,
        "frontend-0": 1,
        "backend-0": 2,
        "backend-1": 2,
        "db-0": 1,
        "audit-0": 1,
    }
    assert runtime.sidecars["backend-0"].config.cluster("db") is not None
    assert runtime.sidecars["frontend-0"].config.cluster("db") is None
    assert "applied v2 to 6/6 sidecars" in report.summary()
    assert "(3 changed)" in report.summary()
    # A save that changes nothing any sidecar serves pushes nothing at all.
    again = await control.apply(mesh(200))
    assert (again.pushed, again.serving) == (0, 6)
    await control.down()


def endpoints(config: SidecarConfig, cluster: str) -> list[str]:
    found = config.cluster(cluster)
    assert found is not None
    return [e.pod or "" for e in found.endpoints]


async def test_up_starts_sidecars_with_every_pods_endpoints_and_pushes_nothing_after(
    runtime: StandIns,
) -> None:
    control = ControlPlane(runtime, "s3cret", ready_timeout=10)
    report = await control.up(mesh(100))
    assert report.ok, report.errors
    assert (report.pushed, report.serving, report.sidecars) == (0, 6, 6)
    # What each stand-in was started with, and still serves: no push came after.
    assert endpoints(runtime.sidecars["ingress"].config, "backend") == ["backend-0", "backend-1"]
    assert endpoints(runtime.sidecars["backend-1"].config, "db") == ["db-0"]
    assert endpoints(runtime.sidecars["frontend-0"].config, "backend") == [
        "backend-0",
        "backend-1",
    ]
    assert {s.config.version for s in runtime.sidecars.values()} == {1}
    await control.down()


async def test_a_pod_crashed_at_start_is_pushed_out_of_the_endpoints_it_was_started_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path))
    runtime = StandIns(crash_at_start="backend-1")
    control = ControlPlane(runtime, "s3cret", ready_timeout=10)
    try:
        report = await control.up(mesh(100))
        assert report.crashed == ("backend-1",)
        # backend's callers: frontend (calls: [backend]) and the gateway (every service).
        assert report.pushed == 2
        for caller in ("ingress", "frontend-0"):
            assert endpoints(runtime.sidecars[caller].config, "backend") == ["backend-0"]
        assert endpoints(runtime.sidecars["backend-0"].config, "db") == ["db-0"]
    finally:
        await control.down()
        await runtime.teardown()
