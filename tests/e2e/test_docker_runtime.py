"""The docker runtime on a real engine: images, pods, ports, readiness, errors, and cleanup.

Every test uses a mesh name of its own, so tests (and two meshes) run side by side, and every
test sweeps its mesh's containers and network by label afterwards, with the SDK directly rather
than with the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from docker.errors import NotFound

from meshdev import plan
from meshdev.config import load_mesh
from meshdev.config.model import Mesh
from meshdev.runtime.base import RuntimeFailure, StartedPod
from meshdev.runtime.docker import images as docker_images
from meshdev.runtime.docker.engine import connect
from meshdev.runtime.docker.runtime import DockerRuntime
from meshdev.templates import template
from tests.support import ROOT, free_port, wait_until

EXAMPLE = ROOT / "examples" / "flask-app"
DEFAULTS: dict[str, Any] = yaml.safe_load(template("sidecar.yaml").read_text())
TOKEN = "test-token"
READY_TIMEOUT_S = 60.0
LABEL = "meshdev.mesh"

# The test's own requests go straight to 127.0.0.1, whatever proxy the machine sets.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with _DIRECT.open(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def _filter(mesh: str) -> dict[str, str | list[str] | bool]:
    return {"label": [f"{LABEL}={mesh}"]}


def _sweep(client: docker.DockerClient, mesh: str) -> None:
    flt = _filter(mesh)
    for c in client.containers.list(all=True, filters=flt):
        with contextlib.suppress(NotFound):
            c.remove(force=True)
    for n in client.networks.list(filters=flt):
        with contextlib.suppress(NotFound):
            n.remove()
    # The app images this mesh tagged; noprune keeps their layers: the next test's build cache.
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"meshdev-{mesh}-"):
                with contextlib.suppress(NotFound):
                    client.images.remove(tag, noprune=True)


def _left(client: docker.DockerClient, mesh: str) -> tuple[list[str], list[str]]:
    """What `docker ps -a` and `docker network ls` show with the mesh's label."""
    flt = _filter(mesh)
    containers = [str(c.name) for c in client.containers.list(all=True, filters=flt)]
    networks = [str(n.name) for n in client.networks.list(filters=flt)]
    return containers, networks


@dataclass
class MeshUnderTest:
    mesh: Mesh
    file: Path
    runtime: DockerRuntime
    port: int

    @property
    def name(self) -> str:
        return self.mesh.name

    def spec(self, pod: str) -> plan.PodSpec:
        return next(s for s in plan.pods(self.mesh) if s.name == pod)

    def config(
        self,
        spec: plan.PodSpec,
        placement: plan.Placement,
        endpoints: list[tuple[plan.PodSpec, plan.Placement]],
        version: int = 1,
    ) -> bytes:
        cfg = plan.render(self.mesh, spec, placement, endpoints, version=version, defaults=DEFAULTS)
        return cfg.model_dump_json().encode()

    async def start(self, pod: str) -> StartedPod:
        spec = self.spec(pod)
        placement = self.runtime.planned_placement(spec)
        return await self.runtime.start_pod(spec, self.config(spec, placement, []), TOKEN)

    async def up(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, StartedPod]:
        """What the control plane does: prepare, start all in parallel, wait, push endpoints."""
        specs = plan.pods(self.mesh)
        await self.runtime.prepare(self.mesh, specs, progress)
        started = await asyncio.gather(*(self.start(s.name) for s in specs))
        await asyncio.gather(
            *(
                self.runtime.wait_ready(s, st, READY_TIMEOUT_S)
                for s, st in zip(specs, started, strict=True)
            )
        )
        endpoints = [(s, st.placement) for s, st in zip(specs, started, strict=True)]
        for spec, st in zip(specs, started, strict=True):
            body = self.config(spec, st.placement, endpoints, version=2)
            status, answer = await asyncio.to_thread(
                _request,
                f"{st.admin_url}/config",
                body,
                {"x-meshdev-token": TOKEN, "content-type": "application/json"},
            )
            assert status == 200, answer
        return {s.name: st for s, st in zip(specs, started, strict=True)}


MakeMesh = Callable[..., MeshUnderTest]

WEB = f"""
  web:
    build: {EXAMPLE}
    command: python app.py
    port: 8080
    health_path: /healthz
    env: {{SERVICE: web}}
"""


@pytest.fixture
def make_mesh(
    tmp_path: Path, docker_client: docker.DockerClient, docker_base_image: str
) -> Iterator[MakeMesh]:
    made: list[str] = []

    def make(services: str = WEB, *, ingress_to: str | None = "web") -> MeshUnderTest:
        name = f"t-{uuid.uuid4().hex[:10]}"
        port = free_port()
        folder = tmp_path / name
        folder.mkdir()
        text = f"name: {name}\nservices:\n{services.strip(chr(10))}\n"
        if ingress_to is not None:
            text += f"ingress:\n  port: {port}\n  routes:\n"
            text += f"    - {{match: {{prefix: /}}, to: {ingress_to}}}\n"
        file = folder / "mesh.yaml"
        file.write_text(text)
        made.append(name)
        mesh = load_mesh(file)
        return MeshUnderTest(
            mesh, file, DockerRuntime(mesh, file, docker_base_image, client=docker_client), port
        )

    try:
        yield make
    finally:
        for name in made:
            _sweep(docker_client, name)


pytestmark = pytest.mark.docker


async def test_prepare_builds_proxy_and_app_images_from_the_base_image(
    make_mesh: MakeMesh, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    m = make_mesh()
    lines: list[str] = []
    await m.runtime.prepare(m.mesh, plan.pods(m.mesh), lines.append)

    base_layers = docker_client.images.get(docker_base_image).attrs["RootFS"]["Layers"]
    proxy_tags = [t for t in _image_tags(docker_client) if t.startswith("meshdev-proxy:")]
    built = {
        "proxy": next(t for t in proxy_tags if any(t in line for line in lines)),
        "app": f"meshdev-{m.name}-web:latest",
    }
    for tag in built.values():
        layers = docker_client.images.get(tag).attrs["RootFS"]["Layers"]
        assert layers[: len(base_layers)] == base_layers, tag
    proxy = docker_client.images.get(built["proxy"]).attrs["Config"]
    assert proxy["Entrypoint"] == ["meshdev", "sidecar"]
    assert proxy["User"] == "1337:1337"
    assert any(line.startswith("the image of web") for line in lines), lines
    assert (f"meshdev-{m.name}", "created") == _network_line(lines)

    # Unchanged package: the proxy image is found by its content hash, no build at all.
    again: list[str] = []
    await m.runtime.prepare(m.mesh, plan.pods(m.mesh), again.append)
    assert f"proxy image {built['proxy']}: up to date" in again
    assert not any("proxy image" in line and "Step" in line for line in again)


def _image_tags(client: docker.DockerClient) -> list[str]:
    return [t for image in client.images.list() for t in image.tags]


def _network_line(lines: list[str]) -> tuple[str, str]:
    line = next(x for x in lines if x.startswith("network "))
    name, _, what = line.removeprefix("network ").partition(": ")
    return name, what


async def test_pods_carry_labels_share_a_namespace_and_publish_on_loopback_only(
    make_mesh: MakeMesh, docker_client: docker.DockerClient
) -> None:
    m = make_mesh()
    started = await m.up()

    containers = {str(c.name): c for c in docker_client.containers.list(filters=_filter(m.name))}
    sidecar = containers[f"meshdev-{m.name}-web-0"]
    app = containers[f"meshdev-{m.name}-web-0-app"]
    ingress = containers[f"meshdev-{m.name}-ingress"]
    assert len(containers) == 3
    assert sidecar.labels["meshdev.role"] == "sidecar"
    assert app.labels["meshdev.role"] == "app"
    assert ingress.labels["meshdev.role"] == "ingress"
    assert {c.labels["meshdev.pod"] for c in (sidecar, app)} == {"web-0"}
    assert {c.labels["meshdev.service"] for c in (sidecar, app)} == {"web"}
    assert len(sidecar.labels["meshdev.config-hash"]) == 16

    # One network per mesh, labelled; the sidecar is on it, the app in the sidecar's namespace.
    net = docker_client.networks.get(f"meshdev-{m.name}")
    assert net.attrs["Labels"] == {LABEL: m.name}
    networks = sidecar.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [f"meshdev-{m.name}"]
    assert networks[f"meshdev-{m.name}"]["IPAddress"] == started["web-0"].placement.address
    assert app.attrs["HostConfig"]["NetworkMode"] == f"container:{sidecar.id}"
    env = dict(e.split("=", 1) for e in app.attrs["Config"]["Env"])
    assert (env["HOST"], env["PORT"]) == ("127.0.0.1", "8080")
    # Traffic is captured (iptables, docs/capture.md): the app needs no proxy setting.
    assert "HTTP_PROXY" not in env and "http_proxy" not in env
    assert not app.attrs["HostConfig"].get("CapAdd")
    assert app.attrs["Config"]["WorkingDir"] == "/app"  # the image's WORKDIR

    # Every published port is on the host's loopback; the gateway's on its own port. The
    # outbound listener is the pod's own: exposed by the image, published nowhere.
    published = {
        str(c.name): {p: b for p, b in c.attrs["NetworkSettings"]["Ports"].items() if b}
        for c in (sidecar, ingress)
    }
    assert set(published[str(sidecar.name)]) == {"15000/tcp", "15006/tcp"}
    assert set(published[str(ingress.name)]) == {"15000/tcp", f"{m.port}/tcp"}
    for ports in published.values():
        assert {b["HostIp"] for bindings in ports.values() for b in bindings} == {"127.0.0.1"}
    assert ingress.attrs["NetworkSettings"]["Ports"][f"{m.port}/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(m.port)}
    ]
    admin = started["web-0"].admin_url
    assert admin.startswith("http://127.0.0.1:")
    assert _request(f"{admin}/ready")[0] == 200

    # A separate process sees the same: a fresh runtime finds the pods by label.
    fresh = DockerRuntime(m.mesh, m.file, "unused", client=docker_client)
    states = {s.pod: s for s in await fresh.pod_states()}
    assert list(states) == ["ingress", "web-0"]
    assert states["web-0"].state == "running"
    assert states["web-0"].address == started["web-0"].placement.address
    assert states["web-0"].admin_url == admin
    assert states["ingress"].admin_url == started["ingress"].admin_url


async def test_a_request_to_the_ingress_reaches_the_app_through_both_sidecars(
    make_mesh: MakeMesh,
) -> None:
    m = make_mesh()
    started = await m.up()

    status, body = await asyncio.to_thread(_request, f"http://127.0.0.1:{m.port}/")
    assert status == 200, body
    assert json.loads(body)["pod"] == "web-0"
    # The same pod, poked directly through its own inbound listener.
    status, body = await asyncio.to_thread(_request, f"{started['web-0'].inbound_url}/")
    assert status == 200, body
    assert json.loads(body)["pod"] == "web-0"


async def test_teardown_leaves_nothing_and_is_idempotent(
    make_mesh: MakeMesh, docker_client: docker.DockerClient
) -> None:
    m = make_mesh()
    await m.up()
    assert _left(docker_client, m.name) != ([], [])

    removed = await m.runtime.teardown()

    assert sorted(removed) == sorted(
        [
            f"meshdev-{m.name}-ingress",
            f"meshdev-{m.name}-web-0",
            f"meshdev-{m.name}-web-0-app",
            f"meshdev-{m.name}",
        ]
    )
    assert _left(docker_client, m.name) == ([], [])
    assert await m.runtime.teardown() == []


async def test_remove_leftovers_sweeps_a_crashed_run(
    make_mesh: MakeMesh, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    m = make_mesh()
    await m.runtime.prepare(m.mesh, plan.pods(m.mesh), lambda _: None)
    await asyncio.gather(m.start("ingress"), m.start("web-0"))
    del m.runtime  # the run "crashes": nothing of it is torn down

    later = DockerRuntime(m.mesh, m.file, docker_base_image, client=docker_client)
    removed = await later.remove_leftovers()

    assert len(removed) == 4
    assert _left(docker_client, m.name) == ([], [])


async def test_two_meshes_side_by_side_leave_each_other_alone(
    make_mesh: MakeMesh, docker_client: docker.DockerClient
) -> None:
    a, b = make_mesh(), make_mesh()
    await asyncio.gather(a.up(), b.up())
    b_containers, b_networks = _left(docker_client, b.name)

    assert [s.pod for s in await a.runtime.pod_states()] == ["ingress", "web-0"]
    await a.runtime.teardown()

    assert _left(docker_client, a.name) == ([], [])
    assert _left(docker_client, b.name) == (b_containers, b_networks)
    assert {s.state for s in await b.runtime.pod_states()} == {"running"}
    status, body = await asyncio.to_thread(_request, f"http://127.0.0.1:{b.port}/")
    assert status == 200, body


async def test_a_taken_ingress_port_is_named_and_nothing_is_left(
    make_mesh: MakeMesh, docker_client: docker.DockerClient
) -> None:
    m = make_mesh()
    expected = (
        f"127.0.0.1:{m.port} is already in use (ingress.port in mesh.yaml); "
        "free it or change the port"
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", m.port))
        holder.listen()
        with pytest.raises(RuntimeFailure) as before_build:
            await m.runtime.prepare(m.mesh, plan.pods(m.mesh), lambda _: None)
    assert str(before_build.value) == expected
    assert _left(docker_client, m.name) == ([], [])

    # Taken between prepare and start: the engine's refusal reads the same.
    await m.runtime.prepare(m.mesh, plan.pods(m.mesh), lambda _: None)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", m.port))
        holder.listen()
        with pytest.raises(RuntimeFailure) as at_start:
            await m.start("ingress")
    assert str(at_start.value) == expected
    assert _left(docker_client, m.name) == ([], [f"meshdev-{m.name}"])


async def test_a_failing_build_names_its_step_and_shows_its_log(
    make_mesh: MakeMesh, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo about-to-fail-7c1\nRUN false\n"
    )
    m = make_mesh(f"  web:\n    build: {broken}\n    port: 8080\n")

    with pytest.raises(RuntimeFailure) as failed:
        await m.runtime.prepare(m.mesh, plan.pods(m.mesh), lambda _: None)

    message = str(failed.value)
    assert message.startswith(
        f"building the image of web ({broken}) failed at Step 4/4 : RUN false"
    )
    assert "returned a non-zero code: 1" in message
    assert "about-to-fail-7c1" in message.split("last lines of the build:")[1]
    assert _left(docker_client, m.name) == ([], [])


async def test_an_app_that_exits_at_start_is_named_with_its_last_line(
    make_mesh: MakeMesh, docker_client: docker.DockerClient
) -> None:
    m = make_mesh(
        f"""
  web:
    build: {EXAMPLE}
    command: echo "cannot connect to the database ($POD)" >&2; exit 3
    port: 8080
    health_path: /healthz
"""
    )
    spec = m.spec("web-0")
    await m.runtime.prepare(m.mesh, [spec], lambda _: None)
    started = await m.start("web-0")

    with pytest.raises(RuntimeFailure) as failed:
        await m.runtime.wait_ready(spec, started, READY_TIMEOUT_S)

    message = str(failed.value)
    assert message.startswith(
        f"pod web-0 did not come up: its container meshdev-{m.name}-web-0-app exited with code 3"
    )
    assert message.splitlines()[-1].strip() == "cannot connect to the database (web-0)"
    states = {s.pod: s for s in await m.runtime.pod_states()}
    assert states["web-0"].state == "exited"
    assert "app: Exited (3)" in states["web-0"].detail


async def test_command_only_service_runs_in_the_base_image_beside_the_mesh_file(
    make_mesh: MakeMesh,
) -> None:
    # No build, no image: the base image, the mesh file's folder as /app, HOST/PORT set.
    m = make_mesh(
        """
  files:
    command: [python3, -m, http.server, "9000", --bind, 127.0.0.1]
    port: 9000
""",
        ingress_to="files",
    )
    (m.file.parent / "hello.txt").write_text("hello from the mesh folder\n")
    started = await m.up()

    status, body = await asyncio.to_thread(_request, f"{started['files-0'].inbound_url}/hello.txt")
    assert (status, body) == (200, b"hello from the mesh folder\n")


async def test_logs_follow_and_last_lines(make_mesh: MakeMesh) -> None:
    m = make_mesh(
        f"""
  web:
    build: {EXAMPLE}
    command: echo first-line; echo second-line; exec python app.py
    port: 8080
    health_path: /healthz
"""
    )
    started = await m.up()

    assert (await m.runtime.last_lines("web-0", "app", 50))[:2] == ["first-line", "second-line"]
    async with contextlib.aclosing(m.runtime.logs("web-0", "app")) as app_log:
        first = await asyncio.wait_for(anext(app_log), 10)
        second = await asyncio.wait_for(anext(app_log), 10)
    assert (first, second) == ("first-line", "second-line")

    # Following: the sidecar's log from its start, then a line written after we began reading
    # (its access log line of a request made now).
    async with contextlib.aclosing(m.runtime.logs("web-0", "sidecar")) as sidecar_log:
        ready_line = await asyncio.wait_for(anext(sidecar_log), 10)
        assert ready_line.startswith("meshdev sidecar web-0 ready")
        status, _ = await asyncio.to_thread(_request, f"{started['web-0'].inbound_url}/status/418")
        assert status == 418

        async def until_418() -> str:
            async for line in sidecar_log:
                if "/status/418" in line:
                    return line
            raise AssertionError("the log ended without the request")

        assert '"GET /status/418 HTTP/1.1" 418' in await asyncio.wait_for(until_418(), 10)

    # Closing a stream stops its follower thread.
    def followers() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("meshdev-logs-")]

    await wait_until(lambda: not followers(), lambda: f"the log followers to stop: {followers()}")
    assert not followers()


async def test_stop_pod_removes_both_containers(
    make_mesh: MakeMesh, docker_client: docker.DockerClient
) -> None:
    m = make_mesh()
    await m.up()

    await m.runtime.stop_pod("web-0")

    containers, _ = _left(docker_client, m.name)
    assert containers == [f"meshdev-{m.name}-ingress"]


def test_no_engine_is_a_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(RuntimeFailure) as failed:
        connect(timeout=2)
    assert str(failed.value).startswith(f"no Docker engine answers at unix://{tmp_path}/")
    assert "--runtime process" in str(failed.value)


async def test_an_engine_that_stops_answering_is_a_clear_message(tmp_path: Path) -> None:
    # An engine that hangs up on every request, as a dying dockerd does. It reads the request's
    # head first: closing before the client has written it made the client see either a reset
    # (write after the close) or an end of stream (read after it), by a race.
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    path = tmp_path / "dying.sock"
    server = await asyncio.start_unix_server(hang_up, str(path))
    dying = docker.DockerClient(base_url=f"unix://{path}", version="1.41")
    mesh = Mesh.model_validate({"name": "gone", "services": {"a": {"command": "true"}}})
    runtime = DockerRuntime(mesh, tmp_path / "mesh.yaml", "unused", client=dying)
    try:
        with pytest.raises(RuntimeFailure) as failed:
            await runtime.pod_states()
    finally:
        dying.close()
        server.close()
        await server.wait_closed()
    assert str(failed.value) == (
        "the Docker engine stopped answering: Remote end closed connection without response"
    )


def test_the_proxy_context_comes_from_the_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pip-installed meshdev: the package in site-packages, Dockerfile.proxy shipped inside it
    # (pyproject's force-include), no checkout around it, bytecode from earlier runs lying about.
    site = tmp_path / "site-packages"
    package = site / "meshdev"
    shutil.copytree(ROOT / "meshdev", package)
    (package / "_docker").mkdir()
    shutil.copy(ROOT / "Dockerfile.proxy", package / "_docker" / "Dockerfile.proxy")
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "stray.cpython-311.pyc").write_bytes(b"\0stale")
    monkeypatch.setattr(docker_images, "package_dir", lambda: package)

    tag, entries = docker_images.proxy_context("base:1")
    names = dict(entries)

    assert names["Dockerfile.proxy"] == (ROOT / "Dockerfile.proxy").read_bytes()
    assert names["meshdev/sidecar/main.py"] == (ROOT / "meshdev/sidecar/main.py").read_bytes()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The tag is the content's: stable, and new when the code or the base image changes.
    assert docker_images.proxy_context("base:1")[0] == tag
    assert docker_images.proxy_context("base:2")[0] != tag
    (package / "sidecar" / "main.py").write_text("# changed\n", encoding="utf-8")
    assert docker_images.proxy_context("base:1")[0] != tag
