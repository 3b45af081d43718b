"""A watch of a mesh that a `meshdev up` in another process runs, followed through the state
file that session keeps (`watch --mesh FILE`, and each browser tab of `up --web`).

The session writes its state file whenever something changes (start, a reload applied or
rejected, a code roll, a pod that exits, restarts or comes back: session.py). Read once a
second (only when it changed), it gives this dashboard what `up`'s own shows: the header's
runtime, config version, ingress and last reload; the reload banner of a rejected save; the
weights the canary key applied, which the file does not have (`weights`, config/splits.py);
the pods with their states and restarts; the sidecars to stream from as pods come and go; and the
pods' logs, read where the runtime keeps them. The demo keys act on the mesh through that
`up`'s web server when it serves one (`up --web`: its tabs, tui/remote_keys.py); otherwise
they say that the mesh is not running here. Quitting closes this dashboard only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshdev import plan
from meshdev.config import MeshInvalid, load_mesh
from meshdev.config.model import Mesh
from meshdev.config.splits import with_weights
from meshdev.control import ReloadReport, RollReport
from meshdev.runtime.base import Container, PodState, Runtime
from meshdev.runtime.detect import running_runtime
from meshdev.runtime.paths import BY_KEY, STATE_FILE, mesh_dir, read_state
from meshdev.runtime.process.procscan import alive
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.source import ProxyTarget
from meshdev.tui.controllers import (
    DashboardApp,
    WatchController,
    attached,
    key_applied_text,
    left_running,
    rejected_text,
    tell_roll,
)
from meshdev.tui.logic.ports import DemoKeys
from meshdev.tui.remote_keys import RemoteKeys
from meshdev.tui.tables.pods import PodFacts
from meshdev.tui.widgets.header import HeaderFacts, header_facts
from meshdev.tui.widgets.logs_view import LogReader

# Seconds between two looks at the state file (a stat; a read only when it changed).
POLL_EVERY = 1.0
GONE = "the mesh is not running (its `meshdev up` has stopped)"
WAITING = "waiting for `meshdev up` to start the mesh"


class SessionWatchController(WatchController):
    """The dashboard's controller (tui/controllers.py) for a session run elsewhere: a watch
    (nothing to start, stop or act on) that knows the session."""

    def __init__(
        self,
        mesh_name: str,
        mesh: Mesh | None = None,
        *,
        poll_every: float = POLL_EVERY,
        wall_clock: Callable[[], float] = time.time,
        keys_url: str | None = None,
    ) -> None:
        super().__init__(mesh_name, mesh)
        # `up --web`'s tabs: the demo keys act in that `up` (tui/remote_keys.py).
        self._keys_url = keys_url
        self._keys: RemoteKeys | None = None
        # Where the pods' logs are read (files, or the engine's): the session's runtime, found
        # from its state in a thread (a Docker client's first ping may take seconds).
        self._runtime: asyncio.Task[Runtime | None] | None = None
        # Wall-clock times at which pods down for a restart get their next try (a countdown).
        self._retry_at: dict[str, float] = {}
        self.mesh_name = mesh_name
        self.poll_every = poll_every
        self._wall_clock = wall_clock
        self._stamp: tuple[int, int, int] | None = None
        self._state: dict[str, Any] | None = None
        self._gone = False
        self._targets: list[ProxyTarget] = []
        self._facts: list[PodFacts] = []
        self._states: dict[str, PodState] = {}
        self._seen_reload: object = None
        self._by_key: dict[str, PodState] = {}
        self._seen_rolls: dict[str, object] = {}
        self._model_version: int | None = None
        # The file's model as last loaded; `_mesh` is it with the weights the session applied.
        self._file_mesh: Mesh | None = mesh
        self.reload_text = "reading the session's state"
        self.reload_ok = True
        self.reload_at: float | None = None

    @property
    def commands(self) -> DemoKeys | None:
        return self._keys

    @property
    def log_reader(self) -> LogReader | None:
        return self._logs

    async def _logs(self, pod: str, container: Container) -> AsyncIterator[str]:
        # The Logs view follows a pod only once the pods are listed, from the same state.
        runtime = await self._runtime if self._runtime is not None else None
        if runtime is None:
            yield f"(no logs: this mesh's {self._runtime_kind} runtime cannot be reached from here)"
            return
        async for line in runtime.logs(pod, container):
            yield line

    @property
    def _runtime_kind(self) -> str:
        kind = self._state.get("runtime") if self._state is not None else None
        return kind if isinstance(kind, str) else "unknown"

    @property
    def ingress_url(self) -> str | None:
        url = self._state.get("ingress_url") if self._state is not None else None
        return url if isinstance(url, str) else None

    @property
    def app(self) -> DashboardApp:
        return attached(self._app)

    @property
    def state_path(self) -> Path:
        return mesh_dir(self.mesh_name) / STATE_FILE

    def begin(self) -> None:
        self.poll()
        self.app.run_telemetry()
        self.app.set_interval(self.poll_every, self.poll)

    def header(self, view: MeshView | None) -> HeaderFacts:
        state = self._state or {}
        return header_facts(
            view,
            mesh=self.mesh_name,
            file=str(state.get("file", "")),
            runtime=str(state.get("runtime", "")),
            version=_int(state.get("version")),
            ingress=self.ingress_url,
            reload=self.reload_text,
            reload_ok=self.reload_ok,
            reload_at=self.reload_at,
        )

    def show_pods(self) -> None:
        version = _int(self._state.get("version")) if self._state is not None else 0
        states = dict(self._states)
        now = self._wall_clock()
        for name, at in self._retry_at.items():
            # The countdown as `up` shows it, from when the session wrote it.
            state = states.get(name)
            if state is not None:
                when = f"next try in {max(0, round(at - now))} s"
                states[name] = replace(
                    state, detail=", ".join(w for w in (state.detail, when) if w)
                )
        self.app.dashboard.show_pods(self._facts, states, version)

    # -- following the state file -------------------------------------------------------------

    def poll(self) -> None:
        """Read the state file if it changed since the last look, and show what is new."""
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            self._lost()
            return
        # Every write is a new file renamed over the old one: its inode tells two writes apart
        # that land within one tick of the clock with the same size.
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            state = read_state(self.mesh_name)
            if state is None:
                return  # not a state (being replaced, or not ours): the next look will do
            self._stamp = stamp
            self._follow(state, st.st_mtime)
        elif self._retry_at:
            self.show_pods()  # the restart countdowns
        pid = self._state.get("pid") if self._state is not None else None
        if isinstance(pid, int) and not alive(pid):
            # `up` was killed (kill -9): its state file stays, and nothing serves the mesh.
            self._lost()

    def _follow(self, state: dict[str, Any], written_at: float) -> None:
        before = self._state
        if before is not None and before.get("pid") != state.get("pid"):
            # Another `up` of the mesh: what was seen of the last one is not news of this one.
            self._seen_reload, self._seen_rolls, self._by_key = None, {}, {}
            self._model_version, self._runtime = None, None
        self._gone = False
        self._state = state
        self._keys_for(state.get("token"))
        self._follow_model(state)
        file = state.get("file")
        if self._runtime is None and isinstance(file, str):
            self._runtime = asyncio.get_running_loop().create_task(
                asyncio.to_thread(running_runtime, self.mesh_name, Path(file), state)
            )
        self._pods(state, written_at)
        # The first read of a session tells what happened before this dashboard opened: events
        # and banners, but no toasts (old news).
        first = self._seen_reload is None and not self._seen_rolls
        self._reload(state.get("last_reload"), first)
        self._rolls(state.get("last_rolls"), first)
        self.app.show_header()
        self.show_pods()

    def _keys_for(self, token: object) -> None:
        """`up --web`'s tabs: the keys act there with the session's token (a new one for a new
        session)."""
        if self._keys_url is None or not isinstance(token, str):
            return
        if self._keys is None or self._keys.token != token:
            self._keys = RemoteKeys(self._keys_url, token)
            self.app.dashboard.commands = self._keys

    def _lost(self) -> None:
        if self._gone:
            return
        self._gone = True
        self._stamp = None
        if self._state is None:
            # A tab of `up --web` opened while that `up` starts: the state comes when it is up.
            self.reload_text, self.reload_ok = WAITING, True
        else:
            self.reload_text, self.reload_ok, self.reload_at = GONE, False, self.app.clock()
            self.app.add_event("info", GONE)
        self.app.show_header()

    def _follow_model(self, state: Mapping[str, Any]) -> None:
        # Each applied version is a new model (its policies, its pods' services); a file that
        # no longer loads keeps the last one. The canary key's weights are in no file: the
        # session's state has the splits it applied, and they explain the routes here, as
        # they do in `up`'s own dashboard (config/splits.py).
        version = _int(state.get("version"))
        file = state.get("file")
        if version == self._model_version or not isinstance(file, str):
            return
        with contextlib.suppress(MeshInvalid, OSError):
            self._file_mesh = load_mesh(file)
        if self._file_mesh is not None:
            self._mesh = with_weights(self._file_mesh, state.get("weights"))
        self._model_version = version

    def _pods(self, state: Mapping[str, Any], written_at: float) -> None:
        pods = [p for p in state.get("pods", ()) if isinstance(p, dict) and "name" in p]
        facts = [_facts(p) for p in pods]
        # By the plan's key (a rolled pod is named key-rN while it runs, key once it is down).
        entries = [(str(p.get("key") or p["name"]), p) for p in pods]
        health = state.get("health")
        health = health if isinstance(health, dict) else {}
        specs = {s.name: s for s in plan.pods(self._mesh)} if self._mesh is not None else {}
        for key in state.get("down", ()):
            # A pod of the plan that is down, waiting for its restart (as `up` lists it).
            h = health.get(key)
            if not isinstance(key, str) or not isinstance(h, dict):
                continue
            spec = specs.get(key)
            service, subset = (spec.service, spec.subset) if spec is not None else ("", None)
            facts.append(PodFacts(key, service, subset, "", False, 0, None))
            entries.append((key, {"name": key, "service": service, **h}))
        by_key = {key: _pod_state(p) for key, p in entries}
        for key, now in by_key.items():
            if (text := left_running(self._by_key.get(key), now)) is not None:
                self.app.add_event("exit", text)
        self._by_key = by_key
        self._facts, self._states = facts, {s.pod: s for s in by_key.values()}
        self._retry_at = {
            str(p["name"]): written_at + float(p["next_try_in"])
            for _, p in entries
            if isinstance(p.get("next_try_in"), int | float) and p.get("state") != "running"
        }
        targets = [(str(p["name"]), str(p["admin_url"])) for p in pods if p.get("admin_url")]
        if targets != self._targets:
            self._targets = targets
            self.app.source.set_targets(targets)

    def _reload(self, last: object, first: bool) -> None:
        if not isinstance(last, dict) or last.get("at") == self._seen_reload:
            return
        self._seen_reload = last.get("at")
        at = self._when(last.get("at"))
        app = self.app
        if last.get("ok") is False and "sidecars" not in last:
            # A save that did not validate: nothing was applied (session.follow_file).
            errors = tuple(str(e) for e in last.get("errors", ()))
            version = _int(last.get("version"))
            app.dashboard.show_banner(self._file_name, version, errors)
            text = rejected_text(errors)
            self._said(text, False, at)
            app.add_event("rejected", text)
            for error in errors:
                app.add_event("rejected", error)
            return
        try:
            report = ReloadReport.from_json(last)
        except (KeyError, TypeError, ValueError):
            return
        if last.get(BY_KEY):
            # The canary key's apply: no save of the file, so its banner (if any) stays, and
            # the words are `up`'s own dashboard's.
            text = key_applied_text(report)
            self._said(text, report.ok, at)
            app.add_event("reload" if report.ok else "rejected", text)
            return
        if report.ok:
            app.dashboard.clear_banner()
            if not first:
                app.notify(report.summary(), title="mesh.yaml reloaded", timeout=4)
        else:
            app.dashboard.show_banner(self._file_name, report.version, report.errors)
        self._said(report.summary(), report.ok, at)
        app.add_event("reload" if report.ok else "rejected", report.summary())

    def _rolls(self, rolls: object, first: bool) -> None:
        if not isinstance(rolls, dict):
            return
        for service, doc in sorted(rolls.items()):
            if not isinstance(doc, dict) or self._seen_rolls.get(service) == doc.get("at"):
                continue
            self._seen_rolls[service] = doc.get("at")
            try:
                report = RollReport.from_json(doc)
            except (KeyError, TypeError, ValueError):
                continue
            tell_roll(self.app, report, toast=not first)

    def _said(self, text: str, ok: bool, at: float | None) -> None:
        self.reload_text, self.reload_ok, self.reload_at = text, ok, at

    def _when(self, at: object) -> float | None:
        """A wall-clock time of the state file on the app's clock (the header's ages)."""
        if not isinstance(at, int | float):
            return None
        return self.app.clock() - max(0.0, self._wall_clock() - float(at))

    @property
    def _file_name(self) -> str:
        file = self._state.get("file") if self._state is not None else None
        return Path(file).name if isinstance(file, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _facts(pod: Mapping[str, Any]) -> PodFacts:
    digest = pod.get("config_hash")
    return PodFacts(
        name=str(pod["name"]),
        service=str(pod.get("service") or ""),
        subset=pod.get("subset") if isinstance(pod.get("subset"), str) else None,
        address=str(pod.get("address") or ""),
        routable=pod.get("routable") is True,
        version=_int(pod.get("config_version")),
        config_hash=digest if isinstance(digest, str) else None,
    )


def _pod_state(pod: Mapping[str, Any]) -> PodState:
    """A pod's state as the session's control plane last wrote it (its healing record; the
    countdown to its next try is added when shown)."""
    exit_code = pod.get("exit_code")
    restarts = _int(pod.get("restarts"))
    detail = ""
    if restarts and exit_code is not None:
        detail = f"last exit {exit_code}"
    return PodState(
        pod=str(pod["name"]),
        service=str(pod.get("service") or ""),
        subset=pod.get("subset") if isinstance(pod.get("subset"), str) else None,
        state=str(pod.get("state") or "running"),
        address=str(pod.get("address") or ""),
        admin_url=str(pod.get("admin_url") or ""),
        restarts=restarts,
        detail=detail,
    )
