"""A runtime whose pods are stand-in sidecars (meshdev.testing.certs_sidecar) on real loopback
sockets, for the tests of certificate delivery and of `meshdev status`'s security fields."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.config.model import Mesh
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
from meshdev.testing.certs_sidecar import CertsSidecar


class StandIns:
    """A runtime whose pods are stand-in sidecars on loopback."""

    kind: RuntimeKind = "process"

    def __init__(self, *, exits_at_start: bool = False, crash_at_start: str = "") -> None:
        self.sidecars: dict[str, CertsSidecar] = {}
        self.stopped: list[str] = []
        # Called with each new stand-in before it listens (to make it misbehave).
        self.prepare_sidecar: Callable[[CertsSidecar], None] = lambda _s: None
        # Every pod "exits" while starting: its admin API never answers.
        self.exits_at_start = exits_at_start
        # This pod's app "exits with code 1" while starting: a crash `up` tolerates.
        self.crash_at_start = crash_at_start
        self._listening: list[asyncio.Task[None]] = []

    async def remove_leftovers(self) -> list[str]:
        return []

    async def prepare(self, mesh: Mesh, specs: list[PodSpec], progress: Progress) -> None:
        return None

    def planned_placement(self, spec: PodSpec) -> Placement:
        return Placement(spec.name, "127.0.0.1", "127.0.0.1", "127.0.0.1")

    def code_version(self, spec: PodSpec) -> str | None:
        return None

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        sidecar = CertsSidecar(SidecarConfig.model_validate_json(sidecar_config), token)
        self.prepare_sidecar(sidecar)
        self.sidecars[spec.name] = sidecar
        if not self.exits_at_start:
            self._listening.append(asyncio.create_task(self._listen_soon(sidecar)))
        return StartedPod(self.planned_placement(spec), sidecar.admin_url)

    async def _listen_soon(self, sidecar: CertsSidecar) -> None:
        # The process runs before its admin API answers: the first pushes are refused.
        await asyncio.sleep(0.05)
        await sidecar.listen()

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        if self.exits_at_start:
            raise RuntimeFailure(f"pod {spec.name} exited while starting (code 1)")
        if spec.name == self.crash_at_start:
            raise RuntimeFailure(f"pod {spec.name}: app exited with code 1", exit_code=1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status, why = await http_status(f"{started.admin_url}/ready")
            if status == 200:
                return
            if loop.time() > deadline:
                raise RuntimeFailure(f"pod {spec.name} not ready in {timeout:g}s: {why}")
            await asyncio.sleep(0.02)

    async def exits(self) -> list[PodExit]:
        return []  # its pods never exit on their own

    async def stop_pod(self, pod: str) -> None:
        self.stopped.append(pod)
        sidecar = self.sidecars.pop(pod, None)
        if sidecar is not None:
            await sidecar.close()

    async def pod_states(self) -> list[PodState]:
        return [
            PodState(
                name,
                s.config.service or "",
                s.config.subset,
                "running",
                "127.0.0.1",
                s.admin_url,
            )
            for name, s in self.sidecars.items()
        ]

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
        for task in self._listening:
            task.cancel()
        await asyncio.gather(*self._listening, return_exceptions=True)
        return names
