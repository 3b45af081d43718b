"""A real Prometheus next to the mesh (`prometheus: {port: 9090}` in mesh.yaml), scraping every
sidecar's /stats/prometheus.

Targets come from file-based service discovery: `up` rewrites targets.json atomically (a temp
file renamed over it) whenever the pods change, and Prometheus picks the file up on its own
(no reload), so added or removed pods show within a scrape or two. Each target carries the
labels Kubernetes discovery would give it and Envoy dashboards select on: `namespace` (the
mesh), `pod`, `service`, `version` (the subset), `cluster` ("meshdev"), plus the job.

The process runtime runs Debian's (or any) `prometheus` binary from PATH, labelled like the
mesh's pods so that `meshdev down` finds it after a crash; the Docker runtime runs the official
image on the host's network (the sidecars' admin ports are published on its loopback), labelled
with the mesh so `down` removes it. Its data lives in the mesh's state folder either way; it
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from meshdev.config.model import PrometheusSettings
from meshdev.runtime import loopback
from meshdev.runtime.base import LABEL_MESH, LABEL_ROLE, RuntimeFailure
from meshdev.runtime.process import procscan

if TYPE_CHECKING:
    import docker

JOB = "envoy-stats"
ROLE = "prometheus"
HOST = "127.0.0.1"
# How long Prometheus may take to answer /-/ready after its start.
START_TIMEOUT = 30.0
# How many of its last log lines a failed start shows.
LOG_LINES = 10


@dataclass(frozen=True, slots=True)
class Exit:
    """How the server ended."""

    code: int | None  # None: unknown (its container went with it)
    log: list[str]  # its last lines


@dataclass(frozen=True, slots=True)
class Target:
    """One sidecar to scrape."""

    pod: str
    admin_url: str
    service: str | None
    subset: str | None


def targets_document(mesh: str, targets: Iterable[Target]) -> list[dict[str, Any]]:
    """The file_sd document: one group per pod, with its labels."""
    groups = []
    for t in sorted(targets, key=lambda t: t.pod):
        labels = {"namespace": mesh, "pod": t.pod, "cluster": "meshdev"}
        labels["service"] = t.service or "ingress"
        if t.subset:
            labels["version"] = t.subset
        address = t.admin_url.removeprefix("http://").rstrip("/")
        groups.append({"targets": [address], "labels": labels})
    return groups


def config_document(targets_file: str, scrape_interval: float) -> dict[str, Any]:
    interval = f"{max(1, round(scrape_interval))}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/stats/prometheus",
                # Prometheus watches the file (inotify) and re-reads it on this period too.
                "file_sd_configs": [{"files": [targets_file], "refresh_interval": "5s"}],
            }
        ],
    }


def write_atomically(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


class Launcher(Protocol):
    """Starts and stops the server process or container."""

    async def start(self, folder: Path, port: int) -> None: ...

    async def stop(self) -> None: ...

    def config_file(self, folder: Path) -> str:
        """The --config.file the server is given: how it is told from another Prometheus."""
        ...

    async def ended(self) -> Exit | None:
        """How the server ended, once it has; None while it runs."""
        ...

    async def last_log(self) -> list[str]:
        """The last LOG_LINES lines of the server's output."""
        ...

    def log_place(self, folder: Path) -> str | None:
        """Where the server's whole log stays after it is gone; None when nowhere."""
        ...


class PrometheusServer:
    """Prometheus for one mesh: `start`, then `update` on every topology change, `stop`."""

    def __init__(
        self, mesh: str, settings: PrometheusSettings, folder: Path, launcher: Launcher
    ) -> None:
        self.mesh = mesh
        self.settings = settings
        self.folder = folder
        self._launcher = launcher
        self._targets = folder / "targets.json"
        self._written: list[dict[str, Any]] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.settings.port}"

    async def start(self) -> str:
        """Write its config and an empty target list, start it and wait until it is ready."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.folder / "data").mkdir(exist_ok=True)
        # The container's user must write its data and read its config.
        os.chmod(self.folder, 0o755)
        os.chmod(self.folder / "data", 0o777)
        write_atomically(self._targets, [])
        self._written = []
        # Relative: Prometheus reads it beside its config, wherever the folder is mounted.
        write_atomically(
            self.folder / "prometheus.json",
            config_document(self._targets.name, self.settings.scrape_interval),
        )
        await self._launcher.start(self.folder, self.settings.port)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(OSError, loopback.LoopbackError, ValueError):
                answer = await loopback.request("GET", f"{self.url}/-/ready", timeout=1)
                # Another Prometheus on the port (9090 is every Prometheus's default) answers
                # ready too, and scrapes nothing of the mesh: only ours counts.
                if answer.status == 200 and await self._ours():
                    return self.url
            # Asked on every round, so a server that cannot start (a bad config, its port
            # taken) is said at once with its own words, not at the deadline.
            ended = await self._launcher.ended()
            if ended is not None:
                await self._launcher.stop()  # what is left of it: a container, a connection
                code = "an unknown code" if ended.code is None else f"code {ended.code}"
                raise RuntimeFailure(
                    f"prometheus exited at its start with {code}; is {HOST}:"
                    f"{self.settings.port} (prometheus.port in mesh.yaml) taken? "
                    + self._log_said(ended.log),
                    exit_code=ended.code,
                )
            if time.monotonic() > deadline:
                lines = await self._launcher.last_log()
                await self._launcher.stop()
                raise RuntimeFailure(
                    f"prometheus did not become ready on {HOST}:{self.settings.port} within "
                    f"{START_TIMEOUT:g}s; " + self._log_said(lines)
                )
            await asyncio.sleep(0.2)

    def _log_said(self, lines: list[str]) -> str:
        place = self._launcher.log_place(self.folder)
        where = f" (all of it: {place})" if place is not None else ""
        shown = "\n".join(f"  {line}" for line in lines) or "  (no output)"
        return f"the last lines of its log{where}:\n{shown}"

    async def _ours(self) -> bool:
        answer = await loopback.request("GET", f"{self.url}/api/v1/status/flags", timeout=1)
        if answer.status != 200:
            return False
        flags = json.loads(answer.body).get("data") or {}
        return bool(flags.get("config.file") == self._launcher.config_file(self.folder))

    def update(self, targets: Iterable[Target]) -> bool:
        """Rewrite the targets file when the pods changed; True when it did."""
        document = targets_document(self.mesh, targets)
        if document == self._written:
            return False
        write_atomically(self._targets, document)
        self._written = document
        return True

    async def stop(self) -> None:
        await self._launcher.stop()


def _args(folder: Path, port: int, config: Path) -> list[str]:
    return [
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]


class ProcessLauncher:
    """Prometheus as a local process (the process runtime)."""

    def __init__(self, mesh: str, binary: str = "prometheus") -> None:
        self.mesh = mesh
        self.binary = binary
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file = Path("prometheus.log")

    async def start(self, folder: Path, port: int) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise RuntimeFailure(
                f"`prometheus: ...` in mesh.yaml needs the {self.binary} binary on PATH "
                "(Debian/Ubuntu: apt-get install prometheus)"
            )
        env = {**os.environ, procscan.ENV_MESH: self.mesh, procscan.ENV_ROLE: ROLE}
        self._log_file = folder / "prometheus.log"
        log = open(self._log_file, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._proc = await asyncio.create_subprocess_exec(
                path,
                *_args(folder, port, Path(self.config_file(folder))),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=folder,
                start_new_session=True,
            )
        finally:
            log.close()

    def config_file(self, folder: Path) -> str:
        return str(folder / "prometheus.json")

    async def ended(self) -> Exit | None:
        if self._proc is None or self._proc.returncode is None:
            return None
        return Exit(self._proc.returncode, await self.last_log())

    async def last_log(self) -> list[str]:
        return _last_lines(self._log_file)

    def log_place(self, folder: Path) -> str | None:
        return str(self._log_file)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            await procscan.terminate([proc.pid])
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()


def _last_lines(log: Path) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-LOG_LINES:]


# Where the container sees the mesh's Prometheus folder.
_MOUNT = "/prometheus-meshdev"


def container_name(mesh: str) -> str:
    return f"meshdev-{mesh}-prometheus"


class DockerLauncher:
    """Prometheus in a container on the host's network (the Docker runtime)."""

    def __init__(self, mesh: str, image: str) -> None:
        self.mesh = mesh
        self.image = image
        # Kept from the start to the stop: `ended` asks the engine several times a second.
        self._client: docker.DockerClient | None = None

    async def start(self, folder: Path, port: int) -> None:
        from meshdev.runtime.docker import engine
        from meshdev.runtime.docker.images import ensure_image

        client = await asyncio.to_thread(engine.connect)
        self._client = client
        try:
            await ensure_image(
                client,
                self.image,
                lambda _line: None,
                hint="; set prometheus.image in mesh.yaml to a mirror's copy",
            )
            command = _args(Path(_MOUNT), port, Path(self.config_file(folder)))
            container = await engine.call(
                client.api.create_container,
                image=self.image,
                name=container_name(self.mesh),
                command=command,
                labels={LABEL_MESH: self.mesh, LABEL_ROLE: ROLE},
                host_config=client.api.create_host_config(
                    network_mode="host",
                    binds={str(folder): {"bind": _MOUNT, "mode": "rw"}},
                ),
            )
            await engine.call(client.api.start, container["Id"])
        except BaseException:
            self._client = None
            client.close()
            raise

    def config_file(self, folder: Path) -> str:
        return f"{_MOUNT}/prometheus.json"

    async def ended(self) -> Exit | None:
        from docker.errors import NotFound

        from meshdev.runtime.docker import engine

        client = self._client
        if client is None:
            return None
        name = container_name(self.mesh)
        try:
            info = await engine.call(client.api.inspect_container, name)
        except NotFound:
            return Exit(None, [])  # removed under us (a `down`, a `docker rm`)
        state = info.get("State") or {}
        if state.get("Status") not in ("exited", "dead"):
            return None
        code = state.get("ExitCode")
        return Exit(code if isinstance(code, int) else None, await self.last_log())

    async def last_log(self) -> list[str]:
        from docker.errors import NotFound

        from meshdev.runtime.docker.logs import tail

        if self._client is None:
            return []
        try:
            return await tail(self._client, container_name(self.mesh), LOG_LINES)
        except NotFound:
            return []

    def log_place(self, folder: Path) -> str | None:
        return None  # its container, removed with the mesh's

    async def stop(self) -> None:
        from meshdev.runtime.docker import engine
        from meshdev.runtime.docker.teardown import remove

        kept, self._client = self._client, None
        client = kept if kept is not None else await asyncio.to_thread(engine.connect)
        try:
            await remove(client, container_name(self.mesh))
        finally:
            client.close()


def targets_of(pods: Iterable[Mapping[str, Any]]) -> list[Target]:
    """Targets from the control plane's snapshot of its pods."""
    return [
        Target(p["name"], p["admin_url"], p.get("service"), p.get("subset"))
        for p in pods
        if p.get("admin_url")
    ]
