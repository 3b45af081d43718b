"""The docker runtime: each pod is a sidecar container that owns the pod's network namespace,
plus the app's container joined to it, on one bridge network per mesh (docker_pods.py).

Everything carries the mesh's label; finding, listing and removing go by that label only, so a
second process (`meshdev status`, `meshdev down`) and a run after a crash see the same objects,
and another mesh's objects are never touched. Every SDK call runs in a worker thread
(docker_engine.call), so pods start in parallel while the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from collections.abc import AsyncGenerator, Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import docker
from docker.errors import APIError, NotFound
from docker.utils import parse_repository_tag

from meshdev.config.model import Mesh
from meshdev.plan import INGRESS_POD, Placement, PodSpec
from meshdev.runtime import docker_engine as engine
from meshdev.runtime.base import (
    LABEL_MESH,
    Container,
    PodState,
    Progress,
    RuntimeFailure,
    RuntimeKind,
    StartedPod,
)
from meshdev.runtime.docker_images import build_app, ensure_image, ensure_proxy
from meshdev.runtime.docker_logs import follow, tail
from meshdev.runtime.docker_names import (
    app_image_name,
    container_name,
    mesh_filter,
    network_name,
    role_of,
)
from meshdev.runtime.docker_pods import (
    LOOPBACK,
    ContainerPlan,
    app_plan,
    placement,
    sidecar_plan,
)
from meshdev.runtime.docker_ready import NotReady, Probe, wait_ready
from meshdev.runtime.docker_states import pod_states
from meshdev.sidecar.schema import ADMIN_PORT, INBOUND_PORT

# Seconds `stop_pod` gives each container to exit on SIGTERM before it is killed.
STOP_TIMEOUT_S = 2
# Lines of a container's log that an error shows.
ERROR_LOG_LINES = 15
_BASE_IMAGE_HINT = "; set MESHDEV_BASE_IMAGE or --base-image to an image on this machine"

T = TypeVar("T")


def _port_in_use(port: int) -> bool:
    # SO_REUSEADDR as the engine's port proxy sets it, so TIME_WAIT sockets of an earlier run
    # do not count as "in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _port_taken(port: int) -> RuntimeFailure:
    return RuntimeFailure(
        f"{LOOPBACK}:{port} is already in use (ingress.port in mesh.yaml); "
        "free it or change the port"
    )


def _is_port_conflict(exc: APIError) -> bool:
    text = engine.short(exc).lower()
    return "address already in use" in text or "port is already allocated" in text


def _host_port(ports: dict[str, Any] | None, container_port: int) -> int | None:
    for binding in (ports or {}).get(f"{container_port}/tcp") or ():
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def _shown(lines: list[str]) -> str:
    return "\n".join(f"  {line}" for line in lines) or "  (no output)"


async def _all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Await every one (no thread keeps working behind an error), then raise the first error."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception left: all are T


class DockerRuntime:
    """`Runtime` on a Docker engine. `client`: the engine client to use; without one, the first
    call connects as the environment says (DOCKER_HOST and friends)."""

    kind: RuntimeKind = "docker"

    def __init__(
        self,
        mesh: Mesh,
        mesh_file: Path,
        base_image: str,
        client: docker.DockerClient | None = None,
    ) -> None:
        self._mesh = mesh
        self._root = Path(mesh_file).resolve().parent
        self._base_image = base_image
        self._client = client
        self._owns_client = client is None
        self._connect_lock = threading.Lock()
        self._proxy_image: str | None = None

    @property
    def network(self) -> str:
        return network_name(self._mesh.name)

    def close(self) -> None:
        """Close the engine connection if this runtime opened it (a passed client stays open)."""
        with self._connect_lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None

    def _connect(self) -> docker.DockerClient:
        with self._connect_lock:
            if self._client is None:
                self._client = engine.connect()
            return self._client

    async def _engine(self) -> docker.DockerClient:
        if self._client is not None:
            return self._client
        return await asyncio.to_thread(self._connect)

    def _name(self, pod: str, container: Container) -> str:
        return container_name(self._mesh.name, pod, container)

    # -- finding and removing ------------------------------------------------------------

    async def _containers(self, client: docker.DockerClient) -> list[dict[str, Any]]:
        try:
            found: list[dict[str, Any]] = await engine.call(
                client.api.containers, all=True, filters=mesh_filter(self._mesh.name)
            )
        except APIError as exc:
            raise engine.refused("list containers", exc) from exc
        return found

    async def _remove(self, client: docker.DockerClient, ref: str) -> bool:
        """Force-remove one container; False when it was gone (or going) already."""
        try:
            await engine.call(client.api.remove_container, ref, force=True, v=True)
        except NotFound:
            return False
        except APIError as exc:
            if exc.status_code == 409:
                return False  # "removal already in progress": a concurrent down has it
            raise engine.refused(f"remove container {ref}", exc) from exc
        return True

    async def teardown(self) -> list[str]:
        client = await self._engine()

        async def remove(summary: dict[str, Any]) -> str | None:
            name = str(summary["Names"][0]).lstrip("/")
            return name if await self._remove(client, str(summary["Id"])) else None

        found = await self._containers(client)
        removed = [n for n in await _all([remove(c) for c in found]) if n is not None]
        try:
            networks = await engine.call(client.api.networks, filters=mesh_filter(self._mesh.name))
        except APIError as exc:
            raise engine.refused("list networks", exc) from exc
        for net in networks:
            try:
                await engine.call(client.api.remove_network, net["Id"])
            except NotFound:
                continue
            except APIError as exc:
                raise engine.refused(f"remove network {net['Name']}", exc) from exc
            removed.append(str(net["Name"]))
        return removed

    async def remove_leftovers(self) -> list[str]:
        return await self.teardown()

    # -- prepare -------------------------------------------------------------------------

    async def prepare(self, mesh: Mesh, specs: list[PodSpec], progress: Progress) -> None:
        if mesh.name != self._mesh.name:
            raise ValueError(f"this runtime serves mesh {self._mesh.name!r}, not {mesh.name!r}")
        self._mesh = mesh
        client = await self._engine()
        if mesh.ingress is not None and any(s.is_ingress for s in specs):
            await self._check_ingress_port(client, mesh.ingress.port)
        network, images = await asyncio.gather(
            self._ensure_network(client, progress),
            self._ensure_images(client, specs, progress),
            return_exceptions=True,
        )
        failure = images if isinstance(images, BaseException) else network
        if isinstance(failure, BaseException):
            if network is True:
                # Best effort: the next up's leftover sweep finds it by label otherwise.
                with contextlib.suppress(APIError, RuntimeFailure):
                    await engine.call(client.api.remove_network, self.network)
            raise failure

    async def _check_ingress_port(self, client: docker.DockerClient, port: int) -> None:
        """Fail before any build when the gateway's port is taken, unless by our own gateway."""
        if not await asyncio.to_thread(_port_in_use, port):
            return
        for summary in await self._containers(client):
            if role_of(summary.get("Labels") or {}) == "ingress" and any(
                p.get("PublicPort") == port for p in summary.get("Ports") or ()
            ):
                return
        raise _port_taken(port)

    async def _ensure_network(self, client: docker.DockerClient, progress: Progress) -> bool:
        """Creates the mesh's network unless it exists; True when this call created it."""
        api = client.api
        try:
            existing = await engine.call(api.networks, filters=mesh_filter(self._mesh.name))
            if any(n["Name"] == self.network for n in existing):
                return False
            await engine.call(
                api.create_network,
                self.network,
                driver="bridge",
                labels={LABEL_MESH: self._mesh.name},
                check_duplicate=True,
            )
        except APIError as exc:
            if exc.status_code == 409:
                raise RuntimeFailure(
                    f"a Docker network named {self.network} exists but is not this mesh's; "
                    f"remove it (docker network rm {self.network}) or rename the mesh"
                ) from exc
            raise engine.refused(f"create network {self.network}", exc) from exc
        progress(f"network {self.network}: created")
        return True

    def _folder(self, spec: PodSpec) -> Path:
        assert spec.build is not None
        return (self._root / spec.build).resolve()

    def _image_tag(self, spec: PodSpec) -> str:
        """A built pod's image: its service's, or its version's when that has its own build."""
        svc = self._mesh.services.get(spec.service)
        if spec.subset is not None and svc is not None and spec.build != svc.build:
            return app_image_name(self._mesh.name, spec)
        return app_image_name(self._mesh.name, PodSpec(spec.name, spec.service, None, 0, 0))

    async def _ensure_images(
        self, client: docker.DockerClient, specs: list[PodSpec], progress: Progress
    ) -> None:
        await ensure_image(client, self._base_image, progress, _BASE_IMAGE_HINT)
        builds: dict[Path, list[tuple[str, PodSpec]]] = {}
        pulls: set[str] = set()
        for spec in specs:
            if spec.build is not None:
                folder = self._folder(spec)
                if not folder.is_dir():
                    raise RuntimeFailure(
                        f"services.{spec.service}.build: folder {folder} does not exist"
                    )
                tags = builds.setdefault(folder, [])
                tag = self._image_tag(spec)
                if all(t != tag for t, _ in tags):
                    tags.append((tag, spec))
            elif spec.image is not None:
                pulls.add(spec.image)

        async def build(folder: Path, tags: list[tuple[str, PodSpec]]) -> None:
            # One build per folder, however many services use it; the others get a tag.
            first, owner = tags[0]
            what = f"the image of {owner.service} ({owner.build})"
            await build_app(client, folder, first, self._base_image, what, progress)
            for extra, _ in tags[1:]:
                repo, tag = parse_repository_tag(extra)
                await engine.call(client.api.tag, first, repo, tag, force=True)

        jobs: list[Awaitable[object]] = [ensure_proxy(client, self._base_image, progress)]
        jobs += [build(folder, tags) for folder, tags in builds.items()]
        jobs += [ensure_image(client, image, progress) for image in sorted(pulls)]
        results = await _all(jobs)
        self._proxy_image = str(results[0])

    # -- pods ------------------------------------------------------------------------------

    def planned_placement(self, spec: PodSpec) -> Placement:
        # The address is the sidecar's IP on the mesh network, known once it runs.
        return placement(spec.name)

    def _app_plan(self, spec: PodSpec) -> ContainerPlan:
        image = self._image_tag(spec) if spec.build is not None else spec.image
        return app_plan(self._mesh.name, spec, image, self._base_image, self._root)

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        client = await self._engine()
        if self._proxy_image is None:
            self._proxy_image = await ensure_proxy(client, self._base_image, lambda _line: None)
        ingress_port = self._mesh.ingress.port if self._mesh.ingress is not None else None
        if spec.is_ingress and ingress_port is None:
            raise RuntimeFailure("this mesh has no ingress to start")
        sidecar = sidecar_plan(
            self._mesh.name, spec, self._proxy_image, token, sidecar_config, ingress_port
        )
        app = None if spec.is_ingress else self._app_plan(spec)
        created: list[str] = []
        try:
            return await self._start(client, spec, sidecar, app, sidecar_config, created)
        except BaseException:
            # Nothing of a failed start stays; shielded so that a cancelled start cleans too.
            await asyncio.shield(
                asyncio.gather(*(self._remove(client, c) for c in created), return_exceptions=True)
            )
            raise

    async def _create(
        self,
        client: docker.DockerClient,
        plan: ContainerPlan,
        created: list[str],
        **where: str,
    ) -> str:
        pending = asyncio.ensure_future(
            engine.call(client.api.create_container, **plan.create_args(client.api, **where))
        )
        try:
            info = await asyncio.shield(pending)
        except asyncio.CancelledError:
            # The engine creates it all the same: wait for its id so that the cleanup of the
            # cancelled start removes it too.
            with contextlib.suppress(APIError, RuntimeFailure):
                created.append(str((await pending)["Id"]))
            raise
        except APIError as exc:
            if exc.status_code == 409:
                raise RuntimeFailure(
                    f"a container named {plan.name} already exists (left by an earlier run?); "
                    "run `meshdev down` first"
                ) from exc
            if isinstance(exc, NotFound):
                raise RuntimeFailure(
                    f"cannot create {plan.name}: {engine.short(exc)} (prepare builds images "
                    "and the network first)"
                ) from exc
            raise engine.refused(f"create {plan.name}", exc) from exc
        created.append(str(info["Id"]))
        return str(info["Id"])

    async def _start(
        self,
        client: docker.DockerClient,
        spec: PodSpec,
        sidecar: ContainerPlan,
        app: ContainerPlan | None,
        config: bytes,
        created: list[str],
    ) -> StartedPod:
        api = client.api
        sidecar_id = await self._create(client, sidecar, created, network=self.network)

        app_id = None if app is None else await self._create(client, app, created, join=sidecar_id)
        try:
            await engine.call(api.start, sidecar_id)
        except APIError as exc:
            port = self._mesh.ingress.port if self._mesh.ingress is not None else None
            if spec.is_ingress and port is not None and _is_port_conflict(exc):
                raise _port_taken(port) from exc
            raise engine.refused(f"start {sidecar.name}", exc) from exc

        async def start_app() -> None:
            if app_id is not None:
                try:
                    await engine.call(api.start, app_id)
                except APIError as exc:
                    raise engine.refused(f"start {app.name if app else app_id}", exc) from exc

        _, info = await _all([start_app(), engine.call(api.inspect_container, sidecar_id)])
        state = info["State"]
        if not state.get("Running"):
            raise await self._exited(spec.name, "sidecar", state.get("ExitCode"))
        settings = info["NetworkSettings"]
        admin_port = _host_port(settings["Ports"], ADMIN_PORT)
        inbound_port = _host_port(settings["Ports"], INBOUND_PORT)
        if admin_port is None:
            raise RuntimeFailure(f"pod {spec.name}: Docker published no admin port for it")
        return StartedPod(
            placement(spec.name, str(settings["Networks"][self.network]["IPAddress"])),
            admin_url=f"http://{LOOPBACK}:{admin_port}",
            inbound_url=f"http://{LOOPBACK}:{inbound_port}" if inbound_port else "",
        )

    async def _exited(self, pod: str, which: Container, code: object) -> RuntimeFailure:
        lines = await self.last_lines(pod, which, ERROR_LOG_LINES)
        return RuntimeFailure(
            f"pod {pod} did not come up: its container {self._name(pod, which)} exited with "
            f"code {code}; last lines of its log:\n{_shown(lines)}"
        )

    async def _check_exits(self, client: docker.DockerClient, spec: PodSpec) -> None:
        which: list[Container] = ["sidecar"] if spec.is_ingress else ["sidecar", "app"]

        async def state(c: Container) -> dict[str, Any] | None:
            try:
                info = await engine.call(client.api.inspect_container, self._name(spec.name, c))
            except NotFound:
                return None
            result: dict[str, Any] = info["State"]
            return result

        for c, st in zip(which, await _all([state(c) for c in which]), strict=True):
            if st is None:
                raise RuntimeFailure(
                    f"pod {spec.name} did not come up: its container {self._name(spec.name, c)} "
                    "is gone"
                )
            if st["Status"] in ("exited", "dead"):
                raise await self._exited(spec.name, c, st.get("ExitCode"))

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        client = await self._engine()
        probe = Probe(started.admin_url, started.inbound_url, spec.health_path)
        try:
            await wait_ready(probe, timeout, lambda: self._check_exits(client, spec))
        except NotReady as exc:
            lines = await self.last_lines(spec.name, exc.waiting, ERROR_LOG_LINES)
            raise RuntimeFailure(
                f"pod {spec.name} was not ready after {timeout:g}s ({exc.why}); last lines of "
                f"{self._name(spec.name, exc.waiting)}:\n{_shown(lines)}"
            ) from None

    async def stop_pod(self, pod: str) -> None:
        client = await self._engine()

        async def stop(name: str) -> None:
            try:
                await engine.call(client.api.stop, name, timeout=STOP_TIMEOUT_S)
            except NotFound:
                return
            except APIError as exc:
                raise engine.refused(f"stop {name}", exc) from exc
            await self._remove(client, name)

        await _all([stop(self._name(pod, "app")), stop(self._name(pod, "sidecar"))])

    # -- observing -------------------------------------------------------------------------

    async def pod_states(self) -> list[PodState]:
        client = await self._engine()
        return pod_states(await self._containers(client), self.network)

    async def logs(self, pod: str, container: Container) -> AsyncGenerator[str, None]:
        client = await self._engine()
        if container == "app" and pod == INGRESS_POD:
            return  # the gateway is a sidecar alone
        # aclosing: when our caller stops reading, the follower thread stops at once too.
        async with contextlib.aclosing(follow(client, self._name(pod, container))) as lines:
            async for line in lines:
                yield line

    async def last_lines(self, pod: str, container: Container, n: int = 20) -> list[str]:
        client = await self._engine()
        try:
            return await tail(client, self._name(pod, container), n)
        except NotFound:
            return []
        except APIError as exc:
            raise engine.refused(f"read the log of pod {pod}", exc) from exc
