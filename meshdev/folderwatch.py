"""A file notifier that follows a folder replaced under it.

inotify watches an inode, not a name: once the mesh file's folder is deleted and made again
(`git checkout` of another branch, `rm -rf` and a fresh copy, a tool that renames a new folder
into place) the old watch sees nothing for ever, and live reload stopped without a word. So the
folder's identity (device, inode) is checked every FOLDER_CHECK_S while the notifier runs; when
it changes (or the folder goes), the notifier is re-armed on whatever folder has the name now,
and the file is put in the queue to be read again: it may have been written in between.

The armed folder is held open meanwhile: a file system hands a freed inode number to the next
folder made (`rm -rf x && mkdir x` gets the same one back on ext4 and tmpfs), and an open folder
is not freed, so a new folder by the same name always has another identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import watchfiles

# One stat of the folder this often: cheap, and a replaced folder is followed within it.
FOLDER_CHECK_S = 0.2
# The notifier is armed this long after its start (as meshfile.watch_mesh assumes too).
ARM_S = 0.05

Identity = tuple[int, int]


def identity(folder: Path) -> Identity | None:
    """The folder's (device, inode); None when there is no folder by that name."""
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _hold(folder: Path) -> int | None:
    """An open descriptor of the folder (see the module's docstring); None when it is gone."""
    try:
        return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None


async def _pause(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep `seconds`, or less when `stop` is set; True when it is."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):  # not wait_for (common/waiting.py)
            await stop.wait()
    return stop.is_set()


def start_folder_pump(
    queue: asyncio.Queue[set[Path]],
    path: Path,
    other_roots: Iterable[Path],
    relevant: Callable[[watchfiles.Change, str], bool],
    *,
    stop: asyncio.Event | None,
    step_ms: int,
    name: str,
    on_rearm: Callable[[], None] | None = None,
) -> asyncio.Task[None]:
    """A task that puts each batch of changed paths under `path`'s folder (and `other_roots`)
    into `queue`, as meshfile.start_pump does, re-arming on the folder when it is replaced.
    `on_rearm` is called each time it re-arms (after the first arming)."""
    folder = path.parent
    others = list(other_roots)

    async def one_folder(armed: Identity, catch_up: bool) -> None:
        """Report changes until the folder named `folder` is no longer `armed` (or stop).
        `catch_up`: then put the file in the queue once the notifier is armed, for a save
        made between the old watch's end and this one's start."""
        replaced = asyncio.Event()

        async def guard() -> None:
            if not await _pause(stop, ARM_S):
                if catch_up:
                    await queue.put({path})
                while not await _pause(stop, FOLDER_CHECK_S):
                    if identity(folder) != armed:
                        break
            replaced.set()

        guarding = asyncio.create_task(guard(), name=f"{name}-folder")
        try:
            async for changes in watchfiles.awatch(
                folder,
                *others,
                watch_filter=relevant,
                debounce=1600,
                step=step_ms,
                recursive=False,
                stop_event=replaced,
            ):
                await queue.put({Path(n) for _, n in changes})
        except FileNotFoundError:
            pass  # gone between the check and the arming: the loop below waits for it
        finally:
            guarding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guarding

    async def pump() -> None:
        first = True
        while stop is None or not stop.is_set():
            held = _hold(folder)
            if held is None:
                await queue.put({path})  # read: a folder gone is a file removed, said as such
                while (held := _hold(folder)) is None:
                    if await _pause(stop, FOLDER_CHECK_S):
                        return
            try:
                st = os.fstat(held)
                if not first and on_rearm is not None:
                    on_rearm()
                await one_folder((st.st_dev, st.st_ino), catch_up=not first)
            finally:
                os.close(held)
            first = False

    return asyncio.create_task(pump(), name=name)
