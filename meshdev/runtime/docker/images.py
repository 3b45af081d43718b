"""The images a mesh runs: the proxy (sidecar) image, the apps' images, pulled images.

The proxy image is built from the meshdev package this process runs (a checkout or a pip
install alike) and tagged by a hash of its content, so an unchanged package never calls the
builder at all. App images go through the engine's build cache, which answers a cached build in
tens of milliseconds. Build output streams to the caller's progress callback line by line; a
failed build names its failing step and shows the last lines of its log.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tarfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.utils import parse_repository_tag

import meshdev
from meshdev.runtime.base import Progress, RuntimeFailure
from meshdev.runtime.docker.engine import call, refused, short
from meshdev.runtime.docker.names import PROXY_REPO

PROXY_DOCKERFILE = "Dockerfile.proxy"
# How much of a failed build's log the error shows.
FAILED_BUILD_LINES = 15
# Builder bookkeeping that tells a user nothing.
_NOISE = ("--->", "Removing intermediate container", "Successfully built")


def package_dir() -> Path:
    return Path(meshdev.__file__).resolve().parent


def proxy_dockerfile() -> Path:
    """Dockerfile.proxy: beside the package in a checkout, or shipped inside it in a wheel."""
    package = package_dir()
    for candidate in (package.parent / PROXY_DOCKERFILE, package / "_docker" / PROXY_DOCKERFILE):
        if candidate.is_file():
            return candidate
    raise RuntimeFailure(
        f"{PROXY_DOCKERFILE} is missing from this meshdev installation (looked beside and "
        f"inside {package}); reinstall meshdev"
    )


def _package_files(root: Path) -> Iterator[tuple[str, Path]]:
    # Bytecode left by local runs differs from run to run; it would change the hash for nothing.
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(folder) / name
            yield f"meshdev/{path.relative_to(root).as_posix()}", path


def proxy_context(base_image: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The proxy image's tag and build context (archive name -> content)."""
    dockerfile = proxy_dockerfile()
    entries = [(PROXY_DOCKERFILE, dockerfile.read_bytes())]
    entries += [(name, path.read_bytes()) for name, path in _package_files(package_dir())]
    digest = hashlib.sha256(base_image.encode() + b"\0")
    for name, data in entries:
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return f"{PROXY_REPO}:{digest.hexdigest()[:16]}", entries


def _tar(entries: Iterable[tuple[str, bytes]]) -> io.BytesIO:
    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folder = "/".join(parts[:i])
                if folder not in dirs:
                    dirs.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            # World-readable: the sidecar runs as uid 1337 and only reads its code.
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _threadsafe(progress: Progress) -> Progress:
    # Builds run in worker threads; the callback belongs to the event loop's thread.
    loop = asyncio.get_running_loop()

    def relay(line: str) -> None:
        loop.call_soon_threadsafe(progress, line)

    return relay


def _follow_build(chunks: Iterable[Any], what: str, progress: Progress) -> None:
    step = "before the first step"
    tail: deque[str] = deque(maxlen=FAILED_BUILD_LINES)
    failure: RuntimeFailure | None = None
    # Read to the end even after an error: the SDK closes the response only then.
    for chunk in chunks:
        if not isinstance(chunk, dict) or failure is not None:
            continue
        if "error" in chunk:
            detail = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()
            shown = "\n".join(f"  {line}" for line in tail) or "  (no output)"
            failure = RuntimeFailure(
                f"building {what} failed at {step}: {detail}\nlast lines of the build:\n{shown}"
            )
            continue
        for raw in str(chunk.get("stream", "")).splitlines():
            line = raw.strip()
            if not line:
                continue
            tail.append(line)
            if line.startswith("Step "):
                step = line
            if not line.startswith(_NOISE):
                progress(f"{what}: {line}")
    if failure is not None:
        raise failure


def _build(client: docker.DockerClient, what: str, progress: Progress, **kwargs: Any) -> None:
    try:
        chunks = client.api.build(decode=True, rm=True, forcerm=True, **kwargs)
        _follow_build(chunks, what, progress)
    except APIError as exc:
        # The engine refused before the first step: no Dockerfile, a bad build argument...
        raise RuntimeFailure(f"building {what} failed: {short(exc)}") from exc


async def _exists(client: docker.DockerClient, image: str) -> bool:
    try:
        await call(client.api.inspect_image, image)
    except NotFound:
        return False
    except APIError as exc:
        raise refused(f"inspect image {image}", exc) from exc
    return True


async def ensure_proxy(client: docker.DockerClient, base_image: str, progress: Progress) -> str:
    """The proxy image's tag, built only when no image has this package's content hash."""
    tag, entries = await asyncio.to_thread(proxy_context, base_image)
    if await _exists(client, tag):
        progress(f"proxy image {tag}: up to date")
        return tag
    progress(f"proxy image {tag}: building from {base_image}")
    await call(
        _build,
        client,
        f"the proxy image {tag}",
        _threadsafe(progress),
        fileobj=_tar(entries),
        custom_context=True,
        dockerfile=PROXY_DOCKERFILE,
        tag=tag,
        buildargs={"BASE_IMAGE": base_image},
    )
    return tag


async def build_app(
    client: docker.DockerClient,
    folder: Path,
    tag: str,
    base_image: str,
    what: str,
    progress: Progress,
) -> None:
    """Build `folder` (its Dockerfile, its .dockerignore) as `tag` from the base image."""
    if not (folder / "Dockerfile").is_file():
        raise RuntimeFailure(f"{what}: no Dockerfile in {folder}")
    progress(f"{what}: building {folder} as {tag}")
    await call(
        _build,
        client,
        what,
        _threadsafe(progress),
        path=str(folder),
        tag=tag,
        buildargs={"BASE_IMAGE": base_image},
    )


class _PullFailed(RuntimeFailure):
    pass


def _pull(client: docker.DockerClient, image: str, progress: Progress) -> None:
    repo, tag = parse_repository_tag(image)
    error: str | None = None
    # Read to the end even after an error: the SDK closes the response only then.
    for chunk in client.api.pull(repo, tag or "latest", stream=True, decode=True):
        if "error" in chunk:
            error = error or str(chunk["error"])
        status = chunk.get("status")
        if status and "progress" not in chunk and error is None:
            progress(f"pull {image}: {status} {chunk.get('id', '')}".rstrip())
    if error is not None:
        raise _PullFailed(error)


async def ensure_image(
    client: docker.DockerClient, image: str, progress: Progress, hint: str = ""
) -> None:
    """`image` is in the engine: present already, or pulled now."""
    if await _exists(client, image):
        return
    progress(f"pulling {image}")
    try:
        await call(_pull, client, image, _threadsafe(progress))
    except (APIError, _PullFailed) as exc:
        raise RuntimeFailure(
            f"image {image} is not on this machine and cannot be pulled ({short(exc)}){hint}"
        ) from exc


async def image_id(client: docker.DockerClient, ref: str) -> str | None:
    """The id of the image `ref` names now; None when there is none."""
    try:
        info = await call(client.api.inspect_image, ref)
    except NotFound:
        return None
    except APIError as exc:
        raise refused(f"inspect image {ref}", exc) from exc
    return str(info["Id"])


async def remove_dangling(client: docker.DockerClient, images: set[str]) -> set[str]:
    """Remove those of `images` (ids) that no tag names any more, once no container uses them:
    the images of a service's earlier code, superseded by a rebuild. Returns those a container
    still uses, to be tried again later. One that a tag names is left alone: another service
    built from the same folder still runs it."""
    left: set[str] = set()
    for image in images:
        try:
            info = await call(client.api.inspect_image, image)
            if info.get("RepoTags"):
                continue
            await call(client.api.remove_image, image)
        except NotFound:
            continue
        except APIError as exc:
            if exc.status_code == 409:  # a container (an old pod still draining) uses it
                left.add(image)
    return left
