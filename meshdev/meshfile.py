"""File changes -> a new mesh model, or the located problems of a bad save.

Editors save in many ways (in place, truncate-then-write, temp file + rename), so a change
event may arrive while a file is half written. A file that does not parse therefore waits a
moment for the next event, and only when none comes is it reported; a file is only read once
its writes have paused (QUIET_S), so a valid-looking prefix is not applied either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import watchfiles

from meshdev.config import Mesh, MeshInvalid, Pos, Problem, parse_mesh
from meshdev.config.yamlsource import MAX_BYTES, read_yaml
from meshdev.folderwatch import start_folder_pump
from meshdev.templates import templates_dir

# The notifier reports as soon as writes pause for this long...
STEP_MS = 10
# ...and a save is read once its writes have paused for this long: writes closer together
# are one save (a three-chunk write 50 ms apart included).
QUIET_S = 0.06
# How long a file that does not parse may stay broken before we call it a bad save.
SETTLE_S = 0.25


@dataclass(frozen=True)
class MeshChanged:
    mesh: Mesh
    templates_changed: bool


@dataclass(frozen=True)
class MeshRejected:
    problems: list[Problem]


WatchEvent = MeshChanged | MeshRejected


async def watch_mesh(
    path: Path,
    *,
    watch_templates: bool = True,
    settle: float = SETTLE_S,
    quiet: float = QUIET_S,
    step_ms: int = STEP_MS,
    stop: asyncio.Event | None = None,
    loaded: bytes | None = None,
    name: str | None = None,
    on_rearm: Callable[[], None] | None = None,
) -> AsyncIterator[WatchEvent]:
    """Events for every save of `path` from now on. `loaded`: the content the caller's current
    model came from; a save made before the watcher was armed is then caught up at once.
    `name`: the running mesh's name; a save that names another is rejected. `on_rearm`: called
    when the file's folder was replaced and the watcher follows the new one (folderwatch.py)."""
    path = path.resolve()
    tdir = templates_dir().resolve()
    roots = [path.parent] + ([tdir] if watch_templates and tdir.is_dir() else [])
    queue: asyncio.Queue[set[Path]] = asyncio.Queue()

    def relevant(_change: watchfiles.Change, name: str) -> bool:
        p = Path(name)
        return p == path or (watch_templates and p.parent == tdir)

    # The mesh file's folder is followed when it is replaced (git checkout), the templates'
    # is meshdev's own.
    pump_task = start_folder_pump(
        queue,
        path,
        roots[1:],
        relevant,
        stop=stop,
        step_ms=step_ms,
        name="meshdev-watch",
        on_rearm=on_rearm,
    )
    last_digest = hashlib.sha256(loaded).digest() if loaded is not None else _digest(path)
    # A rejection is on show (the dashboard's banner, status's last reload) until a good save
    # comes; the file put back as it was when last applied is one, though nothing changed.
    rejected = False
    await asyncio.sleep(0.05)  # the notifier is armed once the pump has started
    if _digest(path) != last_digest:
        await queue.put({path})
    try:
        while True:
            changed = await quiet_batch(queue, pump_task, quiet)
            if changed is None:
                return
            templates = any(p.parent == tdir for p in changed)
            while True:
                raw = _read(path)
                result: WatchEvent
                try:
                    if raw is None:
                        raise MeshInvalid([Problem(str(path), Pos(1, 1), (), "file was removed")])
                    result = MeshChanged(parse_mesh(raw, str(path), path.parent), templates)
                    if name is not None and result.mesh.name != name:
                        raise MeshInvalid([_renamed(raw, str(path), name)])
                except MeshInvalid as exc:
                    result = MeshRejected(exc.problems)
                if isinstance(result, MeshChanged):
                    break
                # Maybe a save in progress: give the writer a moment before blaming the file.
                try:
                    # Not wait_for: it can lose a cancellation (common/waiting.py).
                    async with asyncio.timeout(settle):
                        first = await next_batch(queue, pump_task)
                except TimeoutError:
                    break
                if first is None:
                    return
                more = await quiet_batch(queue, pump_task, quiet, first)
                if more is None:
                    return
                templates = templates or any(p.parent == tdir for p in more)
            digest = hashlib.sha256(raw or b"").digest()
            if (
                isinstance(result, MeshChanged)
                and digest == last_digest
                and not templates
                and not rejected
            ):
                continue  # touched, not changed
            if isinstance(result, MeshChanged):
                last_digest = digest
            rejected = isinstance(result, MeshRejected)
            yield result
    finally:
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump_task


async def next_batch(queue: asyncio.Queue[set[Path]], pump: asyncio.Task[None]) -> set[Path] | None:
    """The next batch of changed paths; None once the watcher has stopped."""
    if not queue.empty():
        return queue.get_nowait()
    get = asyncio.ensure_future(queue.get())
    try:
        done, _ = await asyncio.wait({get, pump}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not get.done():
            get.cancel()
    if get in done:
        return get.result()
    pump.result()  # re-raise the watcher's error, if it ended with one
    return None


async def quiet_batch(
    queue: asyncio.Queue[set[Path]],
    pump: asyncio.Task[None],
    quiet: float,
    first: set[Path] | None = None,
) -> set[Path] | None:
    """The next changes, gathered until no new change came for `quiet` seconds."""
    batch = first if first is not None else await next_batch(queue, pump)
    if batch is None:
        return None
    while True:
        try:
            async with asyncio.timeout(quiet):  # not wait_for (common/waiting.py)
                more = await next_batch(queue, pump)
        except TimeoutError:
            return batch
        if more is None:
            return batch
        batch |= more


def _renamed(raw: bytes, file: str, running: str) -> Problem:
    # The name labels the running pods, keeps their state folder and picks their loopback
    # /24: a live rename would leave them orphaned from `status` and `down` by this file.
    _, source = read_yaml(raw, file)
    return Problem(
        file,
        source.value_pos(("name",)),
        ("name",),
        f"the running mesh is named {running!r}; a name cannot change while `meshdev up` "
        "runs: put it back, or stop `meshdev up` and start it again",
    )


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(MAX_BYTES + 1)
    except (FileNotFoundError, IsADirectoryError):
        return None


def _digest(path: Path) -> bytes:
    return hashlib.sha256(_read(path) or b"").digest()
