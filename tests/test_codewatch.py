"""The code watcher: which saves roll which service, every way editors save, and the saves
that change nothing (a touch, the same bytes, swap files, caches) rolling nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from meshdev.codewatch import CodeChanged, WatchedService, ignored, watch_code, watched_services
from meshdev.config import parse_mesh
from tests.support import wait_until


@pytest.mark.parametrize(
    ("pattern", "path", "matched"),
    [
        ("*.py", "app.py", True),
        ("*.py", "pkg/app.py", False),  # * stays within one folder
        ("**/*.py", "app.py", True),
        ("**/*.py", "pkg/sub/app.py", True),
        ("src", "src/deep/a.txt", True),  # a folder is everything below it
        ("src/", "src/a.py", True),
        ("src", "srcs/a.py", False),
        ("app.py", "app.py", True),
        ("./app.py", "app.py", True),
        ("app.py", "other.py", False),
        ("templates/**", "templates/a/b.html", True),
        ("a?.py", "ab.py", True),
        ("[ab].py", "b.py", True),
        ("[!ab].py", "b.py", False),
        ("*.py", "app.pyc", False),
    ],
)
def test_patterns(tmp_path: Path, pattern: str, path: str, matched: bool) -> None:
    watched = WatchedService("web", tmp_path, (pattern,))
    assert watched.matches(tmp_path / path) is matched
    assert not watched.matches(tmp_path.parent / "elsewhere" / path)


@pytest.mark.parametrize(
    "path",
    [
        "__pycache__/app.cpython-311.pyc",
        ".git/index",
        "pkg/__pycache__/x.py",
        "node_modules/a/index.js",
        ".venv/lib/site.py",
        ".app.py.swp",
        ".app.py.swx",
        "app.py~",
        ".#app.py",
        "#app.py#",
        "4913",
        "app.py___jb_tmp___",
        "app.pyc",
    ],
)
def test_never_code(path: str) -> None:
    assert ignored(Path("/project") / path)


def test_app_files_are_code() -> None:
    assert not ignored(Path("app.py"))
    assert not ignored(Path("src/templates/index.html"))


def test_where_the_folder_itself_is_does_not_matter(tmp_path: Path) -> None:
    folder = tmp_path / "venv" / "project"
    watched = WatchedService("web", folder, ("**/*.py",))
    assert watched.matches(folder / "app.py")
    assert watched.matches(folder / "pkg" / "app.py")
    assert not watched.matches(folder / ".venv" / "x.py")


def test_a_service_watches_its_build_folder_else_the_mesh_files(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    text = (
        "name: m\nservices:\n"
        "  api: {build: api, watch: ['*.py']}\n"
        "  web: {command: x, watch: [src/]}\n"
        "  db: {command: x}\n"
    )
    mesh_file = tmp_path / "mesh.yaml"
    mesh = parse_mesh(text.encode(), str(mesh_file), tmp_path)
    assert watched_services(mesh, mesh_file) == [
        WatchedService("api", (tmp_path / "api").resolve(), ("*.py",)),
        WatchedService("web", tmp_path.resolve(), ("src/",)),
    ]


class Watcher:
    """watch_code over `folder` for the services given, its events in a queue."""

    def __init__(
        self,
        folder: Path,
        *watched: WatchedService,
        exclude: tuple[Path, ...] = (),
        rearmed: list[list[Path]] | None = None,
    ):
        self.folder = folder
        self.watched = list(watched)
        self.exclude = exclude
        self.rearmed = rearmed
        self.events: asyncio.Queue[CodeChanged] = asyncio.Queue()
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watcher:
        async def run() -> None:
            on_rearm = None if self.rearmed is None else self.rearmed.append
            async for ev in watch_code(
                self.watched, exclude=self.exclude, stop=self.stop, on_rearm=on_rearm
            ):
                await self.events.put(ev)

        self.task = asyncio.create_task(run())
        probe = self.folder / "probe.py"
        count = 0

        async def noticed() -> bool:
            nonlocal count
            count += 1
            probe.write_text(f"# probe {count}\n")
            try:
                while True:
                    ev = await asyncio.wait_for(self.events.get(), 0.3)
                    if probe in ev.paths:
                        return True
            except TimeoutError:
                return False

        # Saves before the notifier is armed are lost: save the probe until one arrives.
        await wait_until(noticed, "the code watcher to report a save")
        await self.nothing_for(0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    async def next(self, timeout: float = 10.0) -> CodeChanged:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def nothing_for(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.events.get(), seconds)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text("CODE = 1\n")
    return path


async def test_a_save_names_the_services_watching_it(tmp_path: Path, app: Path) -> None:
    web = WatchedService("web", tmp_path, ("*.py",))
    api = WatchedService("api", tmp_path, ("api/**",))
    # Made before the watcher: a file made in a folder the notifier has yet to add a watch
    # for is the notifier's race, not what this test is about.
    (tmp_path / "api").mkdir()
    async with Watcher(tmp_path, web, api) as w:
        app.write_text("CODE = 2\n")
        ev = await w.next()
        assert ev.services == ("web",)
        assert ev.paths == (app,)
        (tmp_path / "api" / "main.go").write_text("package main\n")
        ev = await w.next()
        assert ev.services == ("api",)


async def test_temp_file_and_rename_is_one_save(tmp_path: Path, app: Path) -> None:
    async with Watcher(tmp_path, WatchedService("web", tmp_path, ("*.py",))) as w:
        tmp = tmp_path / ".app.py.swp"
        tmp.write_text("CODE = 3\n")
        os.replace(tmp, app)
        ev = await w.next()
        assert ev.paths == (app,)
        await w.nothing_for(0.3)


async def test_a_write_in_chunks_is_one_save(tmp_path: Path, app: Path) -> None:
    async with Watcher(tmp_path, WatchedService("web", tmp_path, ("*.py",))) as w:
        with app.open("w") as f:
            for chunk in ("CODE = ", "4", "\n"):
                f.write(chunk)
                f.flush()
                await asyncio.sleep(0.03)
        assert (await w.next()).services == ("web",)
        await w.nothing_for(0.4)


async def test_a_touch_or_the_same_bytes_roll_nothing(tmp_path: Path, app: Path) -> None:
    async with Watcher(tmp_path, WatchedService("web", tmp_path, ("*.py",))) as w:
        os.utime(app)
        app.write_bytes(app.read_bytes())
        await w.nothing_for(0.5)
        app.write_text("CODE = 5\n")
        assert (await w.next()).paths == (app,)


async def test_swap_files_and_caches_roll_nothing(tmp_path: Path, app: Path) -> None:
    async with Watcher(tmp_path, WatchedService("web", tmp_path, ("**/*.py", "*"))) as w:
        (tmp_path / ".app.py.swp").write_bytes(b"swap")
        (tmp_path / "4913").write_bytes(b"")
        (tmp_path / "app.py~").write_text("CODE = 0\n")
        (tmp_path / "__pycache__").mkdir()
        (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
        (tmp_path / ".git").mkdir()
        (tmp_path / ".git" / "index.py").write_text("x = 1\n")
        await w.nothing_for(0.5)


async def test_excluded_paths_roll_nothing(tmp_path: Path, app: Path) -> None:
    mesh_file = tmp_path / "mesh.yaml"
    state = tmp_path / "state"
    state.mkdir()
    watched = WatchedService("web", tmp_path, ("*", "state/**"))
    async with Watcher(tmp_path, watched, exclude=(mesh_file, state)) as w:
        mesh_file.write_text("name: m\n")
        (state / "web-0.app.log").write_text("a log line\n")
        await w.nothing_for(0.5)


async def test_a_new_file_and_a_deleted_one_are_changes(tmp_path: Path, app: Path) -> None:
    async with Watcher(tmp_path, WatchedService("web", tmp_path, ("*.py",))) as w:
        new = tmp_path / "helpers.py"
        new.write_text("def f(): pass\n")
        assert (await w.next()).paths == (new,)
        app.unlink()
        assert (await w.next()).paths == (app,)


async def test_files_in_a_folder_made_just_now_are_seen(tmp_path: Path, app: Path) -> None:
    # Written before the notifier can add a watch for the new folder, as `git checkout` or an
    # unzip does: the folder's own event makes the watcher read it whole.
    async with Watcher(tmp_path, WatchedService("web", tmp_path, ("**/*.py",))) as w:
        for i in range(5):
            folder = tmp_path / f"pkg{i}" / "sub"
            folder.mkdir(parents=True)
            (folder / "mod.py").write_text(f"X = {i}\n")
            (folder / "notes.txt").write_text("not code\n")
            ev = await w.next()
            assert ev.services == ("web",)
            assert folder / "mod.py" in ev.paths
            assert folder / "notes.txt" not in ev.paths
        # An ignored folder made with code in it stays ignored.
        (tmp_path / "__pycache__").mkdir()
        (tmp_path / "__pycache__" / "x.py").write_text("x = 1\n")
        await w.nothing_for(0.5)


# -- a service's folder replaced (git checkout of another branch, a tool that rewrites it) --


@pytest.fixture
def service_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "web"
    (folder / "pkg").mkdir(parents=True)
    (folder / "app.py").write_text("CODE = 1\n")
    (folder / "pkg" / "util.py").write_text("U = 1\n")
    return folder


async def test_a_code_folder_deleted_and_made_again_is_followed(service_folder: Path) -> None:
    # The notifier watched the old folder's inode: before, nothing after this was ever seen.
    rearmed: list[list[Path]] = []
    web = WatchedService("web", service_folder, ("**/*.py",))
    async with Watcher(service_folder, web, rearmed=rearmed) as w:
        shutil.rmtree(service_folder)
        # The folder gone is no save: rolling the service onto no code would only fail.
        await w.nothing_for(0.6)
        (service_folder / "pkg").mkdir(parents=True)
        (service_folder / "app.py").write_text("CODE = 2\n")
        (service_folder / "pkg" / "util.py").write_text("U = 1\n")  # the same bytes
        ev = await w.next()
        assert ev.services == ("web",)
        # What changed against the old folder: app.py, and the probe the new one lacks.
        assert set(ev.paths) == {service_folder / "app.py", service_folder / "probe.py"}
        assert rearmed == [[service_folder]]
        # And it keeps following: plain saves afterwards, in a subfolder too.
        (service_folder / "app.py").write_text("CODE = 3\n")
        assert (await w.next()).paths == (service_folder / "app.py",)
        (service_folder / "pkg" / "util.py").write_text("U = 2\n")
        assert (await w.next()).paths == (service_folder / "pkg" / "util.py",)


async def test_a_code_folder_renamed_into_place_is_followed(service_folder: Path) -> None:
    fresh = service_folder.with_name("web.new")
    shutil.copytree(service_folder, fresh)
    (fresh / "app.py").write_text("CODE = 6\n")
    web = WatchedService("web", service_folder, ("**/*.py",))
    async with Watcher(service_folder, web) as w:
        # No event names a file here: the old folder moved away whole.
        service_folder.rename(service_folder.with_name("web.old"))
        fresh.rename(service_folder)
        ev = await w.next()
        assert service_folder / "app.py" in ev.paths
        (service_folder / "app.py").write_text("CODE = 7\n")
        assert (await w.next()).paths == (service_folder / "app.py",)
        # The old folder is not followed any more.
        (service_folder.with_name("web.old") / "app.py").write_text("CODE = 8\n")
        await w.nothing_for(0.5)


async def test_a_code_folder_made_again_with_the_same_files_rolls_nothing(
    service_folder: Path, tmp_path: Path
) -> None:
    # `git checkout other && git checkout -` puts back the very bytes the pods run.
    other = WatchedService("other", tmp_path / "other", ("*.py",))
    (tmp_path / "other").mkdir()
    web = WatchedService("web", service_folder, ("**/*.py",))
    async with Watcher(tmp_path / "other", other, web) as w:
        copy = shutil.copytree(service_folder, tmp_path / "copy")
        shutil.rmtree(service_folder)
        shutil.copytree(copy, service_folder)
        await w.nothing_for(0.8)
        # The other service's folder, never replaced, is still watched; so is the new one.
        (tmp_path / "other" / "o.py").write_text("O = 1\n")
        assert (await w.next()).services == ("other",)
        (service_folder / "app.py").write_text("CODE = 9\n")
        assert (await w.next()).services == ("web",)
