"""A file notifier that follows folders replaced under it.

inotify watches an inode, not a name: once a watched folder (the mesh file's, a service's code)
is deleted and made again (`git checkout` of another branch, `rm -rf` and a fresh copy, a tool
that renames a new folder into place) the old watch sees nothing for ever, and live reload or
the code loop stopped without a word. So each followed folder's identity (device, inode) is
checked every FOLDER_CHECK_S while the notifier runs; when one changes (or the folder goes, or
comes), the notifier is re-armed on whatever folders have the names now, and what that folder
holds is put in the queue to be read again: it may have been written in between.

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
    into `queue` (the notifier's own debounce is long: meshfile.quiet_batch decides when a
    save is whole), re-arming on the folder when it is replaced.
    `on_rearm` is called each time it re-arms (after the first arming)."""
    return start_folders_pump(
        queue,
        [path.parent],
        other_roots,
        relevant,
        recursive=False,
        reread=lambda _folder: {path},
        stop=stop,
        step_ms=step_ms,
        name=name,
        on_rearm=None if on_rearm is None else lambda _folders: on_rearm(),
    )


def start_folders_pump(
    queue: asyncio.Queue[set[Path]],
    followed: Iterable[Path],
    other_roots: Iterable[Path],
    relevant: Callable[[watchfiles.Change, str], bool],
    *,
    recursive: bool,
    reread: Callable[[Path], set[Path]],
    stop: asyncio.Event | None,
    step_ms: int,
    name: str,
    on_rearm: Callable[[list[Path]], None] | None = None,
) -> asyncio.Task[None]:
    """A task that puts each batch of changed paths under the `followed` folders (and
    `other_roots`) into `queue`, re-arming when one of the followed is replaced, gone or made
    (again). `reread(folder)` is what to put in the queue then, since its content may have
    changed unseen: at once when it is gone, once the notifier is armed on it when it is back.
    Folders missing meanwhile are waited for while the others are watched. `on_rearm` is called
    with the folders that came back each time it re-arms on them (not at the first arming)."""
    folders = list(dict.fromkeys(followed))
    others = list(other_roots)

    async def armed_once(held: dict[Path, Identity], catch_up: list[Path]) -> None:
        """Report changes until a followed folder is no longer what `held` says (or stop).
        `catch_up`: folders to reread once the notifier is armed, for saves made between the
        old watch's end and this one's start."""
        replaced = asyncio.Event()

        async def guard() -> None:
            if not await _pause(stop, ARM_S):
                for folder in catch_up:
                    await queue.put(reread(folder))
                while not await _pause(stop, FOLDER_CHECK_S):
                    if any(identity(f) != held.get(f) for f in folders):
                        break
            replaced.set()

        guarding = asyncio.create_task(guard(), name=f"{name}-folder")
        roots = [*held, *others]
        by_itself = False
        try:
            if not roots:
                await replaced.wait()  # nothing to watch until a followed folder is made
                return
            async for changes in watchfiles.awatch(
                *roots,
                watch_filter=relevant,
                debounce=1600,
                step=step_ms,
                recursive=recursive,
                stop_event=replaced,
            ):
                await queue.put({Path(n) for _, n in changes})
            by_itself = not replaced.is_set()
        except FileNotFoundError:
            by_itself = True  # gone between the check and the arming
        finally:
            guarding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guarding
        if by_itself:
            # Look again after a check's time rather than re-arming at full speed.
            await _pause(stop, FOLDER_CHECK_S)

    async def pump() -> None:
        known: dict[Path, Identity | None] | None = None  # at the last arming
        while stop is None or not stop.is_set():
            fds: dict[Path, int] = {}
            try:
                for folder in folders:
                    if (fd := _hold(folder)) is not None:
                        fds[folder] = fd
                held = {f: _identity_of(fd) for f, fd in fds.items()}
                back: list[Path] = []
                if known is not None:
                    for folder in folders:
                        if held.get(folder) == known[folder]:
                            continue
                        if folder in held:
                            back.append(folder)
                        else:
                            # Read: a folder gone is its files removed, said as such.
                            await queue.put(reread(folder))
                    if back and on_rearm is not None:
                        on_rearm(back)
                known = {f: held.get(f) for f in folders}
                await armed_once(held, back)
            finally:
                for fd in fds.values():
                    os.close(fd)

    return asyncio.create_task(pump(), name=name)


def _identity_of(fd: int) -> Identity:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)
