"""In-memory stand-ins for the dashboard's two seams, plus one real loopback HTTP server that
plays every pod's admin API, inbound listener and the ingress, so the actions make real
requests and tests assert what arrived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from textual.pilot import Pilot

from meshdev import plan
from meshdev.config import load_mesh
from meshdev.config.model import Mesh
from meshdev.control import TOKEN_HEADER, ControlPlane, Pod, ReloadReport, RollReport
from meshdev.plan import Placement, PodSpec
from meshdev.runtime.base import (
    Container,
    PodExit,
    PodState,
    RuntimeFailure,
    RuntimeKind,
    StartedPod,
)
from meshdev.runtime.paths import BY_KEY
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.tui.app import MeshdevApp
from meshdev.tui.controllers import UpController
from meshdev.tui.logic.pacer import FramePacer
from meshdev.tui.logic.ports import OnView, TraceFeed
from tests.support import DEMO_MESH, wait_until

TOKEN = "test-token"


class FakeSource:
    """Views arrive when a test calls `emit`; `run` waits like a real stream would."""

    def __init__(self, fail_first: int = 0) -> None:
        self.targets: list[tuple[str, str]] = []
        self.on_view: OnView | None = None
        self.runs = 0
        self.fail_first = fail_first
        self.interval = 0.25

    def set_targets(self, targets: Sequence[tuple[str, str]]) -> None:
        self.targets = list(targets)

    async def run(self, on_view: OnView) -> None:
        self.runs += 1
        if self.runs <= self.fail_first:
            raise ConnectionError(f"stream broke (run {self.runs})")
        self.on_view = on_view
        await asyncio.Event().wait()

    def emit(self, view: MeshView) -> None:
        assert self.on_view is not None, "the app has not started the source yet"
        self.on_view(view)


@dataclass
class PodsServer:
    """One aiohttp server on 127.0.0.1 standing in for every pod and the ingress.

    /pods/<pod>/admin/{config,runtime_modify} and /pods/<pod>/inbound/chaos record what they
    get; /items is the ingress, which answers 503 with x-envoy-overloaded while more than
    `limit` requests are in flight, as a sidecar's breaker does.
    """

    limit: int = 10
    delay: float = 0.05
    runtime: dict[str, dict[str, str]] = field(default_factory=dict)
    chaos: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_flight: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/pods/{pod}/admin/runtime_modify", self._runtime_modify)
        app.router.add_post("/pods/{pod}/admin/config", self._config)
        app.router.add_post("/pods/{pod}/inbound/chaos", self._chaos)
        app.router.add_get("/items", self._items)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _runtime_modify(self, request: web.Request) -> web.Response:
        if request.headers.get(TOKEN_HEADER) != TOKEN:
            return web.json_response({"error": "wrong token"}, status=403)
        form = await request.post()
        values = self.runtime.setdefault(request.match_info["pod"], {})
        for key, value in form.items():
            if value == "":
                values.pop(key, None)
            else:
                values[key] = str(value)
        return web.Response(text="OK\n")

    async def _config(self, request: web.Request) -> web.Response:
        self.configs[request.match_info["pod"]] = await request.json()
        return web.json_response({"ok": True})

    async def _chaos(self, request: web.Request) -> web.Response:
        self.chaos[request.match_info["pod"]] = await request.json()
        return web.json_response({"ok": True})

    async def _items(self, request: web.Request) -> web.Response:
        if self.in_flight >= self.limit:
            return web.Response(status=503, headers={"x-envoy-overloaded": "true"})
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.json_response({"items": []})


class FakeRuntime:
    kind: RuntimeKind = "process"

    def __init__(self) -> None:
        self.states: list[PodState] = []
        self.log_lines: dict[tuple[str, str], list[str]] = {}
        self.followed: list[tuple[str, str]] = []
        self.engine_down = False

    async def remove_leftovers(self) -> list[str]:
        return []

    async def prepare(
        self, mesh: Mesh, specs: list[PodSpec], progress: Callable[[str], None]
    ) -> None:
        return None

    def planned_placement(self, spec: PodSpec) -> Placement:
        return Placement(spec.name, "127.0.0.1", "127.0.0.1", "127.0.0.1")

    def code_version(self, spec: PodSpec) -> str | None:
        return None

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        raise RuntimeFailure("FakeRuntime starts no pods")

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        return None

    async def exits(self) -> list[PodExit]:
        return []  # its pods never exit on their own

    async def stop_pod(self, pod: str) -> None:
        return None

    async def pod_states(self) -> list[PodState]:
        if self.engine_down:
            raise RuntimeFailure("the Docker engine does not answer")
        return list(self.states)

    async def logs(self, pod: str, container: Container) -> AsyncIterator[str]:
        self.followed.append((pod, container))
        for line in self.log_lines.get((pod, container), []):
            yield line
        if self.engine_down:
            raise RuntimeFailure(f"logs of {pod}: the Docker engine does not answer")
        await asyncio.Event().wait()

    async def last_lines(self, pod: str, container: Container, n: int = 20) -> list[str]:
        return self.log_lines.get((pod, container), [])[-n:]

    async def teardown(self) -> list[str]:
        return []


Scripted = ReloadReport | list[str]


class FakeSession:
    """A Session without processes: `start` fills the control plane's pods with ones that
    point at `server`, `follow_file` plays what the test puts in `saves`."""

    def __init__(
        self, server: PodsServer, *, fail: str | None = None, mesh_file: Path = DEMO_MESH
    ) -> None:
        self.mesh = load_mesh(mesh_file)
        self.mesh_file = mesh_file
        self.token = TOKEN
        self.watch = True
        self.last_reload: dict[str, Any] | None = None
        self.runtime = FakeRuntime()
        # Wired as Session wires it: the control plane's lines take the session's way.
        self.say_to: Callable[[str], None] = lambda _line: None
        self.control = ControlPlane(self.runtime, self.token, progress=self.say)
        self.server = server
        self.fail = fail
        self.saves: asyncio.Queue[Scripted] = asyncio.Queue()
        # What follow_code reports, as saves of the apps' code would.
        self.rolls: asyncio.Queue[RollReport] = asyncio.Queue()
        self.stopped = 0
        self.left = 0
        self.start_delay = 0.0
        self.gate: asyncio.Event | None = None  # when set: start() waits for it at the end

    def say(self, line: str) -> None:
        self.say_to(line)

    def send_progress_to(self, say_to: Callable[[str], None]) -> Callable[[str], None]:
        previous, self.say_to = self.say_to, say_to
        return previous

    @property
    def ingress_url(self) -> str | None:
        return self.server.url + "/"

    async def start(self) -> ReloadReport:
        specs = plan.pods(self.mesh)
        self.say("process runtime: pods on 127.0.99.0/24")
        self.say(f"starting {len(specs)} pods")
        if self.fail is not None:
            raise RuntimeFailure(self.fail)
        self.control.mesh = self.mesh
        self.control.version = 1
        for spec in specs:
            await asyncio.sleep(self.start_delay)
            base = f"{self.server.url}/pods/{spec.name}"
            placement = Placement(spec.name, "127.0.0.1", "127.0.0.1", "127.0.0.1")
            started = StartedPod(placement, f"{base}/admin", f"{base}/inbound")
            self.control.pods[spec.name] = Pod(
                spec.name, spec, started, routable=True, hash="abc123", version=1
            )
            self.say(f"pod {spec.name} ready")
        if self.gate is not None:
            await self.gate.wait()
        report = ReloadReport(1, True, len(specs), len(specs), len(specs), 42.0)
        self.last_reload = {"at": 0.0, **report.to_json()}
        return report

    async def follow_file(self, on_report: Callable[[ReloadReport], None] | None = None) -> None:
        while True:
            item = await self.saves.get()
            if isinstance(item, ReloadReport):
                self.last_reload = {"at": 0.0, **item.to_json()}
                self.say(item.summary())
                if on_report is not None:
                    on_report(item)
            else:
                self.last_reload = {"ok": False, "at": 0.0, "version": 1, "errors": item}
                self.say(f"{self.mesh_file}: not applied, still serving v1:")
                for error in item:
                    self.say(f"  {error}")

    async def follow_code(self, on_roll: Callable[[RollReport], None] | None = None) -> None:
        while True:
            report = await self.rolls.get()
            self.say(report.summary())
            if on_roll is not None:
                on_roll(report)

    def record(self, report: ReloadReport, *, by_key: bool = False) -> None:
        self.last_reload = {"at": 0.0, **report.to_json(), **({BY_KEY: True} if by_key else {})}

    async def leave(self) -> None:
        self.left += 1

    async def stop(self) -> list[str]:
        self.stopped += 1
        return [f"{name} (app)" for name in self.control.pods]


def make_app(
    source: FakeSource,
    session: FakeSession,
    *,
    keep: bool = False,
    clock: Callable[[], float] | None = None,
    pacer: FramePacer | None = None,
    traces: TraceFeed | None = None,
) -> MeshdevApp:
    """The dashboard of `meshdev up` on `session`, wired as launch.py wires the real one
    (`traces`: the Traces view's feed; without one the tab says it has none)."""
    controller = UpController(session, keep=keep, pods_every=0.05)
    app = MeshdevApp(
        source,
        controller,
        clock=clock or time.time,
        # Every view painted: the test process's own CPU must not pace the frames.
        pacer=pacer or FramePacer(share=1.0),
        traces=traces,
    )
    session.send_progress_to(controller.say)
    return app


def up(app: MeshdevApp) -> UpController:
    """The app's controller, as make_app built it."""
    assert isinstance(app.controller, UpController)
    return app.controller


async def started(pilot: Pilot[Any], app: MeshdevApp, source: FakeSource) -> None:
    """Until the mesh runs and the source streams."""
    await wait_until(
        lambda: app.controller.started and source.on_view is not None, "start-up", pause=pilot.pause
    )
