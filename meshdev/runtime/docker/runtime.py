"""The docker runtime: each pod is a sidecar container that owns the pod's network namespace,
plus the app's container joined to it, on one bridge network per mesh (pods.py).

Everything carries the mesh's label; finding, listing and removing go by that label only
(teardown.py), so a second process (`meshdev status`, `meshdev down`) and a run after a
crash see the same objects, and another mesh's objects are never touched. Every SDK call runs
in a worker thread (engine.call), so pods start in parallel while the event loop stays
free. Before pods: ports.py, prepare.py; a pod's start: start.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import docker
from docker.errors import APIError

from meshdev.config.model import Mesh
from meshdev.plan import INGRESS_POD, Placement, PodSpec, service_hosts
from meshdev.runtime.base import (
    Container,
    PodExit,
    PodState,
    Progress,
    RuntimeFailure,
    RuntimeKind,
    StartedPod,
)
from meshdev.runtime.docker import engine
from meshdev.runtime.docker.images import ensure_proxy, image_id, remove_dangling
from meshdev.runtime.docker.listing import SharedListing
from meshdev.runtime.docker.logs import follow, last_lines
from meshdev.runtime.docker.names import container_name, network_name
from meshdev.runtime.docker.pods import (
    ContainerPlan,
    app_plan,
    capture_plan,
    placement,
    sidecar_plan,
)
from meshdev.runtime.docker.ports import check_ingress_port
from meshdev.runtime.docker.prepare import (
    ensure_images,
    ensure_network,
    image_tag,
    network_gateway,
)
from meshdev.runtime.docker.ready import EXIT_CHECK_INTERVAL_S, NotReady, Probe, wait_ready
from meshdev.runtime.docker.start import ERROR_LOG_LINES, check_exits, shown, start
from meshdev.runtime.docker.states import exited_pods, pod_states
from meshdev.runtime.docker.teardown import containers, remove, stop, teardown


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
        *,
        capture: bool = True,
    ) -> None:
        self._mesh = mesh
        self._root = Path(mesh_file).resolve().parent
        self._base_image = base_image
        self._client = client
        self._owns_client = client is None
        self._connect_lock = threading.Lock()
        self._proxy_image: str | None = None
        # Pods' traffic captured with iptables (docs/capture.md); off: apps use HTTP_PROXY.
        self._capture = capture
        # The host's address on the mesh network, once prepare has made or found it.
        self._host_address: str | None = None
        # Pods whose inbound listener refuses an outside prober: probed via their sidecar.
        self._probe_via_admin: set[str] = set()
        # Pods started and not stopped since: only their exits are crashes.
        self._started: set[str] = set()
        # Images of services' earlier code a rebuild took the tag from (a save of watched
        # code): removed once no old pod runs them, so saves do not pile up images.
        self._superseded: set[str] = set()
        # Each built image's id, as the last prepare that built it left it (by tag).
        self._built: dict[str, str] = {}
        # What the pods waiting to be ready check their containers' exits against.
        self._shared_listing: SharedListing | None = None

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

    # -- removing ------------------------------------------------------------------------

    async def teardown(self) -> list[str]:
        client = await self._engine()
        removed = await teardown(client, self._mesh.name)
        await self._remove_superseded(client)
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
            await check_ingress_port(client, mesh.name, mesh.ingress.port)
        tags = sorted({image_tag(mesh, s) for s in specs if s.build is not None})
        before = await engine.gather_all([image_id(client, tag) for tag in tags])
        network, images = await asyncio.gather(
            ensure_network(client, mesh.name, progress),
            ensure_images(client, mesh, self._root, self._base_image, specs, progress),
            return_exceptions=True,
        )
        if not isinstance(images, BaseException):
            self._proxy_image = images
            after = await engine.gather_all([image_id(client, tag) for tag in tags])
            self._built.update({t: i for t, i in zip(tags, after, strict=True) if i})
            self._superseded |= {
                old for old, new in zip(before, after, strict=True) if old and old != new
            }
        failure = images if isinstance(images, BaseException) else network
        if isinstance(failure, BaseException):
            if network is True:
                # Best effort: the next up's leftover sweep finds it by label otherwise.
                with contextlib.suppress(APIError, RuntimeFailure):
                    await engine.call(client.api.remove_network, self.network)
            raise failure
        self._host_address = await network_gateway(client, self.network)

    # -- pods ------------------------------------------------------------------------------

    def planned_placement(self, spec: PodSpec) -> Placement:
        # The address is the sidecar's IP on the mesh network, known once it runs.
        return placement(spec.name, captured=self._capture, host_address=self._host_address)

    def code_version(self, spec: PodSpec) -> str | None:
        # A command in the base image runs the mounted folder's files: nothing says whether
        # they changed. A named image is pulled once and never changes under a running mesh.
        if spec.build is None or spec.is_ingress:
            return None
        return self._built.get(image_tag(self._mesh, spec))

    def _app_plan(self, spec: PodSpec) -> ContainerPlan:
        image = image_tag(self._mesh, spec) if spec.build is not None else spec.image
        return app_plan(
            self._mesh.name, spec, image, self._base_image, self._root, captured=self._capture
        )

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
        app = capture = None
        if not spec.is_ingress:
            app = self._app_plan(spec)
            if self._capture:
                capture = capture_plan(
                    self._mesh.name, spec, self._proxy_image, service_hosts(self._mesh)
                )
        if _refuses_outside_probes(sidecar_config):
            self._probe_via_admin.add(spec.name)
        else:
            self._probe_via_admin.discard(spec.name)
        created: list[str] = []
        self._started.add(spec.name)
        try:
            return await start(
                client,
                self._mesh.name,
                self.network,
                spec,
                sidecar,
                app,
                ingress_port,
                created,
                capture,
                captured=self._capture,
            )
        except BaseException:
            # Nothing of a failed start stays; shielded so that a cancelled start cleans too.
            await asyncio.shield(
                asyncio.gather(*(remove(client, c) for c in created), return_exceptions=True)
            )
            raise

    def _listing(self, client: docker.DockerClient) -> SharedListing:
        # A new one after a reconnect: the old one would list through a closed client.
        if self._shared_listing is None or self._shared_listing.client is not client:
            self._shared_listing = SharedListing(client, self._mesh.name)
        return self._shared_listing

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        client = await self._engine()
        probe = Probe(
            started.admin_url,
            started.inbound_url,
            spec.health_path,
            spec.protocol,
            through_sidecar_admin=spec.name in self._probe_via_admin,
        )
        listing = self._listing(client)
        waiting_since = time.monotonic()

        async def exits() -> None:
            # Any listing asked for since the last check will do, but none from before the
            # wait began (the pod's containers might not be in it yet).
            fresh = max(waiting_since, time.monotonic() - EXIT_CHECK_INTERVAL_S)
            await check_exits(client, self._mesh.name, spec, await listing.since(fresh))

        try:
            await wait_ready(probe, timeout, exits)
        except NotReady as exc:
            lines = await self.last_lines(spec.name, exc.waiting, ERROR_LOG_LINES)
            raise RuntimeFailure(
                f"pod {spec.name} was not ready after {timeout:g}s ({exc.why}); last lines of "
                f"{self._name(spec.name, exc.waiting)}:\n{shown(lines)}"
            ) from None

    async def exits(self) -> list[PodExit]:
        client = await self._engine()
        summaries = await containers(client, self._mesh.name)
        return exited_pods(summaries, self._started)

    async def stop_pod(self, pod: str) -> None:
        self._started.discard(pod)
        client = await self._engine()
        await engine.gather_all(
            [stop(client, self._name(pod, "app")), stop(client, self._name(pod, "sidecar"))]
        )
        await self._remove_superseded(client)

    async def _remove_superseded(self, client: docker.DockerClient) -> None:
        if self._superseded:
            # Best effort: an image left behind costs disk, never a pod.
            with contextlib.suppress(RuntimeFailure):
                self._superseded = await remove_dangling(client, self._superseded)

    # -- observing -------------------------------------------------------------------------

    async def pod_states(self) -> list[PodState]:
        client = await self._engine()
        return pod_states(await containers(client, self._mesh.name), self.network)

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
        return await last_lines(client, self._name(pod, container), pod, n)


def _refuses_outside_probes(sidecar_config: bytes) -> bool:
    """Whether the pod's inbound listener would refuse a readiness probe from the host: it
    takes mTLS only, or it checks callers against authorization policies (PERMISSIVE still
    takes the probe's plaintext)."""
    try:
        listeners = json.loads(sidecar_config).get("listeners", ())
    except (ValueError, AttributeError):
        return False  # the sidecar refuses this config and says why
    return any(
        lst.get("kind") == "inbound" and (lst.get("mtls") == "STRICT" or lst.get("authorization"))
        for lst in listeners
        if isinstance(lst, dict)
    )
