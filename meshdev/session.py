"""One `meshdev up`: start the mesh, follow the mesh file, serve until stopped, tear down.

The headless form prints progress and one `ready:` line; the dashboard drives the same
`Session` and shows the same events. The session's state file is how `meshdev status` and
`meshdev down` in other terminals find what this process runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshdev.codewatch import CodeChanged, WatchedService, watch_code, watched_services
from meshdev.common.waiting import wait_set
from meshdev.config.model import Mesh
from meshdev.control import ControlPlane, ReloadReport, RollReport
from meshdev.meshfile import MeshChanged, MeshRejected, watch_mesh
from meshdev.observability.prometheus import (
    DockerLauncher,
    Launcher,
    ProcessLauncher,
    PrometheusServer,
    targets_of,
)
from meshdev.observability.trace_history import TraceHistory
from meshdev.runtime.base import Runtime
from meshdev.runtime.paths import BY_KEY, STATE_FILE, mesh_dir, state_root


@dataclass
class Session:
    mesh: Mesh
    mesh_file: Path
    runtime: Runtime
    # Where progress lines go: the terminal, or the dashboard while it runs (send_progress_to).
    say_to: Callable[[str], None]
    watch: bool = True
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    last_reload: dict[str, Any] | None = None
    # The last roll of each service whose code was saved (RollReport.to_json), for `status`.
    last_rolls: dict[str, dict[str, Any]] = field(default_factory=dict)
    control: ControlPlane = field(init=False)
    prometheus: PrometheusServer | None = field(init=False, default=None)
    # Every sidecar's spans, kept for `meshdev traces` and the dashboards.
    history: TraceHistory = field(init=False)
    # What a failed start removed already, for `stop` to count with what it removes.
    _removed: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        # Its lines take ours' way: redirecting the session's lines redirects them too.
        self.control = ControlPlane(
            self.runtime, self.token, progress=self.say, changed=self._pods_changed
        )
        self.history = TraceHistory(self._span_targets, self.token, self.say)
        # What the model came from: a save while we start is applied once we follow the file.
        self._loaded = self.mesh_file.read_bytes()
        # Set when a reload changes what is watched: the code watcher starts again on it.
        self._rewatch = asyncio.Event()
        # Per service: its roll in progress, and the save that came in while it ran.
        self._rolls: dict[str, asyncio.Task[None]] = {}
        self._roll_due: dict[str, CodeChanged] = {}
        # Set when newer code of the service is saved while its roll runs (ControlPlane.roll).
        self._roll_superseded: dict[str, asyncio.Event] = {}
        # Set once the mesh has started: the trace history reads its sidecars from then on.
        self._started = False

    def say(self, line: str) -> None:
        """One progress line, to wherever progress lines go now."""
        self.say_to(line)

    def send_progress_to(self, say_to: Callable[[str], None]) -> Callable[[str], None]:
        """Send progress lines (this session's and its control plane's) to `say_to` from
        now on; returns where they went until now, to send them back there later."""
        previous, self.say_to = self.say_to, say_to
        return previous

    @property
    def ingress_url(self) -> str | None:
        if self.mesh.ingress is None:
            return None
        return f"http://127.0.0.1:{self.mesh.ingress.port}/"

    def _span_targets(self) -> list[tuple[str, str]]:
        # Not while the pods start: a ring holds the first requests' spans until the first
        # read after, and asking pods that are not up yet would only slow their start.
        if not self._started or self.mesh.tracing.sampling <= 0:
            return []  # (or no sidecar makes spans: nothing to ask every second)
        return [(p.name, p.started.admin_url) for p in self.control.pods.values()]

    async def start(self) -> ReloadReport:
        await self.history.start()
        prometheus = self._prometheus()
        # Prometheus starts beside the pods, not before them: its start costs a second.
        started = asyncio.ensure_future(prometheus.start()) if prometheus is not None else None
        try:
            report = await self.control.up(self.mesh)
        except BaseException:
            if started is not None:
                started.cancel()
                with contextlib.suppress(BaseException):
                    await started
                await prometheus.stop()  # type: ignore[union-attr]
            raise
        if started is not None and prometheus is not None:
            try:
                url = await started
            except BaseException:
                self._removed += await self.control.down()
                raise
            self.prometheus = prometheus
            self.say(f"prometheus: {url} scraping the sidecars' /stats/prometheus")
        self._started = True
        self.record(report)
        return report

    def _prometheus_waits(self) -> str:
        if self.prometheus is None:
            return "prometheus: starts at the next `meshdev up` (a save does not start it)"
        return (
            "prometheus: the change applies at the next `meshdev up`; until then Prometheus "
            "runs as it started"
        )

    def _prometheus(self) -> PrometheusServer | None:
        settings = self.mesh.prometheus
        if settings is None:
            return None
        launcher: Launcher
        if self.runtime.kind == "docker":
            launcher = DockerLauncher(self.mesh.name, settings.image)
        else:
            launcher = ProcessLauncher(self.mesh.name)
        folder = mesh_dir(self.mesh.name) / "prometheus"
        return PrometheusServer(self.mesh.name, settings, folder, launcher)

    async def follow_file(self, on_report: Callable[[ReloadReport], None] | None = None) -> None:
        """Apply every good save of the mesh file; report bad ones with their places."""

        def rearmed() -> None:
            self.say(f"{self.mesh_file}: its folder was replaced; following the new one")

        async for event in watch_mesh(
            self.mesh_file, loaded=self._loaded, name=self.mesh.name, on_rearm=rearmed
        ):
            if isinstance(event, MeshRejected):
                self._reject([str(p) for p in event.problems])
                continue
            assert isinstance(event, MeshChanged)
            serving = self.control.version
            try:
                report = await self.control.apply(event.mesh)
            except Exception as exc:
                # A fault of meshdev's, not of the file. Unhandled, it ended this loop without
                # a word: no later save was applied, and `up` could no longer tear down.
                self._reject([f"{self.mesh_file}: applying it failed: {exc!r}"], serving)
                continue
            if report.ok:
                if event.mesh.prometheus != self.mesh.prometheus:
                    # Said, or the save's "applied" line would claim it for Prometheus too.
                    self.say(self._prometheus_waits())
                before = watched_services(self.mesh, self.mesh_file)
                self.mesh = event.mesh
                if watched_services(self.mesh, self.mesh_file) != before:
                    self._rewatch.set()
            self.record(report)
            self.say(report.summary())
            if on_report is not None:
                on_report(report)

    def _reject(self, errors: list[str], serving: int | None = None) -> None:
        """A save not applied: said, and recorded for `status` and the dashboards' banner.
        `serving`: the version the sidecars serve, if not the control plane's."""
        version = self.control.version if serving is None else serving
        self.last_reload = {"ok": False, "at": time.time(), "version": version, "errors": errors}
        self.say(f"{self.mesh_file}: not applied, still serving v{version}:")
        for error in errors:
            self.say(f"  {error}")
        self._write_state()

    async def follow_code(self, on_roll: Callable[[RollReport], None] | None = None) -> None:
        """Roll a service whenever a save changes a file its `watch:` names (codewatch.py);
        what is watched follows the mesh file's reloads. A save during a roll of the same
        service rolls it again once that one is done (the newest code, whatever the count of
        saves between)."""
        while True:
            self._rewatch.clear()
            watched = watched_services(self.mesh, self.mesh_file)

            def rearmed(folders: list[Path], watched: list[WatchedService] = watched) -> None:
                for folder in folders:
                    names = ", ".join(w.service for w in watched if w.folder == folder)
                    self.say(f"{names}: code folder {folder} was replaced; following the new one")

            changes = watch_code(
                watched,
                exclude=(self.mesh_file, state_root()),
                stop=self._rewatch,
                on_rearm=rearmed,
            )
            try:
                async for change in changes:
                    for service in change.services:
                        self._roll_soon(service, change, on_roll)
            except Exception as exc:  # e.g. a watched folder removed: said, not fatal
                self.say(f"cannot watch the services' code ({exc!r}); trying again in 5 s")
                await wait_set(self._rewatch, 5)
                continue
            # Ended without a reload asking: nothing to watch (no watch:, no folder) until one.
            await self._rewatch.wait()

    def _roll_soon(
        self, service: str, change: CodeChanged, on_roll: Callable[[RollReport], None] | None
    ) -> None:
        self._roll_due[service] = change
        task = self._rolls.get(service)
        if task is not None and not task.done():
            # A new pod of the code this save replaces need not get ready first (a roll not
            # begun yet has no event: it will roll this change anyway).
            superseded = self._roll_superseded.get(service)
            if superseded is not None:
                superseded.set()
        else:
            self._rolls[service] = asyncio.create_task(
                self._roll(service, on_roll), name=f"roll {service}"
            )

    async def _roll(self, service: str, on_roll: Callable[[RollReport], None] | None) -> None:
        while (change := self._roll_due.pop(service, None)) is not None:
            superseded = self._roll_superseded[service] = asyncio.Event()
            self.say(f"{service}: {change.describe()} changed; rolling its pods one at a time")
            try:
                report = await self.control.roll(service, superseded)
            except Exception as exc:  # a bug must not end the code loop unseen
                self.say(f"{service}: rolling it failed: {exc!r}")
                continue
            self.last_rolls[service] = {"at": time.time(), **report.to_json()}
            self._pods_changed()
            self.say(report.summary())
            if on_roll is not None:
                on_roll(report)

    async def _stop_rolling(self) -> None:
        tasks = list(self._rolls.values())
        self._rolls.clear()
        self._roll_due.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def leave(self) -> None:
        """`up --keep` is ending: what this process runs for the mesh stops (its code rolls,
        its trace history), and the mesh's pods and Prometheus keep running."""
        await self._stop_rolling()
        await self.history.stop()

    async def stop(self) -> list[str]:
        await self.leave()
        if self.prometheus is not None:
            await self.prometheus.stop()
            self.prometheus = None
        removed = [*self._removed, *await self.control.down()]
        self._removed = []
        with contextlib.suppress(FileNotFoundError):
            self.state_path().unlink()
        return removed

    def record(self, report: ReloadReport, *, by_key: bool = False) -> None:
        """`report`'s apply is the newest: what `last_reload` and the state file say (a save's,
        or, `by_key`, a change the dashboard's canary key applied without touching the file)."""
        self.last_reload = {"at": time.time(), **report.to_json()}
        if by_key:
            self.last_reload[BY_KEY] = True
        self._pods_changed()

    def _pods_changed(self) -> None:
        self._write_state()
        if self.prometheus is not None:
            # Pods a reload added or removed become Prometheus's targets within a scrape.
            self.prometheus.update(targets_of(self.control.snapshot()["pods"]))

    def state_path(self) -> Path:
        return mesh_dir(self.mesh.name) / STATE_FILE

    def _write_state(self) -> None:
        state = {
            "mesh": self.mesh.name,
            "file": str(self.mesh_file.resolve()),
            "runtime": self.runtime.kind,
            "pid": os.getpid(),
            "ingress_url": self.ingress_url,
            "token": self.token,
            "traces_url": self.history.url,
            "last_reload": self.last_reload,
            "last_rolls": self.last_rolls,
            **self.control.snapshot(),
        }
        path = self.state_path()
        tmp = path.with_suffix(".tmp")
        # The token lets its holder reconfigure the mesh's sidecars: owner-only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        tmp.replace(path)


async def run_headless(
    session: Session,
    *,
    keep: bool,
    before_stop: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Start, print `ready:`, follow the file until SIGINT/SIGTERM/SIGHUP, then tear down;
    `before_stop` runs first (what acts on the mesh must stop before it goes)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def hung_up() -> None:
        # The terminal closed. Its default, dying at once, left the mesh running detached;
        # and what is said from now on has nowhere to go: a write to the gone terminal fails
        # (EIO), which would cut the tear-down short. A file the output goes to keeps it.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                if os.isatty(fd):
                    os.dup2(devnull, fd)
            os.close(devnull)
        stop.set()

    loop.add_signal_handler(signal.SIGHUP, hung_up)
    follower: asyncio.Task[None] | None = None
    try:
        # Follow the file from the start: a save during start-up applies right after it.
        if session.watch:
            follower = asyncio.create_task(_follow(session))
        starting = asyncio.create_task(session.start())
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            session.say("interrupted while starting")
            return 130
        waiter.cancel()
        report = starting.result()
        if not report.ok:
            session.say(report.summary())
            return 1
        session.say(report.summary())
        session.say(f"ready: {session.ingress_url or '(no ingress in mesh.yaml)'}")
        await stop.wait()
        session.say("stopping")
        return 0
    finally:
        if follower is not None:
            follower.cancel()
            try:
                await follower
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                # The mesh is torn down all the same: an error here must not leave it running.
                session.say(f"following {session.mesh_file} failed: {exc!r}")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if before_stop is not None:
            await before_stop()
        if keep:
            await session.leave()
            session.say(
                f"--keep: the mesh keeps running; `meshdev down {session.mesh_file}` removes it"
            )
        else:
            removed = await session.stop()
            session.say(f"removed {len(removed)} processes/containers")


async def _follow(session: Session) -> None:
    """The mesh file and the apps' code, side by side."""
    await asyncio.gather(session.follow_file(), session.follow_code())
