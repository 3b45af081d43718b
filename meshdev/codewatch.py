"""Saves of the apps' code -> which services to roll (mesh.yaml's `watch:` per service).

Each service's patterns are relative to its folder: its build folder, else the mesh file's.
A save is read as meshfile.py reads mesh.yaml: once its writes have paused (QUIET_S), so an
editor's temp file + rename or a write in chunks is one save; and only a change of a watched
file's content counts (its SHA-256 against the last one seen), so a touch, or a save that
writes back the same bytes, rolls nothing. What no code is made of never counts: bytecode
caches, VCS folders, virtualenvs, editors' swap, backup and lock files (vim's 4913 probe).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from meshdev.config.model import Mesh
from meshdev.folderwatch import start_folders_pump
from meshdev.meshfile import QUIET_S, STEP_MS, quiet_batch

# Folders that hold no source of the app, whatever a pattern says (watchfiles' own defaults).
IGNORED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".tox",
        ".venv",
        "venv",
        ".idea",
        ".vscode",
        "node_modules",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
    }
)
# Files editors and tools write beside the real one: vim's swap files (.swp, .swo, ...) and its
# write probe 4913, backups ending in ~, emacs' lock files (.#name), JetBrains' safe-write
# copies, compiled Python, macOS' folder metadata.
_IGNORED_FILE = re.compile(
    r"(\.sw.$|~$|^\.#|^#.*#$|^4913$|___jb_(tmp|old)___$|\.py[cod]$|^\.DS_Store$)"
)
# Files larger than this are hashed by size and time only: a watched data file of gigabytes
# must not stall the control plane on every save.
_HASH_LIMIT = 64 * 1024 * 1024


def ignored(path: Path) -> bool:
    """Is `path` (relative to a service's folder: where that folder itself is, e.g. under a
    `venv`, is no business of this) never code: inside an ignored folder, or an editor's or
    tool's by-product?"""
    return bool(_IGNORED_FILE.search(path.name)) or any(p in IGNORED_DIRS for p in path.parts)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex on POSIX relative paths: `*` and `?` stay within one folder, `**` is
    any number of folders, `[...]` a character class; a plain path is also the folder of
    everything below it (`src` and `src/` watch src/**)."""
    pattern = pattern.replace("\\", "/").strip().removeprefix("./").rstrip("/") or "**"
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + "(?:/.*)?")


@dataclass(frozen=True)
class WatchedService:
    """One service's watch patterns and the folder they are relative to."""

    service: str
    folder: Path
    patterns: tuple[str, ...]
    _regexes: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regexes", tuple(_glob_regex(p) for p in self.patterns))

    def matches(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.folder)
        except ValueError:
            return False
        if rel == Path(".") or ignored(rel):
            return False
        posix = rel.as_posix()
        return any(r.fullmatch(posix) for r in self._regexes)

    def files(self, below: Path | None = None) -> Iterator[Path]:
        """The files its patterns match now (ignored folders and files left out), in its
        folder or in `below`, a folder inside it."""
        for top, dirs, names in os.walk(below or self.folder):
            dirs[:] = [d for d in dirs if d not in IGNORED_DIRS]
            for name in names:
                path = Path(top) / name
                if self.matches(path):
                    yield path


def _below(path: Path, folder: Path) -> bool:
    return folder in path.parents


def watched_services(mesh: Mesh, mesh_file: Path) -> list[WatchedService]:
    """The services with `watch:`, each with its folder: its build folder, else the mesh
    file's (where a command-only service's command runs)."""
    base = mesh_file.resolve().parent
    return [
        WatchedService(name, (base / svc.build).resolve() if svc.build else base, svc.watch)
        for name, svc in mesh.services.items()
        if svc.watch
    ]


@dataclass(frozen=True)
class CodeChanged:
    """A save that changed the content of watched files of these services."""

    services: tuple[str, ...]
    paths: tuple[Path, ...]

    def describe(self, limit: int = 3) -> str:
        names = [p.name for p in self.paths[:limit]]
        more = len(self.paths) - limit
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _digest(path: Path) -> bytes | None:
    """The file's content hash; None when it is no (readable) file, e.g. deleted."""
    try:
        st = path.stat()
        if not path.is_file():
            return None
        if st.st_size > _HASH_LIMIT:
            return f"{st.st_size}:{st.st_mtime_ns}".encode()
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


def _digests(paths: Iterable[Path]) -> dict[Path, bytes | None]:
    return {p: _digest(p) for p in paths}


async def watch_code(
    watched: list[WatchedService],
    *,
    exclude: Iterable[Path] = (),
    quiet: float = QUIET_S,
    step_ms: int = STEP_MS,
    stop: asyncio.Event | None = None,
    on_rearm: Callable[[list[Path]], None] | None = None,
) -> AsyncIterator[CodeChanged]:
    """A CodeChanged for every save that changes a watched file's content, from now on.
    `exclude`: paths never watched (the mesh file, which has its own watcher; the state
    folder, where the process runtime writes its logs, in case it is below a service's).
    A service's folder deleted and made again, or replaced by a rename (`git checkout`, a tool
    that rewrites it), is followed (folderwatch.py): the new one is read whole and compared
    with what was seen, and `on_rearm` is told which folders it follows anew."""
    if not watched:
        return
    skip = [p.resolve() for p in exclude]

    def excluded(path: Path) -> bool:
        return any(path == s or s in path.parents for s in skip)

    def relevant(change: watchfiles.Change, name: str) -> bool:
        path = Path(name)
        if excluded(path):
            return False
        if change == watchfiles.Change.added and path.is_dir():
            # Its files may be written before the notifier watches it: read it whole (below).
            return any(
                _below(path, w.folder) and not ignored(path.relative_to(w.folder)) for w in watched
            )
        return any(w.matches(path) for w in watched)

    def digests_of(batch: set[Path]) -> dict[Path, bytes | None]:
        """Of the changed files, and of every watched file in a folder made meanwhile (and
        of those seen there before: a folder made again may lack some)."""
        files = set()
        for path in batch:
            if path.is_dir():
                files |= {f for w in watched for f in w.files(path) if not excluded(f)}
                files |= {f for f in known if _below(f, path)}
            else:
                files.add(path)
        # A file of a service whose folder is gone now is left as last seen: the folder is
        # being replaced (a checkout, a tool's rewrite), and rolling pods onto no code would
        # only fail; the new folder is read whole once it is there.
        return _digests(f for f in files if all(w.folder.is_dir() for w in owners(f)))

    def owners(path: Path) -> list[WatchedService]:
        return [w for w in watched if _below(path, w.folder)]

    queue: asyncio.Queue[set[Path]] = asyncio.Queue()
    folders = sorted({w.folder for w in watched})
    # Each service's folder is followed when replaced; the notifier's recursive watch of a
    # folder's inode would otherwise see nothing more, for ever and without a word.
    pump_task = start_folders_pump(
        queue,
        folders,
        (),
        relevant,
        recursive=True,
        reread=lambda folder: {folder},
        stop=stop,
        step_ms=step_ms,
        name="meshdev-watch-code",
        on_rearm=on_rearm,
    )
    # What the files hold now: only a change from this counts.
    known: dict[Path, bytes | None] = await asyncio.to_thread(
        lambda: _digests(p for w in watched for p in w.files() if not excluded(p))
    )
    try:
        while True:
            batch = await quiet_batch(queue, pump_task, quiet)
            if batch is None:
                return
            now = await asyncio.to_thread(digests_of, batch)
            changed = sorted(p for p, d in now.items() if d != known.get(p))
            known.update(now)
            services = tuple(w.service for w in watched if any(w.matches(p) for p in changed))
            if services:
                yield CodeChanged(services, tuple(changed))
    finally:
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump_task
