"""The mesh file watcher: every way editors save, and half-written files never applied."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from meshdev.meshfile import MeshChanged, MeshRejected, WatchEvent, watch_mesh
from tests.support import wait_until

GOOD = "name: demo\nservices:\n  api: {command: x, replicas: %d}\n"


# Saves made while a Watcher arms itself say replicas PROBE + n: no test's own save does.
PROBE = 100


class Watcher:
    def __init__(self, path: Path) -> None:
        self.events: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.stop = asyncio.Event()
        self.path = path
        self.task: asyncio.Task[None] | None = None
        self.probes = 0

    async def __aenter__(self) -> Watcher:
        async def run() -> None:
            # As if the caller had loaded an empty file: the watcher reports the file as it is
            # once it has started, so we know when it has (the catch-up of a save that beat it).
            async for ev in watch_mesh(
                self.path, watch_templates=False, stop=self.stop, loaded=b""
            ):
                await self.events.put(ev)

        self.task = asyncio.create_task(run())
        assert replicas(await self.next()) == 1
        # Past that catch-up, a save reaches us only through the file notifier: save until one
        # does, and the notifier is armed for the test's own saves.
        await wait_until(self._probe_noticed, "the watcher's notifier to report a save")
        return self

    async def _probe_noticed(self) -> bool:
        self.probes += 1
        self.path.write_text(GOOD % (PROBE + self.probes))
        try:
            # An earlier probe's save may still come in; only the one just written counts.
            while replicas(await self.next(timeout=0.25)) != PROBE + self.probes:
                pass
        except TimeoutError:
            return False  # saved before the notifier was armed: lost, as it should be
        return True

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    async def next(self, timeout: float = 5.0) -> WatchEvent:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def nothing_for(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.events.get(), seconds)


@pytest.fixture
def mesh_file(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(GOOD % 1)
    return path


def replicas(ev: WatchEvent) -> int:
    assert isinstance(ev, MeshChanged), ev
    return ev.mesh.services["api"].pod_count()


async def test_in_place_edit(mesh_file: Path) -> None:
    async with Watcher(mesh_file) as w:
        mesh_file.write_text(GOOD % 2)
        assert replicas(await w.next()) == 2


async def test_temp_file_and_rename(mesh_file: Path) -> None:
    async with Watcher(mesh_file) as w:
        tmp = mesh_file.with_name(".mesh.yaml.swp")
        tmp.write_text(GOOD % 3)
        os.replace(tmp, mesh_file)
        assert replicas(await w.next()) == 3


async def test_truncate_then_write_in_chunks_applies_only_the_whole_file(mesh_file: Path) -> None:
    text = GOOD % 4 + "routes:\n  api:\n    - {timeout: 2s}\n"
    # The first chunk alone is a valid mesh (replicas 4 without the routes): applying it would
    # be wrong, and the last chunk alone is not YAML at all.
    chunks = [text[:52], text[52:70], text[70:]]
    async with Watcher(mesh_file) as w:
        with mesh_file.open("w") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                await asyncio.sleep(0.05)
        ev = await w.next()
        assert isinstance(ev, MeshChanged), ev
        assert ev.mesh.routes["api"][0].timeout == 2.0
        await w.nothing_for(0.5)


async def test_bad_save_is_reported_with_its_place_then_a_good_one_applies(mesh_file: Path) -> None:
    async with Watcher(mesh_file) as w:
        mesh_file.write_text(GOOD % 1 + "routes:\n  api:\n    - {timeout: 2}\n")
        ev = await w.next()
        assert isinstance(ev, MeshRejected)
        assert [str(p) for p in ev.problems] == [
            f"{mesh_file}:6:17 routes.api[0].timeout: expected a duration like 250ms or 2s"
        ]
        mesh_file.write_text(GOOD % 5)
        assert replicas(await w.next()) == 5


async def test_touch_without_change_is_ignored(mesh_file: Path) -> None:
    async with Watcher(mesh_file) as w:
        os.utime(mesh_file)
        await w.nothing_for(0.6)


async def test_other_files_in_the_folder_are_ignored(mesh_file: Path) -> None:
    async with Watcher(mesh_file) as w:
        (mesh_file.parent / "notes.txt").write_text("hello")
        await w.nothing_for(0.6)


async def test_deleted_file_is_reported_and_recreation_applies(mesh_file: Path) -> None:
    async with Watcher(mesh_file) as w:
        mesh_file.unlink()
        ev = await w.next()
        assert isinstance(ev, MeshRejected)
        assert "file was removed" in str(ev.problems[0])
        mesh_file.write_text(GOOD % 2)
        assert replicas(await w.next()) == 2


# -- the file's folder replaced (git checkout, rm -rf and a fresh copy, a rename into place) --


@pytest.fixture
def nested_mesh_file(tmp_path: Path) -> Path:
    path = tmp_path / "project" / "mesh.yaml"
    path.parent.mkdir()
    path.write_text(GOOD % 1)
    return path


async def test_a_folder_deleted_and_made_again_is_followed(nested_mesh_file: Path) -> None:
    # The notifier watched the old folder's inode: nothing after this was ever seen.
    folder = nested_mesh_file.parent
    async with Watcher(nested_mesh_file) as w:
        shutil.rmtree(folder)
        gone = await w.next()
        assert isinstance(gone, MeshRejected)
        assert [p.message for p in gone.problems] == ["file was removed"]
        folder.mkdir()
        nested_mesh_file.write_text(GOOD % 2)
        assert replicas(await w.next()) == 2
        # And it keeps following: a plain save afterwards.
        nested_mesh_file.write_text(GOOD % 3)
        assert replicas(await w.next()) == 3


async def test_a_folder_renamed_into_place_is_followed(nested_mesh_file: Path) -> None:
    folder = nested_mesh_file.parent
    fresh = folder.with_name("project.new")
    fresh.mkdir()
    (fresh / "mesh.yaml").write_text(GOOD % 6)
    async with Watcher(nested_mesh_file) as w:
        # No event names the file here: the old folder moved away whole.
        folder.rename(folder.with_name("project.old"))
        fresh.rename(folder)
        assert replicas(await w.next()) == 6
        nested_mesh_file.write_text(GOOD % 7)
        assert replicas(await w.next()) == 7
        # The old folder is not followed any more.
        (folder.with_name("project.old") / "mesh.yaml").write_text(GOOD % 8)
        await w.nothing_for(0.5)


async def test_the_caller_is_told_when_the_watcher_follows_a_new_folder(
    nested_mesh_file: Path,
) -> None:
    folder = nested_mesh_file.parent
    told: list[str] = []
    stop = asyncio.Event()
    events: asyncio.Queue[WatchEvent] = asyncio.Queue()

    async def run() -> None:
        async for ev in watch_mesh(
            nested_mesh_file,
            watch_templates=False,
            stop=stop,
            loaded=nested_mesh_file.read_bytes(),
            on_rearm=lambda: told.append("rearmed"),
        ):
            await events.put(ev)

    task = asyncio.create_task(run())
    try:
        await asyncio.sleep(0.3)
        shutil.rmtree(folder)
        folder.mkdir()
        nested_mesh_file.write_text(GOOD % 4)
        # Read at once when the old folder's deletion is reported; followed a moment later.
        assert replicas(await asyncio.wait_for(events.get(), 5)) == 4
        await wait_until(lambda: told == ["rearmed"], "the watcher to re-arm")
        nested_mesh_file.write_text(GOOD % 5)
        assert replicas(await asyncio.wait_for(events.get(), 5)) == 5
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
