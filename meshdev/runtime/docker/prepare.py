"""What must exist before a mesh's pods start: its bridge network and every image they run.

Images are built once per build folder however many services use it (the others get a tag),
pulled once per name, and the proxy image is made from the base image; all in parallel.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import docker
from docker.errors import APIError
from docker.utils import parse_repository_tag

from meshdev.config.model import Mesh
from meshdev.plan import PodSpec
from meshdev.runtime.base import LABEL_MESH, Progress, RuntimeFailure
from meshdev.runtime.docker import engine
from meshdev.runtime.docker.images import build_app, ensure_image, ensure_proxy
from meshdev.runtime.docker.names import app_image_name, mesh_filter, network_name

_BASE_IMAGE_HINT = "; set MESHDEV_BASE_IMAGE or --base-image to an image on this machine"


async def ensure_network(client: docker.DockerClient, mesh: str, progress: Progress) -> bool:
    """Creates the mesh's network unless it exists; True when this call created it."""
    api = client.api
    network = network_name(mesh)
    try:
        existing = await engine.call(api.networks, filters=mesh_filter(mesh))
        if any(n["Name"] == network for n in existing):
            return False
        await engine.call(
            api.create_network,
            network,
            driver="bridge",
            labels={LABEL_MESH: mesh},
            check_duplicate=True,
        )
    except APIError as exc:
        if exc.status_code == 409:
            raise RuntimeFailure(
                f"a Docker network named {network} exists but is not this mesh's; "
                f"remove it (docker network rm {network}) or rename the mesh"
            ) from exc
        raise engine.refused(f"create network {network}", exc) from exc
    progress(f"network {network}: created")
    return True


def image_tag(mesh: Mesh, spec: PodSpec) -> str:
    """A built pod's image: its service's, or its version's when that has its own build."""
    svc = mesh.services.get(spec.service)
    if spec.subset is not None and svc is not None and spec.build != svc.build:
        return app_image_name(mesh.name, spec)
    return app_image_name(mesh.name, PodSpec(spec.name, spec.service, None, 0, 0))


async def ensure_images(
    client: docker.DockerClient,
    mesh: Mesh,
    root: Path,
    base_image: str,
    specs: list[PodSpec],
    progress: Progress,
) -> str:
    """Builds, pulls and tags what `specs` run (`root`: where build folders are relative to);
    returns the proxy image."""
    await ensure_image(client, base_image, progress, _BASE_IMAGE_HINT)
    builds: dict[Path, list[tuple[str, PodSpec]]] = {}
    pulls: set[str] = set()
    for spec in specs:
        if spec.build is not None:
            folder = (root / spec.build).resolve()
            if not folder.is_dir():
                raise RuntimeFailure(
                    f"services.{spec.service}.build: folder {folder} does not exist"
                )
            tags = builds.setdefault(folder, [])
            tag = image_tag(mesh, spec)
            if all(t != tag for t, _ in tags):
                tags.append((tag, spec))
        elif spec.image is not None:
            pulls.add(spec.image)

    async def build(folder: Path, tags: list[tuple[str, PodSpec]]) -> None:
        # One build per folder, however many services use it; the others get a tag.
        first, owner = tags[0]
        what = f"the image of {owner.service} ({owner.build})"
        await build_app(client, folder, first, base_image, what, progress)
        for extra, _ in tags[1:]:
            repo, tag = parse_repository_tag(extra)
            await engine.call(client.api.tag, first, repo, tag, force=True)

    jobs: list[Awaitable[object]] = [ensure_proxy(client, base_image, progress)]
    jobs += [build(folder, tags) for folder, tags in builds.items()]
    jobs += [ensure_image(client, image, progress) for image in sorted(pulls)]
    results = await engine.gather_all(jobs)
    return str(results[0])


async def network_gateway(client: docker.DockerClient, network: str) -> str | None:
    """The host's address on the mesh's network (its gateway), as the pods reach the host."""
    try:
        info = await engine.call(client.api.inspect_network, network)
    except APIError:
        return None
    for config in (info.get("IPAM") or {}).get("Config") or ():
        gateway = config.get("Gateway") if isinstance(config, dict) else None
        if isinstance(gateway, str) and gateway:
            return gateway
    return None
