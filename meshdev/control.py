"""The reconcile loop: make the running pods and every sidecar's config match a mesh.

`up` starts everything; `apply` moves a running mesh to a new model: new pods start and must
be ready before they get traffic, pods that go away are taken out of every sidecar's endpoints
and drained before they stop, and only sidecars whose rendered config changed get a push.
Each push is acknowledged by the sidecar with the version and hash it now serves.

In a mesh with a security section every pod has a SPIFFE ID in its config, and the mesh's CA
(meshdev/security) issues it a certificate, pushed to its sidecar (POST /certs) as soon as its
admin API answers: the sidecar reports not ready until it has one. Each certificate is
re-issued and pushed again at half its life, in the background, for as long as its pod runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import yaml

from meshdev import healing, plan
from meshdev.common.backoff import Backoff
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.common.workload_certs import CERTS_PATH, WorkloadCerts
from meshdev.config.model import Mesh
from meshdev.config.splits import split_weights
from meshdev.plan import PodSpec
from meshdev.runtime import loopback
from meshdev.runtime.base import PodExit, Progress, Runtime, RuntimeFailure, StartedPod
from meshdev.runtime.paths import mesh_dir
from meshdev.security import rotation, staging
from meshdev.templates import template

if TYPE_CHECKING:
    from meshdev.security.ca import MeshCA

TOKEN_HEADER = "x-meshdev-token"
# Envoy's gauge of requests a listener is serving now; zero means a pod is drained.
_IN_FLIGHT = r"^http\.(inbound|ingress)\.downstream_rq_active$"


# Kubernetes' failureThreshold: this many failed liveness probes in a row restart the pod.
LIVENESS_FAILURES = 3


def load_defaults() -> dict[str, Any]:
    """The sidecar template (templates/sidecar.yaml), read anew so edits apply on reload."""
    data = yaml.safe_load(template("sidecar.yaml").read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise RuntimeFailure("templates/sidecar.yaml must hold a mapping")
    return data


@dataclass
class Pod:
    """One running pod instance. `key` is the plan's pod name; a replacement gets a new
    instance name so it can start (and become ready) while the old one still serves."""

    key: str
    spec: PodSpec
    started: StartedPod
    routable: bool = False
    hash: str | None = None
    version: int = 0
    # The identity its sidecar holds a certificate for, and when that certificate ends.
    spiffe_id: str | None = None
    cert_expires: datetime | None = None
    cert_renew_at: datetime | None = None
    # Renews its certificate at half its life while the pod runs (see ControlPlane._rotate).
    rotation: asyncio.Task[None] | None = field(default=None, repr=False, compare=False)
    # The config its sidecar last took (what a save that turns TLS on moves it from).
    config: SidecarConfig | None = field(default=None, repr=False, compare=False)
    # What identifies the code it runs (Runtime.code_version), when the runtime can tell.
    code: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def forget_certs(self) -> None:
        """Stop renewing its certificate (the pod stops, or its config names no identity)."""
        if self.rotation is not None:
            self.rotation.cancel()
            self.rotation = None
        self.spiffe_id = self.cert_expires = self.cert_renew_at = None


@dataclass(frozen=True)
class _CertPush:
    """How one POST /certs went: `error` in words (None: the sidecar took them); `refused`:
    the sidecar itself answered no, which another try of the same certificates will not
    change (unlike nothing answering yet, or a published port closing the connection while
    the container behind it still starts)."""

    error: str | None
    refused: bool = False


@dataclass(frozen=True)
class ReloadReport:
    version: int
    ok: bool
    sidecars: int
    serving: int  # sidecars serving this version's content
    pushed: int  # of those, how many needed a push
    elapsed_ms: float
    started: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    # Pods that crashed at start and crash-loop with their backoff (up only).
    crashed: tuple[str, ...] = ()

    def summary(self) -> str:
        if not self.ok:
            return f"reload failed, still serving v{self.version}: " + "; ".join(self.errors)
        text = (
            f"applied v{self.version} to {self.serving}/{self.sidecars} sidecars "
            f"in {self.elapsed_ms:.0f} ms ({self.pushed} changed)"
        )
        if self.started or self.stopped:
            text += f"; started {len(self.started)}, stopped {len(self.stopped)} pods"
        if self.crashed:
            text += f"; crash-looping: {', '.join(self.crashed)}"
        return text

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ReloadReport:
        """The inverse of `to_json` (a session's state file, read by another process); raises
        KeyError, TypeError or ValueError for a document that is not one."""
        return cls(
            version=int(doc["version"]),
            ok=bool(doc["ok"]),
            sidecars=int(doc["sidecars"]),
            serving=int(doc["serving"]),
            pushed=int(doc["pushed"]),
            elapsed_ms=float(doc["elapsed_ms"]),
            started=tuple(map(str, doc.get("started", ()))),
            stopped=tuple(map(str, doc.get("stopped", ()))),
            errors=tuple(map(str, doc.get("errors", ()))),
            crashed=tuple(map(str, doc.get("crashed", ()))),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "ok": self.ok,
            "sidecars": self.sidecars,
            "serving": self.serving,
            "pushed": self.pushed,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "started": list(self.started),
            "stopped": list(self.stopped),
            "errors": list(self.errors),
            "crashed": list(self.crashed),
        }


@dataclass(frozen=True)
class RollReport:
    """How saving a service's code went: which pods were replaced (old -> new), one at a
    time; on failure the error (with the new pod's log tail) and that the rest still serve
    the code they had."""

    service: str
    ok: bool
    replaced: tuple[tuple[str, str], ...]
    elapsed_ms: float
    error: str | None = None
    # Pods that serve the old code after a failed roll (all of them, unless one failed after
    # another was replaced).
    kept: tuple[str, ...] = ()
    # When the last new pod took the last old one's place in every caller's endpoints: from
    # then on only the new code answers (the old pod's drain and stop come after).
    serving_ms: float | None = None
    # Its pods already run what the save built (the same image): none was replaced.
    unchanged: bool = False
    # A newer save of the code came while a new pod was starting: that pod was stopped (it
    # replaced nothing) so that the newest code rolls at once, not after the old code's
    # readiness timeout.
    superseded: bool = False

    def summary(self) -> str:
        if self.superseded:
            done = f" ({len(self.replaced)} replaced before it)" if self.replaced else ""
            return (
                f"{self.service}: newer code saved while a new pod was starting; that pod is "
                f"stopped{done} and the newest code rolls now"
            )
        if not self.ok:
            kept = f"{', '.join(self.kept)} keep serving" if self.kept else "nothing replaced"
            done = f"; {len(self.replaced)} replaced before it" if self.replaced else ""
            return (
                f"{self.service}: new code not rolled out ({kept}{done}); fix and save "
                f"again: {self.error}"
            )
        if self.unchanged:
            return f"{self.service}: its image did not change; its pods keep running"
        if not self.replaced:
            return f"{self.service}: no running pod to roll"
        pods = ", ".join(f"{old} -> {new}" for old, new in self.replaced)
        text = f"{self.service}: rolled {pods} in {self.elapsed_ms:.0f} ms"
        if self.serving_ms is not None:
            text += f" (only new code answering after {self.serving_ms:.0f} ms)"
        return text

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RollReport:
        """The inverse of `to_json`; raises KeyError, TypeError or ValueError for a document
        that is not one."""
        serving = doc.get("serving_ms")
        error = doc.get("error")
        return cls(
            service=str(doc["service"]),
            ok=bool(doc["ok"]),
            replaced=tuple((str(old), str(new)) for old, new in doc.get("replaced", ())),
            elapsed_ms=float(doc["elapsed_ms"]),
            error=None if error is None else str(error),
            kept=tuple(map(str, doc.get("kept", ()))),
            serving_ms=None if serving is None else float(serving),
            unchanged=bool(doc.get("unchanged", False)),
            superseded=bool(doc.get("superseded", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "ok": self.ok,
            "replaced": [list(pair) for pair in self.replaced],
            "elapsed_ms": round(self.elapsed_ms, 1),
            "error": self.error,
            "kept": list(self.kept),
            "serving_ms": None if self.serving_ms is None else round(self.serving_ms, 1),
            "unchanged": self.unchanged,
            "superseded": self.superseded,
        }


@dataclass
class ControlPlane:
    runtime: Runtime
    token: str
    progress: Progress = field(default=lambda _msg: None)
    # Told when pods changed outside up/apply (a pod went down, was restarted), so the
    # session's state (what `meshdev status` reads) follows.
    changed: Callable[[], None] = field(default=lambda: None)
    ready_timeout: float = 60.0
    # A pod not ready after this long is said to be waited for: else `up` is silent until
    # ready_timeout and a slow or deaf app looks like a hung meshdev.
    slow_start_notice: float = 10.0
    drain_timeout: float = 5.0
    # The life of a workload certificate in seconds; None: the mesh's security.cert_ttl.
    cert_ttl: float | None = None
    # Full-jitter backoff (base, cap) between the tries of a failed renewal push.
    cert_retry: tuple[float, float] = (rotation.RETRY_BASE, rotation.RETRY_CAP)
    # The mesh's CA, loaded from (or made in) its state folder when a pod first needs it.
    ca: MeshCA | None = None
    mesh: Mesh | None = None
    version: int = 0
    pods: dict[str, Pod] = field(default_factory=dict)
    # How often the runtime is asked which pods' containers exited (self-healing).
    watch_interval: float = 0.5
    # How often pods with a liveness_path are asked (Kubernetes' periodSeconds).
    liveness_period: float = 2.0
    # What is remembered of each pod of the plan across its restarts, by its key.
    health: dict[str, healing.PodHealth] = field(default_factory=dict)
    _generation: dict[str, int] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _supervisor: asyncio.Task[None] | None = None
    _healing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    # -- public ---------------------------------------------------------------------------

    async def up(self, mesh: Mesh) -> ReloadReport:
        """Start every pod of `mesh`, wait until each is ready, then push every sidecar its
        config. Raises RuntimeFailure when a pod cannot start or is not ready in time (the
        pods of that start are stopped again); a sidecar that is unreachable, rejects its
        config or answers garbage raises nothing: it is in the report's errors."""
        async with self._lock:
            t0 = time.perf_counter()
            removed = await self.runtime.remove_leftovers()
            if removed:
                self.progress(f"removed {len(removed)} leftovers of an earlier run")
            specs = plan.pods(mesh)
            if _secured(mesh, specs):
                # Before anything starts: a CA that cannot be used stops `up` at once.
                self._authority(mesh.name)
            await self.runtime.prepare(mesh, specs, self.progress)
            self.mesh = mesh
            self.version = 1
            self.progress(f"starting {len(specs)} pods")
            crashed = await self._start_tolerating_crashes(specs, self._first_renderer(specs))
            for pod in self.pods.values():
                pod.routable = True
            report = await self._push(t0, started=tuple(p.name for p in self.pods.values()))
            self._supervisor = asyncio.create_task(self._supervise(), name="meshdev-supervisor")
            for spec, exc in crashed:
                # As Kubernetes: the pod crash-loops with its backoff while the rest serves.
                delay = self._health(spec.name).exited(exc.exit_code)
                self.progress(
                    f"pod {spec.name}: crashed at start (exit {exc.exit_code}); it is retried "
                    f"with a backoff while the rest of the mesh serves: {exc}"
                )
                self._healing[spec.name] = asyncio.create_task(
                    self._heal_later(spec.name, delay), name=f"heal {spec.name}"
                )
            return replace(report, crashed=tuple(spec.name for spec, _ in crashed))

    async def apply(self, mesh: Mesh) -> ReloadReport:
        """Move the running mesh to `mesh`; on failure the previous state keeps serving.
        A pod that cannot start (RuntimeFailure) and a failed config push are reported in
        the returned report's errors, not raised."""
        async with self._lock:
            t0 = time.perf_counter()
            wanted = {s.name: s for s in plan.pods(mesh)}
            current = {p.key: p for p in self.pods.values()}
            added = [s for k, s in wanted.items() if k not in current]
            replaced = [s for k, s in wanted.items() if k in current and _changed(current[k], s)]
            gone = [p for k, p in current.items() if k not in wanted or wanted[k] in replaced]
            previous = (self.mesh, self.version)
            self.mesh, self.version = mesh, self.version + 1
            fresh: list[Pod] = []
            try:
                if _secured(mesh, list(wanted.values())):
                    self._authority(mesh.name)
                if added or replaced:
                    await self.runtime.prepare(mesh, added + replaced, self.progress)
                    # A new gateway needs the old one's published port: it cannot overlap.
                    for pod in [p for p in gone if p.spec.is_ingress]:
                        await self._stop(pod)
                        gone.remove(pod)
                    fresh = await self._start(
                        [(s.name, self._instance(s)) for s in added + replaced]
                    )
            except RuntimeFailure as exc:
                self.mesh, self.version = previous
                return ReloadReport(
                    self.version, False, len(self.pods), 0, 0, _ms(t0), errors=(str(exc),)
                )
            for pod in fresh:
                pod.routable = True
            for pod in gone:
                pod.routable = False
            report = await self._push(
                t0,
                started=tuple(p.name for p in fresh),
                stopped=tuple(p.name for p in gone),
            )
            await asyncio.gather(*(self._drain_and_stop(p) for p in gone))
            return report

    async def roll(self, service: str, superseded: asyncio.Event | None = None) -> RollReport:
        """Replace the pods of `service` with pods running its code as it is now (its image
        rebuilt first, when it has a build), one at a time and through the drain path of a
        reload: the new pod is ready, it joins every caller's endpoints as the old one leaves
        them, the old one drains and stops (while the next new pod starts). A 1-replica
        service thus never has no pod. A new pod that crashes or is not ready replaces
        nothing: it is stopped, the old pods keep serving, and the report says why (with its
        log tail).

        `superseded` set (newer code was saved) while a new pod starts stops that pod and
        ends the roll there: waiting out the readiness timeout of code already replaced
        would hold the lock, and so every save, for up to a minute."""
        async with self._lock:
            t0 = time.perf_counter()
            mesh = self.mesh
            wanted = [s for s in plan.pods(mesh) if s.service == service] if mesh else []
            if mesh is None or not wanted:
                return RollReport(service, True, (), _ms(t0))
            replaced: list[tuple[str, str]] = []
            serving: float | None = None

            def failed(error: str | None, *, newer: bool = False) -> RollReport:
                new = {name for _, name in replaced}
                # By name: the pods' order is the order they last (re)started in.
                kept = tuple(
                    sorted(
                        p.name
                        for p in self.pods.values()
                        if p.spec.service == service and p.routable and p.name not in new
                    )
                )
                return RollReport(
                    service, False, tuple(replaced), _ms(t0), error, kept, superseded=newer
                )

            try:
                # The runtime's prepare rebuilds a build service's image (the engine's layer
                # cache keeps it to the layers the save changed).
                await self.runtime.prepare(mesh, wanted, self.progress)
            except RuntimeFailure as exc:
                return failed(str(exc))
            running = [p for p in self.pods.values() if p.spec.service == service and p.routable]
            if len(running) == len(wanted) and all(
                p.code is not None and p.code == self.runtime.code_version(p.spec) for p in running
            ):
                # The rebuild made the very image they run (the save changed nothing that
                # goes into it, e.g. a file the build ignores): nothing to replace.
                return RollReport(service, True, (), _ms(t0), unchanged=True)
            # Old pods out of every endpoint list drain and stop while the next new pod
            # starts: that overlap keeps the service at its replica count all along.
            draining: list[asyncio.Task[None]] = []
            try:
                for spec in wanted:
                    old = next(
                        (p for p in self.pods.values() if p.key == spec.name and p.routable),
                        None,
                    )
                    if old is None:
                        waiting = self._waiting_restart(spec.name)
                        if waiting is not None and not self._runs(spec.name):
                            # Crash-looping: this save may be the fix its backoff waits for.
                            error = await self._restart_now(spec, waiting)
                            if error is not None:
                                return failed(error)
                            replaced.append((f"{spec.name} (crash-looping)", spec.name))
                            serving = _ms(t0)
                        continue
                    if superseded is not None and superseded.is_set():
                        return failed(None, newer=True)
                    try:
                        [fresh] = await self._start(
                            [(spec.name, self._instance(spec))], superseded=superseded
                        )
                    except RuntimeFailure as exc:
                        return failed(str(exc))
                    except Superseded:
                        return failed(None, newer=True)
                    fresh.routable = True
                    old.routable = False
                    # One push: the new pod into every caller's endpoints, the old one out.
                    pushed = await self._push(t0, started=(fresh.name,), stopped=(old.name,))
                    serving = _ms(t0)
                    for error in pushed.errors:
                        self.progress(f"{service}: rolling {old.name}: {error}")
                    draining.append(asyncio.create_task(self._drain_and_stop(old)))
                    replaced.append((old.name, fresh.name))
                    self.changed()
            finally:
                await asyncio.gather(*draining)
                if draining:
                    self.changed()
            return RollReport(service, True, tuple(replaced), _ms(t0), serving_ms=serving)

    def _runs(self, key: str) -> bool:
        return any(p.key == key for p in self.pods.values())

    def _waiting_restart(self, key: str) -> str | None:
        """The name its restart task is kept under, if the pod of the plan `key` is down
        waiting for one: the key itself (crashed at start) or the instance that exited
        (`key-rN`, see _instance)."""
        instance = re.compile(rf"{re.escape(key)}(-r\d+)?")
        return next((name for name in self._healing if instance.fullmatch(name)), None)

    async def _restart_now(self, spec: PodSpec, waiting_as: str) -> str | None:
        """Start the crash-looping pod `spec` at once rather than when its backoff ends (the
        lock held); on failure its backoff goes on, longer. Returns the failure in words."""
        waiting = self._healing.pop(waiting_as)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        health = self._health(spec.name)
        health.restarting()
        try:
            [fresh] = await self._start([(spec.name, spec)])
        except RuntimeFailure as exc:
            delay = health.exited(exc.exit_code)
            self._healing[spec.name] = asyncio.create_task(
                self._heal_later(spec.name, delay), name=f"heal {spec.name}"
            )
            self.changed()
            return f"{exc}\n(next try in {delay:g} s, or at the next save)"
        fresh.routable = True
        await self._push(time.perf_counter(), started=(fresh.name,))
        health.running()
        self.changed()
        return None

    async def down(self) -> list[str]:
        """Remove everything of the mesh (the runtime's teardown); returns what was removed."""
        await self._stop_supervising()
        async with self._lock:
            for pod in self.pods.values():
                pod.forget_certs()
            removed = await self.runtime.teardown()
            self.pods.clear()
            return removed

    def snapshot(self) -> dict[str, Any]:
        """What `meshdev status` reads of a running session (written to its state file):
        every pod of the plan, also one that is down waiting for its restart."""
        running = {p.key for p in self.pods.values()}
        return {
            "version": self.version,
            # The splits it applied: the canary key's weights are in no file (config/splits.py).
            "weights": split_weights(self.mesh),
            "health": {key: h.to_json() for key, h in self.health.items()},
            "down": sorted(
                key
                for key, h in self.health.items()
                if key not in running and h.state != healing.RUNNING
            ),
            "pods": [
                {
                    "name": p.name,
                    "key": p.key,
                    "service": p.spec.service or None,
                    "subset": p.spec.subset,
                    "protocol": p.spec.protocol if p.spec.service else None,
                    "address": p.started.placement.address,
                    "admin_url": p.started.admin_url,
                    "routable": p.routable,
                    "config_version": p.version,
                    "config_hash": p.hash,
                    "spiffe_id": p.spiffe_id,
                    "cert_expires": _iso(p.cert_expires),
                    **self._health(p.key).to_json(),
                }
                for p in self.pods.values()
            ],
        }

    def _health(self, key: str) -> healing.PodHealth:
        health = self.health.get(key)
        if health is None:
            health = self.health[key] = healing.PodHealth()
        return health

    # -- self-healing -------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Restart pods whose app or sidecar exited, or whose liveness probe keeps failing,
        as Kubernetes does (healing.py)."""
        last_probe = time.monotonic()
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                exits = await self.runtime.exits()
            except RuntimeFailure as exc:
                self.progress(f"cannot watch the pods: {exc}")
                continue
            if time.monotonic() - last_probe >= self.liveness_period:
                last_probe = time.monotonic()
                exits += await self._liveness_failures()
            for gone in exits:
                pod = self.pods.get(gone.pod)
                if pod is None or not pod.routable or gone.pod in self._healing:
                    continue  # being replaced, drained or healed already
                self._healing[gone.pod] = asyncio.create_task(
                    self._heal(pod, gone), name=f"heal {gone.pod}"
                )

    async def _liveness_failures(self) -> list[PodExit]:
        """Pods whose liveness_path failed LIVENESS_FAILURES times in a row (asked through
        their sidecar's /app-health, straight to the app, as Istio rewrites probes)."""
        pods = [p for p in self.pods.values() if p.routable and p.spec.liveness_path]

        async def alive(pod: Pod) -> bool:
            path = quote(pod.spec.liveness_path or "/", safe="/")
            url = f"{pod.started.admin_url}/app-health?path={path}"
            try:
                answer = await loopback.request("GET", url, timeout=2)
            except (OSError, loopback.LoopbackError):
                return False
            return answer.status == 200

        out = []
        for pod, ok in zip(pods, await asyncio.gather(*(alive(p) for p in pods)), strict=True):
            health = self._health(pod.key)
            health.liveness_failures = 0 if ok else health.liveness_failures + 1
            if health.liveness_failures >= LIVENESS_FAILURES:
                health.liveness_failures = 0
                self.progress(
                    f"pod {pod.name}: its liveness probe {pod.spec.liveness_path} failed "
                    f"{LIVENESS_FAILURES} times in a row"
                )
                out.append(PodExit(pod.name, "app", None))
        return out

    async def _heal(self, pod: Pod, gone: PodExit) -> None:
        try:
            await self._heal_loop(pod, gone)
        finally:
            self._healing.pop(gone.pod, None)

    async def _heal_loop(self, pod: Pod, gone: PodExit) -> None:
        health = self._health(pod.key)
        delay = health.exited(gone.exit_code)
        lines = await self.runtime.last_lines(pod.name, gone.container, 5)
        when = "now" if delay == 0 else f"in {delay:g} s ({health.describe()})"
        what = (
            f"exited with code {gone.exit_code}"
            if gone.exit_code is not None
            else "does not answer its liveness probe"
        )
        self.progress(
            f"pod {pod.name}: its {gone.container} {what}; restarting {when}"
            + "".join(f"\n    {line}" for line in lines)
        )
        async with self._lock:
            if self.pods.get(pod.name) is not pod:
                return  # a reload replaced or removed it meanwhile
            # Out of every caller's endpoints first, then gone: no request waits on it.
            pod.routable = False
            await self._push(time.perf_counter())
            await self._stop(pod)
        self.changed()
        await self._restart_loop(pod.key, delay)

    async def _restart_loop(self, key: str, delay: float) -> None:
        """Start the pod of the plan `key` after `delay`, and again with its backoff for as
        long as it crashes at start; until a reload drops it or `down`."""
        health = self._health(key)
        while True:
            await asyncio.sleep(delay)
            async with self._lock:
                wanted = {s.name: s for s in plan.pods(self.mesh)} if self.mesh else {}
                spec = wanted.get(key)
                if spec is None or spec.name in self.pods:
                    self.health.pop(key, None)
                    return  # a reload removed the pod, or started it again itself
                health.restarting()
                try:
                    [fresh] = await self._start([(key, spec)])
                except RuntimeFailure as exc:
                    delay = health.exited(exc.exit_code)
                    self.progress(
                        f"pod {spec.name}: restart {health.restarts} failed; next try in "
                        f"{delay:g} s ({health.describe()}): {exc}"
                    )
                    self.changed()
                    continue
                fresh.routable = True
                await self._push(time.perf_counter(), started=(fresh.name,))
                health.running()
                self.progress(f"pod {spec.name}: restarted ({health.restarts} restarts)")
                self.changed()
                return

    async def _heal_later(self, key: str, delay: float) -> None:
        try:
            await self._restart_loop(key, delay)
        finally:
            self._healing.pop(key, None)

    async def _start_tolerating_crashes(
        self, specs: list[PodSpec], renderer: plan.Renderer
    ) -> list[tuple[PodSpec, RuntimeFailure]]:
        """Start `specs` with configs from `renderer`; a pod whose app or sidecar exits at
        start is left out (returned with its failure) rather than failing the rest. Anything
        else that keeps a pod from starting (its port taken, the engine gone, not ready in
        time) fails them all."""

        async def one(spec: PodSpec) -> RuntimeFailure | None:
            try:
                await self._start([(spec.name, spec)], renderer)
            except RuntimeFailure as exc:
                return exc
            return None

        outcomes = await asyncio.gather(*(one(s) for s in specs), return_exceptions=True)
        fatal = [
            o
            for o in outcomes
            if isinstance(o, BaseException)
            and not (isinstance(o, RuntimeFailure) and o.exit_code is not None)
        ]
        fatal += [o for o in outcomes if isinstance(o, RuntimeFailure) and o.exit_code is None]
        if fatal:
            for pod in list(self.pods.values()):
                await self._stop(pod)
            first = fatal[0]
            if isinstance(first, RuntimeFailure | asyncio.CancelledError):
                raise first
            raise RuntimeFailure(f"starting pods failed: {first!r}") from first
        return [
            (spec, o)
            for spec, o in zip(specs, outcomes, strict=True)
            if isinstance(o, RuntimeFailure)
        ]

    async def _stop_supervising(self) -> None:
        tasks = [t for t in (self._supervisor, *self._healing.values()) if t is not None]
        self._supervisor = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._healing.clear()

    # -- starting and stopping --------------------------------------------------------------

    def _instance(self, spec: PodSpec) -> PodSpec:
        gen = self._generation.get(spec.name, 0) + 1
        self._generation[spec.name] = gen
        if any(p.name == spec.name for p in self.pods.values()):
            return replace(spec, name=f"{spec.name}-r{gen}")
        return spec

    async def _start(
        self,
        specs: list[tuple[str, PodSpec]],
        renderer: plan.Renderer | None = None,
        superseded: asyncio.Event | None = None,
    ) -> list[Pod]:
        """Start pods in parallel and wait until each is ready; on any failure stop them all.
        `renderer`: what renders their configs (by default, this version's with the pods
        routable now as endpoints). `superseded` set while they are not ready yet stops them
        all too (raises Superseded)."""
        assert self.mesh is not None
        if renderer is None:
            renderer = self._renderer()

        async def one(key: str, spec: PodSpec) -> Pod:
            placement = self.runtime.planned_placement(spec)
            cfg = renderer.render(spec, placement)
            started = await self.runtime.start_pod(spec, cfg.model_dump_json().encode(), self.token)
            pod = Pod(
                key,
                spec,
                started,
                hash=cfg.content_hash(),
                version=cfg.version,
                config=cfg,
                code=self.runtime.code_version(spec),
            )
            self.pods[spec.name] = pod
            timeout = self._ready_timeout(spec)
            notice = asyncio.get_running_loop().call_later(
                self.slow_start_notice,
                self.progress,
                f"pod {spec.name}: not ready after {self.slow_start_notice:g} s; waiting up to "
                f"{timeout:g} s for its app and sidecar to answer",
            )
            try:
                if cfg.spiffe_id is None:
                    ready = self.runtime.wait_ready(spec, started, timeout)
                else:
                    ready = self._ready_with_certs(pod, cfg.spiffe_id)
                if not await _unless(superseded, ready):
                    raise Superseded(spec.name)
            finally:
                notice.cancel()
            self.progress(f"pod {spec.name} ready")
            return pod

        results = await asyncio.gather(*(one(k, s) for k, s in specs), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for _, spec in specs:
                pod = self.pods.pop(spec.name, None)
                if pod is not None:
                    pod.forget_certs()
                    await self.runtime.stop_pod(spec.name)
            first = failures[0]
            if isinstance(first, RuntimeFailure | Superseded | asyncio.CancelledError):
                raise first
            raise RuntimeFailure(f"starting pods failed: {first!r}") from first
        return [r for r in results if isinstance(r, Pod)]

    async def _stop(self, pod: Pod) -> None:
        self.pods.pop(pod.name, None)
        pod.forget_certs()
        await self.runtime.stop_pod(pod.name)

    async def _drain_and_stop(self, pod: Pod) -> None:
        """Wait until the pod's inbound listener has nothing in flight (or the drain timeout
        passes), then stop it."""
        deadline = time.monotonic() + self.drain_timeout
        while time.monotonic() < deadline and await self._in_flight(pod) != 0:
            await asyncio.sleep(0.05)
        await self._stop(pod)

    async def _in_flight(self, pod: Pod) -> int | None:
        """Requests the pod's listeners serve now; None when its answer cannot be read."""
        query = urlencode({"format": "json", "filter": _IN_FLIGHT})
        try:
            answer = await loopback.request(
                "GET", f"{pod.started.admin_url}/stats?{query}", timeout=1
            )
        except OSError:  # TimeoutError included
            return 0  # nothing answers: nothing left to drain
        except loopback.LoopbackError:
            # Something answers but says nothing readable: it may still be serving, so the
            # drain goes on waiting (its deadline bounds that) rather than cut requests off.
            return None
        return _active_requests(answer) if answer.status == 200 else None

    # -- configs --------------------------------------------------------------------------------

    def _first_renderer(self, specs: list[PodSpec]) -> plan.Renderer:
        """Renders the configs `up` starts its pods with: one renderer for them all (each
        renderer reads the sidecar template and builds every service's routes; one per pod
        was a third of this process's CPU in a 41-pod `up`). Where the runtime knows every
        pod's address before it starts (the process runtime), each config lists the plan's
        pods as endpoints already, so the push once they are ready changes no sidecar's
        config and is skipped: 41 sidecars were parsing and compiling their whole config a
        second time at the end of `up`. Should a pod crash at start, that push takes it out
        of the configs that list it."""
        assert self.mesh is not None
        planned = [(s, self.runtime.planned_placement(s)) for s in specs]
        if not all(where.address for _, where in planned):
            planned = []  # Docker: an address is known once its container runs
        return plan.Renderer(self.mesh, planned, version=self.version, defaults=load_defaults())

    def _renderer(self) -> plan.Renderer:
        """Renders this version's configs, with the pods routable now as endpoints: one per
        push, so what sidecars share is rendered once and the template read once."""
        assert self.mesh is not None
        endpoints = [(p.spec, p.started.placement) for p in self.pods.values() if p.routable]
        return plan.Renderer(self.mesh, endpoints, version=self.version, defaults=load_defaults())

    async def _push(
        self, t0: float, *, started: tuple[str, ...] = (), stopped: tuple[str, ...] = ()
    ) -> ReloadReport:
        renderer = self._renderer()
        targets: list[tuple[Pod, SidecarConfig]] = []
        # Each config's hash, computed once: while 40 sidecars take a push on two cores,
        # every serial step here waits for a core, and hashing again after each answer
        # was most of this process's share of a save.
        digests: dict[str, str] = {}
        for pod in self.pods.values():
            if pod.spec.is_ingress and renderer.mesh.ingress is None:
                # The save removed `ingress:`: there is no gateway config to render, and the
                # old gateway drains on the one it serves until it stops.
                continue
            cfg = renderer.render(pod.spec, pod.started.placement)
            # Only sidecars whose content changed get a push; the others keep serving it
            # under their version (the report counts them as serving this one).
            digest = cfg.content_hash()
            if digest != pod.hash:
                targets.append((pod, cfg))
                digests[pod.name] = digest
        tightens = any(staging.tightens(p.config, c) for p, c in targets)
        if tightens or any(staging.loosens(p.config, c) for p, c in targets):
            # TLS is being turned on (or off) somewhere: through PERMISSIVE, in rounds
            # (staging.py). Turning on, the first round brings identities and their
            # certificates and the next two are configs only (a certificate still being
            # retried is not asked for again); turning off, the sidecars keep their identity
            # and certificate until the last round, which forgets them where the saved config
            # names none.
            staged = staging.transitional if tightens else staging.winding_down
            first_push, last_push = (
                (self._reconfigure, self._post) if tightens else (self._post, self._reconfigure)
            )
            first = await asyncio.gather(
                *(first_push(p, staged(p.config, c, clients=False)) for p, c in targets)
            )
            await asyncio.gather(
                *(self._post(p, staged(p.config, c, clients=True)) for p, c in targets)
            )
            last = await asyncio.gather(*(last_push(p, c, digests[p.name]) for p, c in targets))
            results = [a or b for a, b in zip(first, last, strict=True)]
        else:
            results = await asyncio.gather(
                *(self._reconfigure(p, c, digests[p.name]) for p, c in targets)
            )
        # Pods on their way out get the new endpoints too (their in-flight requests may still
        # call out), but the mesh's count is of the pods that stay.
        staying = [p for p in self.pods.values() if p.name not in stopped]
        errors = tuple(e for (p, _), e in zip(targets, results, strict=True) if e and p in staying)
        serving = sum(1 for p in staying if p.version == self.version or _unchanged(p, targets))
        return ReloadReport(
            version=self.version,
            ok=not errors,
            sidecars=len(staying),
            serving=serving,
            pushed=sum(1 for p, _ in targets if p in staying),
            elapsed_ms=_ms(t0),
            started=started,
            stopped=stopped,
            errors=errors,
        )

    async def _reconfigure(
        self, pod: Pod, cfg: SidecarConfig, digest: str | None = None
    ) -> str | None:
        """Push `cfg`; when it names another identity than the sidecar holds a certificate
        for (a reload added the security section), the certificate follows at once. Not
        before: a sidecar takes only a certificate for the identity its config names. Until
        it arrives (a round trip), its new TLS connections fail; should the push fail, it is
        retried in the background like a renewal, and the reload reports it."""
        error = await self._post(pod, cfg, digest)
        if error is not None or cfg.spiffe_id == pod.spiffe_id:
            return error
        pod.forget_certs()
        if cfg.spiffe_id is None:
            return None
        error = await self._deliver(pod, cfg.spiffe_id)
        if error is not None:
            pod.rotation = asyncio.create_task(
                self._rotate(pod, at_once=cfg.spiffe_id), name=f"certs {pod.name}"
            )
            return f"{error}; its config v{cfg.version} asks for TLS: retrying the certificate"
        return None

    async def _post(self, pod: Pod, cfg: SidecarConfig, digest: str | None = None) -> str | None:
        """Push `cfg` (whose content_hash is `digest`, when known)."""
        url = f"{pod.started.admin_url}/config"
        body = cfg.model_dump_json().encode()
        headers = {TOKEN_HEADER: self.token, "content-type": "application/json"}
        try:
            answer = await loopback.request("POST", url, body=body, headers=headers, timeout=5)
        except (TimeoutError, OSError) as exc:
            return f"{pod.name}: sidecar unreachable at {url}: {exc!r}"
        except loopback.LoopbackError as exc:
            # It answered, so it may have applied the config or not: pod.hash stays as it
            # was, which makes the next push send this config again.
            return (
                f"{pod.name}: the sidecar at {url} gave an unreadable answer to the config "
                f"push ({exc}); whether it applied v{cfg.version} is unknown"
            )
        if answer.status != 200:
            text = answer.body[:300].decode(errors="replace")
            return f"{pod.name}: config rejected ({answer.status}): {text}"
        pod.hash = digest if digest is not None else cfg.content_hash()
        pod.version = cfg.version
        pod.config = cfg
        return None

    # -- certificates -----------------------------------------------------------------------

    def _authority(self, mesh_name: str | None = None) -> MeshCA:
        """The mesh's CA, loaded at its first use: a mesh without TLS never imports the
        crypto library nor makes a CA. Raises RuntimeFailure when it cannot be used."""
        if self.ca is None:
            from meshdev.security import ca

            if mesh_name is None:
                assert self.mesh is not None
                mesh_name = self.mesh.name
            folder = mesh_dir(mesh_name)
            new = not (folder / ca.CA_FOLDER).exists()
            try:
                self.ca = ca.load_or_create(folder, mesh_name)
            except ca.CAError as exc:
                raise RuntimeFailure(str(exc)) from None
            if new:
                self.progress(f"made the mesh's CA in {self.ca.folder}")
        return self.ca

    def _ttl(self) -> float:
        if self.cert_ttl is not None:
            return self.cert_ttl
        assert self.mesh is not None
        ttl = plan.cert_ttl(self.mesh)
        return rotation.DEFAULT_CERT_TTL if ttl is None else ttl

    def _issue(self, spiffe_id: str) -> tuple[WorkloadCerts, datetime]:
        """A new certificate for `spiffe_id`, and the moment it was made."""
        issued = datetime.now(UTC)
        return self._authority().issue(spiffe_id, self._ttl()), issued

    def _ready_timeout(self, spec: PodSpec) -> float:
        """How long `spec`'s pod may take to get ready: its service's `ready_timeout`, else
        the control plane's."""
        service = self.mesh.services.get(spec.service) if self.mesh is not None else None
        if service is not None and service.ready_timeout is not None:
            return service.ready_timeout
        return self.ready_timeout

    async def _ready_with_certs(self, pod: Pod, spiffe_id: str) -> None:
        """Deliver the pod's certificate while the runtime waits for it to be ready: its
        sidecar is not ready before it has one, and the runtime's wait is what notices a pod
        that exits (and says why), so neither waits for the other."""
        deliver = asyncio.create_task(self._first_certs(pod, spiffe_id))
        ready = asyncio.create_task(
            self.runtime.wait_ready(pod.spec, pod.started, self._ready_timeout(pod.spec))
        )
        try:
            await asyncio.wait({deliver, ready}, return_when=asyncio.FIRST_EXCEPTION)
            if deliver.done():
                deliver.result()
            await ready
        finally:
            for task in (deliver, ready):
                task.cancel()
            await asyncio.gather(deliver, ready, return_exceptions=True)

    async def _first_certs(self, pod: Pod, spiffe_id: str) -> None:
        """POST the pod's first certificate as soon as its admin API answers. Raises
        RuntimeFailure when the sidecar answers no, or no answer comes for longer than the
        runtime waits for readiness (whose own failure, said with the pod's log, comes first)."""
        certs, issued = self._issue(spiffe_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout(pod.spec) + 5.0
        # Short steps: the admin API comes up within a moment of the process, and every
        # moment here is on `up`'s critical path.
        backoff = Backoff(0.02, 0.25)
        while True:
            push = await self._post_certs(pod, certs)
            if push.error is None:
                break
            if push.refused or loop.time() > deadline:
                raise RuntimeFailure(push.error)
            await asyncio.sleep(backoff.next_delay())
        self._certified(pod, spiffe_id, certs, issued)

    async def _deliver(self, pod: Pod, spiffe_id: str) -> str | None:
        """Give a running sidecar a certificate for a new identity (one try: its admin API is
        up); returns the failure in words."""
        try:
            certs, issued = self._issue(spiffe_id)
        except RuntimeFailure as exc:
            return f"{pod.name}: {exc}"
        push = await self._post_certs(pod, certs)
        if push.error is None:
            self._certified(pod, spiffe_id, certs, issued)
        return push.error

    def _certified(self, pod: Pod, spiffe_id: str, certs: WorkloadCerts, issued: datetime) -> None:
        """The sidecar holds `certs`: record them and (re)schedule their renewal."""
        expires = _leaf_expiry(certs)
        pod.spiffe_id, pod.cert_expires = spiffe_id, expires
        pod.cert_renew_at = rotation.renew_at(issued, expires)
        if pod.rotation is None or pod.rotation.done():
            pod.rotation = asyncio.create_task(self._rotate(pod), name=f"certs {pod.name}")

    async def _rotate(self, pod: Pod, *, at_once: str | None = None) -> None:
        """Renew the pod's certificate at half its life, for as long as it runs (cancelled
        when it stops); `at_once`: first get it a certificate for this identity (one whose
        delivery failed, and was already said). A failed push is retried with backoff and
        said once; the sidecar keeps serving with the certificate it has, and connections
        opened with it go on (a new one is for new handshakes only), so no request fails
        because of a renewal."""
        try:
            if at_once is not None:
                await self._renew(pod, at_once, tried=1)
            while pod.cert_renew_at is not None and pod.spiffe_id is not None:
                await rotation.sleep_until(pod.cert_renew_at)
                await self._renew(pod, pod.spiffe_id)
        except Exception as exc:  # a bug must not end renewals unseen
            self.progress(f"{pod.name}: certificate renewal stopped: {exc!r}")

    async def _renew(self, pod: Pod, spiffe_id: str, *, tried: int = 0) -> None:
        """Issue `pod` a new certificate and push it until its sidecar takes it; `tried`:
        pushes that already failed (and were said)."""
        certs, issued = self._issue(spiffe_id)
        backoff = Backoff(*self.cert_retry)
        tries = tried
        said_expired = False
        while True:
            tries += 1
            push = await self._post_certs(pod, certs)
            if push.error is None:
                break
            if tries == 1:
                self.progress(f"{pod.name}: certificate renewal failed, retrying: {push.error}")
            now = datetime.now(UTC)
            expires = pod.cert_expires
            if not said_expired and expires is not None and now >= expires:
                said_expired = True
                self.progress(
                    f"{pod.name}: its certificate expired at {_iso(expires)}: new mutual TLS "
                    "connections to and from it fail until a renewal reaches it"
                )
            await asyncio.sleep(backoff.next_delay())
            if datetime.now(UTC) >= rotation.renew_at(issued, _leaf_expiry(certs)):
                # The pending one is itself half spent: send a fresh one instead.
                certs, issued = self._issue(spiffe_id)
        if tries > 1:
            done = "renewed" if pod.cert_expires is not None else "delivered"
            self.progress(f"{pod.name}: certificate {done} after {tries} tries")
        self._certified(pod, spiffe_id, certs, issued)

    async def _post_certs(self, pod: Pod, certs: WorkloadCerts) -> _CertPush:
        url = f"{pod.started.admin_url}{CERTS_PATH}"
        # The key goes into this body and nowhere else: never into a log line or an error.
        body = json.dumps(
            {
                "ca": certs.ca,
                "cert_chain": certs.cert_chain,
                "private_key": certs.private_key.get_secret_value(),
            }
        ).encode()
        headers = {TOKEN_HEADER: self.token, "content-type": "application/json"}
        try:
            answer = await loopback.request("POST", url, body=body, headers=headers, timeout=5)
        except (TimeoutError, OSError) as exc:
            return _CertPush(f"{pod.name}: sidecar unreachable at {url}: {exc!r}")
        except loopback.LoopbackError as exc:
            return _CertPush(
                f"{pod.name}: the sidecar at {url} gave an unreadable answer to the "
                f"certificate push ({exc}); whether it took them is unknown"
            )
        if answer.status != 200:
            text = _reasons(answer.body) or answer.body[:300].decode(errors="replace").strip()
            if answer.status == 404:
                text = "this sidecar has no certificate endpoint (is it an older meshdev's?)"
            # A 503 is a sidecar still starting (or a proxy in the way): worth another try.
            return _CertPush(
                f"{pod.name}: certificates rejected ({answer.status}): {text}",
                refused=answer.status != 503,
            )
        return _CertPush(None)


def _reasons(body: bytes) -> str | None:
    """The reasons of a sidecar's JSON refusal ({"error": ..., "reasons": [...]}), joined."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    reasons = data.get("reasons") if isinstance(data, dict) else None
    if not isinstance(reasons, list) or not reasons:
        return None
    return "; ".join(str(r) for r in reasons)


def _secured(mesh: Mesh, specs: list[PodSpec]) -> bool:
    """Does any of these pods get an identity, hence a certificate of the mesh's CA?"""
    return any(plan.spiffe_id(mesh, s) is not None for s in specs)


def _leaf_expiry(certs: WorkloadCerts) -> datetime:
    from meshdev.security.ca import leaf_validity

    return leaf_validity(certs)[1]


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, as Envoy's admin API writes its timestamps."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _active_requests(answer: loopback.LoopbackResponse) -> int | None:
    """The sum of the gauges in a /stats?format=json answer; None when it is not one."""
    try:
        data = json.loads(answer.body)
    except ValueError:
        return None
    stats = data.get("stats") if isinstance(data, dict) else None
    if not isinstance(stats, list):
        return None
    values = [s["value"] for s in stats if isinstance(s, dict) and "value" in s]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return int(sum(values))


def _changed(pod: Pod, spec: PodSpec) -> bool:
    """Does the running pod differ from what the plan now wants in anything but its name?
    (For the gateway that is its published port: a container cannot change it in place.)"""
    return replace(pod.spec, name=spec.name) != spec


def _unchanged(pod: Pod, targets: list[tuple[Pod, SidecarConfig]]) -> bool:
    """Not pushed this time: it already served this version's content."""
    return all(p is not pod for p, _ in targets)


class Superseded(Exception):
    """A pod stopped before it was ready because what it runs was replaced meanwhile."""


async def _unless(event: asyncio.Event | None, work: Coroutine[Any, Any, None]) -> bool:
    """Run `work` unless `event` is set first: then `work` is cancelled and the answer is
    False. `work`'s own exception, if it ends first with one, is raised."""
    if event is None:
        await work
        return True
    task = asyncio.ensure_future(work)
    setting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((task, setting), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()  # our caller was cancelled: so is the work
        raise
    finally:
        setting.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
