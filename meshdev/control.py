"""The reconcile loop: make the running pods and every sidecar's config match a mesh.

`up` starts everything; `apply` moves a running mesh to a new model: new pods start and must
be ready before they get traffic, pods that go away are taken out of every sidecar's endpoints
and drained before they stop, and only sidecars whose rendered config changed get a push.
Each push is acknowledged by the sidecar with the version and hash it now serves.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

import yaml

from meshdev import plan
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.config.model import Mesh
from meshdev.plan import PodSpec
from meshdev.runtime import loopback
from meshdev.runtime.base import Progress, Runtime, RuntimeFailure, StartedPod
from meshdev.templates import template

TOKEN_HEADER = "x-meshdev-token"
# Envoy's gauge of requests a listener is serving now; zero means a pod is drained.
_IN_FLIGHT = r"^http\.(inbound|ingress)\.downstream_rq_active$"


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

    @property
    def name(self) -> str:
        return self.spec.name


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

    def summary(self) -> str:
        if not self.ok:
            return f"reload failed, still serving v{self.version}: " + "; ".join(self.errors)
        text = (
            f"applied v{self.version} to {self.serving}/{self.sidecars} sidecars "
            f"in {self.elapsed_ms:.0f} ms ({self.pushed} changed)"
        )
        if self.started or self.stopped:
            text += f"; started {len(self.started)}, stopped {len(self.stopped)} pods"
        return text

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
        }


@dataclass
class ControlPlane:
    runtime: Runtime
    token: str
    progress: Progress = field(default=lambda _msg: None)
    ready_timeout: float = 60.0
    drain_timeout: float = 5.0
    mesh: Mesh | None = None
    version: int = 0
    pods: dict[str, Pod] = field(default_factory=dict)
    _generation: dict[str, int] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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
            await self.runtime.prepare(mesh, specs, self.progress)
            self.mesh = mesh
            self.version = 1
            self.progress(f"starting {len(specs)} pods")
            await self._start([(s.name, s) for s in specs])
            for pod in self.pods.values():
                pod.routable = True
            return await self._push(t0, started=tuple(s.name for s in specs))

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

    async def down(self) -> list[str]:
        """Remove everything of the mesh (the runtime's teardown); returns what was removed."""
        async with self._lock:
            removed = await self.runtime.teardown()
            self.pods.clear()
            return removed

    def snapshot(self) -> dict[str, Any]:
        """What `meshdev status` reads of a running session (written to its state file)."""
        return {
            "version": self.version,
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
                }
                for p in self.pods.values()
            ],
        }

    # -- starting and stopping --------------------------------------------------------------

    def _instance(self, spec: PodSpec) -> PodSpec:
        gen = self._generation.get(spec.name, 0) + 1
        self._generation[spec.name] = gen
        if any(p.name == spec.name for p in self.pods.values()):
            return replace(spec, name=f"{spec.name}-r{gen}")
        return spec

    async def _start(self, specs: list[tuple[str, PodSpec]]) -> list[Pod]:
        """Start pods in parallel and wait until each is ready; on any failure stop them all."""
        assert self.mesh is not None
        endpoints = self._endpoints()

        async def one(key: str, spec: PodSpec) -> Pod:
            placement = self.runtime.planned_placement(spec)
            cfg = self._render(spec, placement, endpoints)
            started = await self.runtime.start_pod(spec, cfg.model_dump_json().encode(), self.token)
            pod = Pod(key, spec, started, hash=cfg.content_hash(), version=cfg.version)
            self.pods[spec.name] = pod
            await self.runtime.wait_ready(spec, started, self.ready_timeout)
            self.progress(f"pod {spec.name} ready")
            return pod

        results = await asyncio.gather(*(one(k, s) for k, s in specs), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for _, spec in specs:
                pod = self.pods.pop(spec.name, None)
                if pod is not None:
                    await self.runtime.stop_pod(spec.name)
            first = failures[0]
            if isinstance(first, RuntimeFailure | asyncio.CancelledError):
                raise first
            raise RuntimeFailure(f"starting pods failed: {first!r}") from first
        return [r for r in results if isinstance(r, Pod)]

    async def _stop(self, pod: Pod) -> None:
        self.pods.pop(pod.name, None)
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

    def _endpoints(self) -> list[tuple[PodSpec, plan.Placement]]:
        return [(p.spec, p.started.placement) for p in self.pods.values() if p.routable]

    def _render(
        self,
        spec: PodSpec,
        placement: plan.Placement,
        endpoints: list[tuple[PodSpec, plan.Placement]],
    ) -> SidecarConfig:
        assert self.mesh is not None
        return plan.render(
            self.mesh, spec, placement, endpoints, version=self.version, defaults=load_defaults()
        )

    async def _push(
        self, t0: float, *, started: tuple[str, ...] = (), stopped: tuple[str, ...] = ()
    ) -> ReloadReport:
        endpoints = self._endpoints()
        targets: list[tuple[Pod, SidecarConfig]] = []
        for pod in self.pods.values():
            cfg = self._render(pod.spec, pod.started.placement, endpoints)
            if cfg.content_hash() != pod.hash:
                targets.append((pod, cfg))
        results = await asyncio.gather(*(self._post(p, c) for p, c in targets))
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

    async def _post(self, pod: Pod, cfg: SidecarConfig) -> str | None:
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
        pod.hash = cfg.content_hash()
        pod.version = cfg.version
        return None


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


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
