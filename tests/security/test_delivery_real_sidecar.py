"""Certificates from the mesh's CA reach real sidecars (meshdev.sidecar.main.Sidecar, in this
process, on loopback addresses of their own as the process runtime gives them), which then
talk STRICT mutual TLS to each other; renewals at half the certificate's life change what
they present while requests keep flowing, none failing."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meshdev.common.sidecar_config import parse_config
from meshdev.common.workload_certs import spiffe_id
from meshdev.config import parse_mesh
from meshdev.config.model import Mesh
from meshdev.control import ControlPlane
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
from meshdev.runtime.readiness import http_status
from meshdev.sidecar.main import Sidecar
from meshdev.status import gather_status
from tests.support import WAIT

MESH = parse_mesh(
    b"""
name: mtls
services:
  frontend: {image: example/app, port: 8080}
  backend: {image: example/app, port: 8080}
security: {mtls: STRICT}
""",
    "mesh.yaml",
)


class InProcess:
    """A runtime whose pods are a real Sidecar and a small app, in this process, each pod on a
    loopback address of its own (a random /24 of 127/8, so parallel runs do not meet)."""

    kind: RuntimeKind = "process"

    def __init__(self) -> None:
        self.subnet = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
        self.sidecars: dict[str, Sidecar] = {}
        self._apps: dict[str, web.AppRunner] = {}
        self._hosts: dict[str, int] = {}

    async def remove_leftovers(self) -> list[str]:
        return []

    async def prepare(self, mesh: Mesh, specs: list[PodSpec], progress: Progress) -> None:
        return None

    def code_version(self, spec: PodSpec) -> str | None:
        return None

    def planned_placement(self, spec: PodSpec) -> Placement:
        host = self._hosts.setdefault(spec.name, len(self._hosts) + 2)
        address = f"{self.subnet}.{host}"
        return Placement(spec.name, address, listen=address, local=address)

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        placement = self.planned_placement(spec)
        app = web.Application()

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text=f"hello from {spec.name}")

        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, placement.local, spec.port).start()
        self._apps[spec.name] = runner
        config = parse_config(json.loads(sidecar_config)).model_copy(update={"access_log": "off"})
        sidecar = Sidecar(config, token=token)
        await sidecar.start()
        self.sidecars[spec.name] = sidecar
        return StartedPod(placement, f"http://{placement.listen}:{sidecar.admin_port}")

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (status := await http_status(f"{started.admin_url}/ready"))[0] != 200:
            if loop.time() > deadline:
                raise RuntimeFailure(f"pod {spec.name} not ready: {status[1]}")
            await asyncio.sleep(0.02)

    async def exits(self) -> list[PodExit]:
        return []  # its pods never exit on their own

    async def stop_pod(self, pod: str) -> None:
        sidecar = self.sidecars.pop(pod, None)
        if sidecar is not None:
            await sidecar.stop(grace=0.5)
        runner = self._apps.pop(pod, None)
        if runner is not None:
            await runner.cleanup()

    async def pod_states(self) -> list[PodState]:
        states = []
        for name, sidecar in self.sidecars.items():
            address = f"{self.subnet}.{self._hosts[name]}"
            admin_url = f"http://{address}:{sidecar.admin_port}"
            service = sidecar.config.service or ""
            states.append(PodState(name, service, None, "running", address, admin_url))
        return states

    async def logs(self, pod: str, container: Container) -> AsyncIterator[str]:
        lines: list[str] = []
        for line in lines:
            yield line

    async def last_lines(self, pod: str, container: Container, n: int = 20) -> list[str]:
        return []

    async def teardown(self) -> list[str]:
        names = list(self.sidecars)
        for name in names:
            await self.stop_pod(name)
        return names


@pytest.fixture
async def mesh_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[ControlPlane, InProcess]]:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path))
    runtime = InProcess()
    # Two seconds unless a test says: renewed every second (certificate times have whole
    # seconds, so each renewal ends later than the one before).
    ttl: float = getattr(request, "param", 2.0)
    control = ControlPlane(runtime, "s3cret", ready_timeout=10, cert_ttl=ttl)
    try:
        report = await control.up(MESH)
        assert report.ok, report.errors
        yield control, runtime
    finally:
        await control.down()


async def _certs(session: aiohttp.ClientSession, admin_url: str) -> dict[str, Any]:
    async with session.get(f"{admin_url}/certs") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
    (certificate,) = body["certificates"]
    leaf: dict[str, Any] = certificate["cert_chain"][0]
    return leaf


async def test_real_sidecars_take_their_certificates_and_talk_mutual_tls(
    mesh_up: tuple[ControlPlane, InProcess],
) -> None:
    control, runtime = mesh_up
    backend = control.pods["backend-0"]
    async with aiohttp.ClientSession(trust_env=False) as http:
        leaf = await _certs(http, backend.started.admin_url)
        assert leaf["subject_alt_names"] == [{"uri": spiffe_id("mtls", "backend")}]
        assert backend.cert_expires is not None
        assert leaf["expiration_time"] == backend.cert_expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        outbound = f"http://{control.pods['frontend-0'].started.placement.local}:15001/"
        async with http.get(outbound, headers={"host": "backend"}) as resp:
            assert resp.status == 200
            assert await resp.text() == "hello from backend-0"
    # The hop to backend was mutual TLS: its STRICT inbound took a handshake.
    inbound = control.pods["backend-0"].started.placement.listen
    counters = {c.name: c.value for c in runtime.sidecars["backend-0"].stats.counters()}
    assert counters[f"listener.{inbound}_15006.ssl.handshake"] >= 1


async def test_renewals_reach_real_sidecars_and_no_request_fails(
    mesh_up: tuple[ControlPlane, InProcess],
) -> None:
    control, _ = mesh_up
    admin = control.pods["backend-0"].started.admin_url
    outbound = f"http://{control.pods['frontend-0'].started.placement.local}:15001/"
    statuses: list[int] = []
    serials: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 * WAIT
    # One keep-alive client: its connection to the frontend's sidecar, and that sidecar's
    # TLS connection to the backend's, outlive the renewals.
    async with aiohttp.ClientSession(trust_env=False) as http:
        while len(serials) < 3:
            assert loop.time() < deadline, f"renewals seen: {serials}"
            async with http.get(outbound, headers={"host": "backend"}) as resp:
                statuses.append(resp.status)
                await resp.read()
            serials.add((await _certs(http, admin))["serial_number"])
            await asyncio.sleep(0.01)
    assert set(statuses) == {200}, statuses


@pytest.mark.parametrize("mesh_up", [24 * 3600.0], indirect=True)
async def test_status_reads_identity_certificate_and_mode_from_real_sidecars(
    mesh_up: tuple[ControlPlane, InProcess],
) -> None:
    control, runtime = mesh_up
    status = await gather_status("mtls", runtime, None)
    rows = {
        p["name"]: (p["spiffe_id"], p["cert_expires"], p["mtls"], p["ready"])
        for p in status["pods"]
    }
    expected = {}
    for name, service in (("frontend-0", "frontend"), ("backend-0", "backend")):
        expires = control.pods[name].cert_expires
        assert expires is not None
        expected[name] = (
            spiffe_id("mtls", service),
            expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "STRICT",
            True,
        )
    assert rows == expected


async def test_a_reload_that_adds_security_gives_real_sidecars_their_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path))
    plaintext = parse_mesh(
        b"""
name: mtls
services:
  frontend: {image: example/app, port: 8080}
  backend: {image: example/app, port: 8080}
""",
        "mesh.yaml",
    )
    runtime = InProcess()
    control = ControlPlane(runtime, "s3cret", ready_timeout=10)
    try:
        assert (await control.up(plaintext)).ok
        report = await control.apply(MESH)
        assert report.ok, report.errors
        assert report.started == ()
        outbound = f"http://{control.pods['frontend-0'].started.placement.local}:15001/"
        async with aiohttp.ClientSession(trust_env=False) as http:
            for name, service in (("frontend-0", "frontend"), ("backend-0", "backend")):
                leaf = await _certs(http, control.pods[name].started.admin_url)
                assert leaf["subject_alt_names"] == [{"uri": spiffe_id("mtls", service)}]
            async with http.get(outbound, headers={"host": "backend"}) as resp:
                assert resp.status == 200
                assert await resp.text() == "hello from backend-0"
        inbound = control.pods["backend-0"].started.placement.listen
        counters = {c.name: c.value for c in runtime.sidecars["backend-0"].stats.counters()}
        assert counters[f"listener.{inbound}_15006.ssl.handshake"] >= 1
    finally:
        await control.down()
