"""Finding and removing a mesh's containers and network, by its label only.

Going by the label means a second process (`meshdev status`, `meshdev down`) and a run after
a crash see the same objects, and another mesh's objects are never touched.
"""

from __future__ import annotations

from typing import Any

import docker
from docker.errors import APIError, NotFound

from meshdev.runtime.docker import engine
from meshdev.runtime.docker.names import mesh_filter

# Seconds `stop` gives a container to exit on SIGTERM before it is killed.
STOP_TIMEOUT_S = 2


async def containers(client: docker.DockerClient, mesh: str) -> list[dict[str, Any]]:
    """Summaries of every container of `mesh`, running or not."""
    try:
        found: list[dict[str, Any]] = await engine.call(
            client.api.containers, all=True, filters=mesh_filter(mesh)
        )
    except APIError as exc:
        raise engine.refused("list containers", exc) from exc
    return found


async def remove(client: docker.DockerClient, ref: str) -> bool:
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


async def stop(client: docker.DockerClient, name: str) -> None:
    """Stop one container (SIGTERM, then a kill after STOP_TIMEOUT_S) and remove it."""
    try:
        await engine.call(client.api.stop, name, timeout=STOP_TIMEOUT_S)
    except NotFound:
        return
    except APIError as exc:
        raise engine.refused(f"stop {name}", exc) from exc
    await remove(client, name)


async def teardown(client: docker.DockerClient, mesh: str) -> list[str]:
    """Remove every container and network of `mesh`; returns their names."""

    async def remove_one(summary: dict[str, Any]) -> str | None:
        name = str(summary["Names"][0]).lstrip("/")
        return name if await remove(client, str(summary["Id"])) else None

    found = await containers(client, mesh)
    removed = [n for n in await engine.gather_all([remove_one(c) for c in found]) if n is not None]
    try:
        networks = await engine.call(client.api.networks, filters=mesh_filter(mesh))
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
