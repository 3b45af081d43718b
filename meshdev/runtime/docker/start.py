"""Starting one pod on the engine, and telling why a pod did not come up.

The sidecar container is created first (it owns the pod's network namespace), the app's joins
it; the capture step (pods.capture_plan) runs to its end between the sidecar's start and the
app's, so the app's first connection is already captured. Once both run, what Docker published
on the host's loopback says where the pod answers.
Every container created is noted in `created`, so the caller can remove them all when a start
fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import docker
from docker.errors import APIError, NotFound

from meshdev.common.sidecar_config import ADMIN_PORT, INBOUND_PORT
from meshdev.plan import PodSpec
from meshdev.runtime.base import Container, RuntimeFailure, StartedPod
from meshdev.runtime.docker import engine
from meshdev.runtime.docker.logs import last_lines
from meshdev.runtime.docker.names import container_name
from meshdev.runtime.docker.pods import LOOPBACK, ContainerPlan, placement
from meshdev.runtime.docker.ports import is_port_conflict, port_taken

# Lines of a container's log that an error shows.
ERROR_LOG_LINES = 15
# The capture step takes tens of milliseconds; this long means the engine is stuck.
CAPTURE_TIMEOUT = 60


def shown(lines: list[str]) -> str:
    return "\n".join(f"  {line}" for line in lines) or "  (no output)"


def _host_port(ports: dict[str, Any] | None, container_port: int) -> int | None:
    for binding in (ports or {}).get(f"{container_port}/tcp") or ():
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


async def _create(
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


async def start(
    client: docker.DockerClient,
    mesh: str,
    network: str,
    spec: PodSpec,
    sidecar: ContainerPlan,
    app: ContainerPlan | None,
    ingress_port: int | None,
    created: list[str],
    capture: ContainerPlan | None = None,
    *,
    captured: bool = True,
) -> StartedPod:
    """Create and start the pod's containers (`app`: None for the gateway, a sidecar alone;
    `capture`: the step that captures the pod's traffic before its app starts)."""
    api = client.api
    sidecar_id = await _create(client, sidecar, created, network=network)

    async def create_joined(plan: ContainerPlan | None) -> str | None:
        return None if plan is None else await _create(client, plan, created, join=sidecar_id)

    app_id, capture_id = await engine.gather_all([create_joined(app), create_joined(capture)])
    try:
        await engine.call(api.start, sidecar_id)
    except APIError as exc:
        if spec.is_ingress and ingress_port is not None and is_port_conflict(exc):
            raise port_taken(ingress_port) from exc
        raise engine.refused(f"start {sidecar.name}", exc) from exc
    if capture is not None and capture_id is not None:
        await _run_capture(client, spec, capture, capture_id)
        created.remove(capture_id)

    async def start_app() -> None:
        if app_id is not None:
            try:
                await engine.call(api.start, app_id)
            except APIError as exc:
                raise engine.refused(f"start {app.name if app else app_id}", exc) from exc

    _, info = await engine.gather_all([start_app(), engine.call(api.inspect_container, sidecar_id)])
    state = info["State"]
    if not state.get("Running"):
        raise await exited(client, mesh, spec.name, "sidecar", state.get("ExitCode"))
    settings = info["NetworkSettings"]
    admin_port = _host_port(settings["Ports"], ADMIN_PORT)
    inbound_port = _host_port(settings["Ports"], INBOUND_PORT)
    if admin_port is None:
        raise RuntimeFailure(f"pod {spec.name}: Docker published no admin port for it")
    on_network = settings["Networks"][network]
    return StartedPod(
        placement(
            spec.name,
            str(on_network["IPAddress"]),
            captured=captured,
            host_address=on_network.get("Gateway") or None,
        ),
        admin_url=f"http://{LOOPBACK}:{admin_port}",
        inbound_url=f"http://{LOOPBACK}:{inbound_port}" if inbound_port else "",
    )


async def _run_capture(
    client: docker.DockerClient, spec: PodSpec, plan: ContainerPlan, capture_id: str
) -> None:
    """Run the capture step to its end; removed when it succeeded, a worded error with its
    output when it did not (a failed start removes it with the pod's other containers)."""
    api = client.api
    try:
        await engine.call(api.start, capture_id)
        result = await engine.call(api.wait, capture_id, timeout=CAPTURE_TIMEOUT)
    except APIError as exc:
        raise engine.refused(f"start {plan.name}", exc) from exc
    code = result.get("StatusCode")
    if code != 0:
        lines = await last_lines(client, plan.name, spec.name, ERROR_LOG_LINES)
        raise RuntimeFailure(
            f"pod {spec.name}: traffic capture failed (exit code {code}); it needs a Docker "
            f"engine that grants NET_ADMIN to containers and a kernel with iptables' nat "
            f"table; its output:\n{shown(lines)}"
        )
    await engine.call(api.remove_container, capture_id, force=True)


async def exited(
    client: docker.DockerClient, mesh: str, pod: str, which: Container, code: object
) -> RuntimeFailure:
    name = container_name(mesh, pod, which)
    lines = await last_lines(client, name, pod, ERROR_LOG_LINES)
    return RuntimeFailure(
        f"pod {pod} did not come up: its container {name} exited with "
        f"code {code}; last lines of its log:\n{shown(lines)}",
        exit_code=code if isinstance(code, int) else None,
    )


async def check_exits(
    client: docker.DockerClient, mesh: str, spec: PodSpec, summaries: list[dict[str, Any]]
) -> None:
    """Raises RuntimeFailure when one of the pod's containers is gone or has exited, as
    `summaries` (a listing of the mesh's containers taken after they started) shows."""
    which: list[Container] = ["sidecar"] if spec.is_ingress else ["sidecar", "app"]
    by_name = {n.lstrip("/"): s for s in summaries for n in s.get("Names") or ()}
    for c in which:
        name = container_name(mesh, spec.name, c)
        summary = by_name.get(name)
        if summary is None:
            raise RuntimeFailure(f"pod {spec.name} did not come up: its container {name} is gone")
        if summary.get("State") in ("exited", "dead"):
            # A listing has no exit code; the one container that has one is asked for it.
            try:
                info = await engine.call(client.api.inspect_container, name)
            except NotFound:
                raise RuntimeFailure(
                    f"pod {spec.name} did not come up: its container {name} is gone"
                ) from None
            raise await exited(client, mesh, spec.name, c, info["State"].get("ExitCode"))
