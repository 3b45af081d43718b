"""`meshdev up --headless` -> `ready:` with images cached, against docker-compose in the same run.

Budgets (DESIGN.md, issue 4): the example mesh ready in <= 3 s on Docker, <= 1.5 s as local
processes, and the Docker time as a ratio to an equivalent `docker compose up -d --wait`.

1. process runtime: N runs of `meshdev up --headless --runtime process` on a copy of the example,
   timed from the process's start to its `ready:` line, then SIGTERM and wait for its exit.
2. docker runtime: one untimed warm-up run (builds and caches the images), then N timed runs the
   same way. A run during which meshdev had to build anything (the proxy image is tagged by a
   hash of the package, so an edit to meshdev/ rebuilds it) is discarded and repeated.
3. compose reference, interleaved with the docker runs: a docker-compose.yml generated from the
   same mesh with plan.pods/plan.render and the same containers meshdev creates (pods.py's
   sidecar_plan/app_plan: images, commands, env), endpoints addressed by compose DNS names,
   configs bind-mounted read-only. Debian's docker-compose 1.29.2 has no `--wait`, so this
   emulates it: `up -d`, then polls the readiness meshdev waits for: every sidecar's admin
   /ready, every app's health through its pod's inbound port, and then the ingress answering
   /items through frontend to backend.
4. breakdown: the same `ControlPlane.up` in this process on a timing wrapper of the docker
   runtime (per-phase spans, per-engine-call times, when each sidecar and app first answered,
   CPU burnt by containers / engine / host), a one-pod mesh for the uncontended cost of a pod,
   and in-container micro costs (container round trip, Python start, imports).

Everything started is removed even on failure (meshdev's SIGTERM teardown, `meshdev down`,
`docker-compose down`, then a sweep by label); the JSON lists anything that was still found.

    .venv/bin/python benchmarks/up_speed.py [--runs 5] [--base-image IMG] [--skip-process]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import docker
import yaml
from docker.errors import APIError, NotFound

from meshdev import plan
from meshdev.common.sidecar_config import ADMIN_PORT, INBOUND_PORT
from meshdev.config import load_mesh
from meshdev.config.model import Mesh
from meshdev.control import ControlPlane, load_defaults
from meshdev.plan import Placement, PodSpec
from meshdev.runtime.base import (
    LABEL_MESH,
    LABEL_POD,
    LABEL_ROLE,
    Container,
    PodExit,
    PodState,
    Progress,
    RuntimeKind,
    StartedPod,
)
from meshdev.runtime.docker.engine import connect
from meshdev.runtime.docker.images import proxy_context
from meshdev.runtime.docker.names import CONFIG_PATH
from meshdev.runtime.docker.pods import app_plan, placement, sidecar_plan
from meshdev.runtime.docker.ready import PROBE_INTERVAL_S as POLL_S
from meshdev.runtime.docker.runtime import DockerRuntime
from meshdev.runtime.process.procscan import labelled_processes
from meshdev.runtime.readiness import GRPC_HEALTH_PATH, http_status

# Run from a checkout: the e2e helpers start `meshdev up` the way the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.meshrun import EXAMPLE_DIR, MESHDEV, MeshUp, env_for, example_copy, free_port, get

DEFAULT_BASE_IMAGE = "python:3.12-slim"
COMPOSE = "docker-compose"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
LABEL_COMPOSE_SERVICE = "com.docker.compose.service"
READY_TIMEOUT_S = 300.0
# The breakdown's own probes, which place "first answered" (as often as the product polls).
FINE_POLL_S = 0.05
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2)


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "all": [round(v, 3) for v in values],
    }


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({k for row in rows for k in row})
    return {k: round(statistics.median(r[k] for r in rows if k in r), 3) for k in keys}


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- CPU accounting -------------------------------------------------------------------------


_ENGINE_DAEMONS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "runc")


def _proc_cpu(pid: int) -> tuple[str, float] | None:
    """(command name, CPU seconds used so far) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _daemon_cpu_s() -> float:
    """CPU seconds used so far by the engine's daemons (dockerd, containerd, shims)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        found = _proc_cpu(int(entry.name)) if entry.name.isdigit() else None
        if found is not None and (
            found[0] in _ENGINE_DAEMONS or found[0].startswith("containerd-shim")
        ):
            total += found[1]
    return total


def _host_busy_s() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _container_cpu(client: docker.DockerClient, label: str, key: str) -> dict[str, float]:
    """CPU seconds the containers with `label` used since they started (cgroup accounting),
    summed by the value of their label `key`."""
    out: dict[str, float] = {}
    for c in client.api.containers(all=True, filters={"label": [label]}):
        group = (c.get("Labels") or {}).get(key, "?")
        stats = client.api.stats(c["Id"], stream=False, one_shot=True)
        used = stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
        out[group] = out.get(group, 0.0) + used
    return out


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) children: docker-compose's."""
    t = os.times()
    return t.children_user + t.children_system


# How long each timed run first watches the idle machine, to tell how busy others keep it.
BACKGROUND_SAMPLE_S = 1.0


@dataclass
class CpuWindow:
    """CPU spent between start() and end(): the host's, and the parts this run can name.

    What is left unnamed is other load on the machine plus what no live process holds at the
    end: the engine's short-lived helpers (runc, iptables, docker-proxy starts) and kernel
    work (namespaces, veths, overlay mounts). `background_cores` (sampled just before) tells
    the two apart roughly."""

    at: dict[str, float] = field(default_factory=dict)
    background_cores: float = 0.0

    @staticmethod
    def _now() -> dict[str, float]:
        return {
            "busy": _host_busy_s(),
            "engine_daemons_s": _daemon_cpu_s(),
            "benchmark_and_children_s": _self_cpu_s() + _children_cpu_s(),
        }

    def start(self) -> None:
        busy = _host_busy_s()
        time.sleep(BACKGROUND_SAMPLE_S)
        self.background_cores = (_host_busy_s() - busy) / BACKGROUND_SAMPLE_S
        self.at = {k: -v for k, v in self._now().items()}

    def end(self) -> None:
        """Right when the timed span ends (reading the containers' counters takes a while)."""
        for k, v in self._now().items():
            self.at[k] += v

    def report(self, wall: float, ours: Mapping[str, float]) -> dict[str, float]:
        """`ours`: CPU seconds of the run's own processes or containers, counted since start."""
        parts = {**ours, **{k: v for k, v in self.at.items() if k != "busy"}}
        busy = self.at["busy"]
        out = {f"cpu: {k}": round(v, 3) for k, v in parts.items()}
        out["cpu: host_busy_core_s"] = round(busy, 3)
        out["cpu: unattributed_core_s"] = round(max(0.0, busy - sum(parts.values())), 3)
        out["cpu: background_cores_before"] = round(self.background_cores, 2)
        return out


# -- meshdev up as a user runs it -----------------------------------------------------------


class TimedUp(MeshUp):
    """MeshUp that also notes when each output line arrived, from just before the spawn."""

    def __init__(self, mesh_file: Path, env: dict[str, str], *extra: str) -> None:
        self.stamps: list[tuple[float, str]] = []
        self.t0 = time.perf_counter()
        super().__init__(mesh_file, env, *extra)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            self.stamps.append((time.perf_counter() - self.t0, line))
            self.lines.append(line)
            self._q.put(line)

    def at(self, prefix: str, *, last: bool = False) -> float | None:
        hits = [t for t, line in self.stamps if line.startswith(prefix)]
        if not hits:
            return None
        return hits[-1] if last else hits[0]


@dataclass
class UpRun:
    ready_s: float
    phases: dict[str, float]
    built: bool  # meshdev built an image during this run: not a cached-images run
    images: dict[str, str] = field(default_factory=dict)  # "proxy" and pod -> image


def _phases(up: TimedUp) -> dict[str, float]:
    out: dict[str, float] = {}
    first = up.stamps[0][0] if up.stamps else None
    marks = {
        "first_output": first,
        "starting_pods": up.at("starting "),
        "first_pod_ready": up.at("pod "),
        "last_pod_ready": up.at("pod ", last=True),
        "pushed": up.at("applied "),
        "ready_line": up.at("ready:"),
    }
    for key, value in marks.items():
        if value is not None:
            out[key] = round(value, 3)
    return out


def _check_items(port: int) -> None:
    status, body = get(f"http://127.0.0.1:{port}/items")
    if status != 200 or json.loads(body)["answered_by"]["service"] != "backend":
        raise RuntimeError(f"/items through the ingress answered {status}: {body[:300]}")


def _mesh_images(client: docker.DockerClient, name: str) -> dict[str, str]:
    """The images meshdev ran, read from its containers: 'proxy' and each app pod's."""
    images: dict[str, str] = {}
    for c in client.api.containers(all=True, filters={"label": [f"{LABEL_MESH}={name}"]}):
        labels = c.get("Labels") or {}
        if labels.get(LABEL_ROLE) == "app":
            images[labels[LABEL_POD]] = str(c["Image"])
        else:
            images["proxy"] = str(c["Image"])
    return images


def _image_ids(client: docker.DockerClient, tags: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for tag in tags:
        try:
            out[tag] = str(client.api.inspect_image(tag)["Id"])  # type: ignore[no-untyped-call]
        except NotFound:
            out[tag] = None
    return out


def meshdev_up(
    workdir: Path,
    name: str,
    runtime: str,
    env: dict[str, str],
    client: docker.DockerClient | None,
) -> UpRun:
    port = free_port()
    mesh_file = example_copy(workdir, name, port)
    app_tags = [f"meshdev-{name}-frontend:latest", f"meshdev-{name}-backend:latest"]
    before = _image_ids(client, app_tags) if client is not None else {}
    window = CpuWindow()
    window.start()
    up = TimedUp(mesh_file, env, "--runtime", runtime)
    try:
        up.wait_for("ready:", READY_TIMEOUT_S)
        window.end()
        ready = up.at("ready:")
        assert ready is not None
        cli = _proc_cpu(up.proc.pid)
        ours = {"meshdev_process_s": cli[1] if cli is not None else 0.0}
        if client is None:
            pods = [_proc_cpu(p.pid) for p in labelled_processes(name)]
            ours["pods_s"] = sum(c[1] for c in pods if c is not None)
        else:
            by_role = _container_cpu(client, f"{LABEL_MESH}={name}", LABEL_ROLE)
            ours.update({f"containers_{k}_s": v for k, v in by_role.items()})
        cpu = window.report(ready, ours)
        _check_items(port)
        images = _mesh_images(client, name) if client is not None else {}
    except BaseException:
        note("\n".join(up.lines[-30:]))
        raise
    finally:
        code = up.stop()
        if code != 0:
            note(f"meshdev up exited with {code}:\n" + "\n".join(up.lines[-10:]))
    built = any("building from" in line for _, line in up.stamps)
    if client is not None:
        built = built or _image_ids(client, app_tags) != before
    return UpRun(ready, {**_phases(up), **cpu}, built, images)


def meshdev_leftovers(
    client: docker.DockerClient | None, name: str, mesh_file: Path, env: dict[str, str]
) -> list[str]:
    """What of mesh `name` still exists; anything found is then removed with `meshdev down`."""
    found = [f"process {p.pid} ({p.pod} {p.role})" for p in labelled_processes(name)]
    if client is not None:
        flt: dict[str, str | list[str] | bool] = {"label": f"{LABEL_MESH}={name}"}
        found += [f"container {c.name}" for c in client.containers.list(all=True, filters=flt)]
        found += [f"network {n.name}" for n in client.networks.list(filters=flt)]
    if found:
        subprocess.run(
            [MESHDEV, "down", "--name", name, str(mesh_file)],
            capture_output=True,
            env=env,
            timeout=120,
            check=False,
        )
    return found


# -- the compose reference --------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeTargets:
    admin_urls: list[str]
    health_urls: list[str]
    items_url: str


def compose_file(
    mesh: Mesh, images: Mapping[str, str], base_image: str, folder: Path
) -> tuple[dict[str, Any], ComposeTargets]:
    """The mesh as a compose project: a service per sidecar (named after its pod, so compose DNS
    resolves the endpoints rendered below) and one per app in that sidecar's namespace."""
    specs = plan.pods(mesh)
    # Compose has no traffic capture: apps reach services through HTTP_PROXY, as meshdev's
    # Docker pods did before capture (which costs meshdev a one-shot container per pod).
    where = {
        s.name: dataclasses.replace(placement(s.name, address=s.name), captured=False)
        for s in specs
    }
    endpoints = [(s, where[s.name]) for s in specs]
    defaults = load_defaults()
    token = secrets.token_urlsafe(24)
    ingress_port = mesh.ingress.port if mesh.ingress is not None else None
    services: dict[str, Any] = {}
    admin_urls: list[str] = []
    health_urls: list[str] = []
    for spec in specs:
        cfg = plan.render(mesh, spec, where[spec.name], endpoints, version=1, defaults=defaults)
        body = cfg.model_dump_json().encode()
        config = folder / f"{spec.name}.json"
        config.write_bytes(body)
        config.chmod(0o644)  # read by the sidecar's uid 1337
        side = sidecar_plan(mesh.name, spec, images["proxy"], token, body, ingress_port)
        admin = free_port()
        admin_urls.append(f"http://127.0.0.1:{admin}")
        ports = [f"127.0.0.1:{admin}:{ADMIN_PORT}"]
        if spec.is_ingress:
            ports.append(f"127.0.0.1:{ingress_port}:{ingress_port}")
        else:
            inbound = free_port()
            ports.append(f"127.0.0.1:{inbound}:{INBOUND_PORT}")
            if spec.protocol == "grpc" and spec.health_path is None:
                # Probed as meshdev's docker runtime probes a gRPC app: its health check.
                health_urls.append(f"grpc+http://127.0.0.1:{inbound}{GRPC_HEALTH_PATH}")
            else:
                health_urls.append(f"http://127.0.0.1:{inbound}{spec.health_path or '/'}")
        services[spec.name] = {
            "image": side.image,
            "command": side.command,
            "hostname": side.hostname,
            "environment": side.environment,
            "ports": ports,
            "volumes": [f"{config}:{CONFIG_PATH}:ro"],
        }
        if spec.is_ingress:
            continue
        app = app_plan(mesh.name, spec, images[spec.name], base_image, folder)
        services[f"{spec.name}-app"] = {
            "image": app.image,
            "command": app.command,
            "environment": {**app.environment, **plan.app_env(spec, where[spec.name])},
            "init": app.init,
            "network_mode": f"service:{spec.name}",
            "depends_on": [spec.name],
        }
    targets = ComposeTargets(admin_urls, health_urls, f"http://127.0.0.1:{ingress_port}/items")
    return {"version": "2.4", "services": services}, targets


async def _ok(session: aiohttp.ClientSession, url: str, want_backend: bool = False) -> bool:
    if url.startswith("grpc+"):
        status, _ = await http_status(url.removeprefix("grpc+"), 2.0, grpc_health=True)
        return status == 200
    try:
        async with session.get(url, allow_redirects=False) as resp:
            body = await resp.read()
            if not 200 <= resp.status < 300:
                return False
            if want_backend:
                return bool(json.loads(body)["answered_by"]["service"] == "backend")
            return True
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError, TypeError):
        return False


async def compose_ready(targets: ComposeTargets, t0: float, timeout: float) -> dict[str, float]:
    """Poll as meshdev does; returns when (since t0) the sidecars, the apps and /items answered.
    /items is asked only once every pod is ready, as meshdev pushes endpoints only then."""
    deadline = time.perf_counter() + timeout
    pending = {u + "/ready": "sidecar" for u in targets.admin_urls}
    pending.update(dict.fromkeys(targets.health_urls, "app"))
    last: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=_PROBE_TIMEOUT, trust_env=False) as session:
        while pending:
            urls = list(pending)
            results = await asyncio.gather(*(_ok(session, u) for u in urls))
            now = time.perf_counter() - t0
            for url, ok in zip(urls, results, strict=True):
                if ok:
                    kind = pending.pop(url)
                    last[f"{kind}s_ready"] = now
            if time.perf_counter() > deadline:
                raise TimeoutError(f"compose: not ready after {timeout:g}s: {sorted(pending)}")
            if pending:
                await asyncio.sleep(POLL_S)
        last["pods_ready"] = time.perf_counter() - t0
        while not await _ok(session, targets.items_url, want_backend=True):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"compose: {targets.items_url} not answering through backend")
            await asyncio.sleep(POLL_S)
    last["items_ok"] = time.perf_counter() - t0
    return {k: round(v, 3) for k, v in last.items()}


class ComposeProject:
    def __init__(self, project: str, folder: Path, client: docker.DockerClient) -> None:
        self.client = client
        self.project = project
        self.folder = folder
        self.file = folder / "docker-compose.yml"

    def _compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [COMPOSE, "-p", self.project, "-f", str(self.file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run(self, mesh: Mesh, images: Mapping[str, str], base_image: str) -> dict[str, float]:
        spec, targets = compose_file(mesh, images, base_image, self.folder)
        self.file.write_text(yaml.safe_dump(spec, sort_keys=False))
        try:
            window = CpuWindow()
            window.start()
            t0 = time.perf_counter()
            res = self._compose("up", "-d")
            up_d = time.perf_counter() - t0
            if res.returncode != 0:
                raise RuntimeError(f"docker-compose up -d failed:\n{res.stderr[-2000:]}")
            marks = asyncio.run(compose_ready(targets, t0, READY_TIMEOUT_S))
            window.end()
            label = f"{COMPOSE_PROJECT_LABEL}={self.project}"
            cpu = _container_cpu(self.client, label, LABEL_COMPOSE_SERVICE)
            ours = {
                "containers_ingress_s": cpu.pop("ingress", 0.0),
                "containers_app_s": sum(v for k, v in cpu.items() if k.endswith("-app")),
                "containers_sidecar_s": sum(v for k, v in cpu.items() if not k.endswith("-app")),
            }
            return {
                "up_d_returned": round(up_d, 3),
                **marks,
                **window.report(marks["items_ok"], ours),
            }
        finally:
            self.down()

    def down(self) -> None:
        if self.file.exists():
            res = self._compose("down", "-t", "2", "--remove-orphans")
            if res.returncode != 0:
                note(f"docker-compose down failed:\n{res.stderr[-1000:]}")

    def leftovers(self) -> list[str]:
        """What of the project still exists; anything found is force-removed."""
        client = self.client
        flt: dict[str, str | list[str] | bool] = {
            "label": f"{COMPOSE_PROJECT_LABEL}={self.project}"
        }
        found: list[str] = []
        for c in client.containers.list(all=True, filters=flt):
            found.append(f"container {c.name}")
            c.remove(force=True)
        for n in client.networks.list(filters=flt):
            found.append(f"network {n.name}")
            n.remove()
        return found


# -- the breakdown: ControlPlane.up in this process, timed from the inside ----------------------


@dataclass
class Clock:
    t0: float = field(default_factory=time.perf_counter)
    marks: dict[str, float] = field(default_factory=dict)
    calls: dict[str, list[float]] = field(default_factory=dict)

    def now(self) -> float:
        return time.perf_counter() - self.t0

    @contextmanager
    def span(self, key: str) -> Iterator[None]:
        self.marks[f"{key}.begin"] = self.now()
        try:
            yield
        finally:
            self.marks[f"{key}.end"] = self.now()

    def call(self, name: str, seconds: float) -> None:
        self.calls.setdefault(name, []).append(seconds)


_TIMED_API = (
    "containers",
    "networks",
    "create_network",
    "inspect_image",
    "tag",
    "create_container",
    "put_archive",
    "start",
    "inspect_container",
    "remove_container",
)


def time_engine_calls(api: docker.APIClient, clock: Clock) -> None:
    """Wrap the engine calls meshdev makes so each one's duration lands in `clock`."""

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.call(name, time.perf_counter() - t)

        return timed

    def wrap_build(fn: Callable[..., Any]) -> Callable[..., Any]:
        # A build streams: it lasts until its output is read to the end.
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            t = time.perf_counter()
            try:
                yield from fn(*args, **kwargs)
            finally:
                clock.call("build", time.perf_counter() - t)

        return timed

    for name in _TIMED_API:
        setattr(api, name, wrap(name, getattr(api, name)))
    setattr(api, "build", wrap_build(api.build))  # noqa: B010  # mypy forbids assigning a method


async def _first_ok(session: aiohttp.ClientSession, url: str) -> None:
    while not await _ok(session, url):
        await asyncio.sleep(FINE_POLL_S)


class TimedRuntime:
    """The docker runtime with each step the control plane takes noted in a Clock, and with
    probes of its own that note when a pod's sidecar and app first answer."""

    kind: RuntimeKind = "docker"

    def __init__(self, inner: DockerRuntime, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock

    async def remove_leftovers(self) -> list[str]:
        with self.clock.span("remove_leftovers"):
            return await self.inner.remove_leftovers()

    async def prepare(self, mesh: Mesh, specs: list[PodSpec], progress: Progress) -> None:
        with self.clock.span("prepare"):
            await self.inner.prepare(mesh, specs, progress)

    def planned_placement(self, spec: PodSpec) -> Placement:
        return self.inner.planned_placement(spec)

    def code_version(self, spec: PodSpec) -> str | None:
        return self.inner.code_version(spec)

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        with self.clock.span(f"pod.{spec.name}.start_pod"):
            return await self.inner.start_pod(spec, sidecar_config, token)

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        async def note_first(what: str, url: str) -> None:
            await _first_ok(session, url)
            self.clock.marks[f"pod.{spec.name}.{what}_answered"] = self.clock.now()

        async with aiohttp.ClientSession(timeout=_PROBE_TIMEOUT, trust_env=False) as session:
            probes = [asyncio.create_task(note_first("sidecar", f"{started.admin_url}/ready"))]
            if started.inbound_url:
                health = started.inbound_url + (spec.health_path or "/")
                probes.append(asyncio.create_task(note_first("app", health)))
            try:
                with self.clock.span(f"pod.{spec.name}.wait_ready"):
                    await self.inner.wait_ready(spec, started, timeout)
                # Ours poll faster; give them a moment to land after the product's poll.
                await asyncio.wait(probes, timeout=1.0)
            finally:
                for task in probes:
                    task.cancel()
                await asyncio.gather(*probes, return_exceptions=True)

    async def exits(self) -> list[PodExit]:
        return await self.inner.exits()

    async def stop_pod(self, pod: str) -> None:
        await self.inner.stop_pod(pod)

    async def pod_states(self) -> list[PodState]:
        return await self.inner.pod_states()

    def logs(self, pod: str, container: Container) -> AsyncIterator[str]:
        return self.inner.logs(pod, container)

    async def last_lines(self, pod: str, container: Container, n: int = 20) -> list[str]:
        return await self.inner.last_lines(pod, container, n)

    async def teardown(self) -> list[str]:
        return await self.inner.teardown()


async def harness_up(mesh: Mesh, mesh_file: Path, base_image: str) -> dict[str, Any]:
    """One `ControlPlane.up` on Docker, timed from the inside; torn down before returning."""
    client = connect()
    clock = Clock()
    time_engine_calls(client.api, clock)
    runtime = DockerRuntime(mesh, mesh_file, base_image, client=client)
    timed = TimedRuntime(runtime, clock)
    control = ControlPlane(timed, secrets.token_urlsafe(24), progress=lambda _line: None)
    try:
        window = CpuWindow()
        window.start()
        clock.t0 = time.perf_counter()
        report = await control.up(mesh)
        total = clock.now()
        window.end()
        calls = {k: list(v) for k, v in clock.calls.items()}  # not the teardown's
        by_role = await asyncio.to_thread(
            _container_cpu, client, f"{LABEL_MESH}={mesh.name}", LABEL_ROLE
        )
        # benchmark_and_children_s is the control plane here: it runs in this process.
        cpu = window.report(total, {f"containers_{k}_s": v for k, v in by_role.items()})
        if not report.ok:
            raise RuntimeError(report.summary())
    finally:
        await control.down()
        client.close()
    return {"total": total, "marks": clock.marks, "calls": calls, "cpu": cpu}


def breakdown_row(result: dict[str, Any]) -> dict[str, float]:
    """One harness run as flat seconds since up() began."""
    marks: dict[str, float] = result["marks"]
    pods = sorted({k.split(".")[1] for k in marks if k.startswith("pod.")})

    def mark(key: str) -> float:
        return marks[key]

    row = {
        "remove_leftovers": mark("remove_leftovers.end") - mark("remove_leftovers.begin"),
        "prepare": mark("prepare.end") - mark("prepare.begin"),
        "total": result["total"],
    }
    ends = [mark(f"pod.{p}.wait_ready.end") for p in pods]
    starts = [mark(f"pod.{p}.start_pod.end") for p in pods]
    row["containers_started_all"] = max(starts)
    row["all_pods_ready"] = max(ends)
    row["push_after_last_ready"] = result["total"] - max(ends)
    per_pod: dict[str, list[float]] = {}
    for p in pods:
        begin = mark(f"pod.{p}.start_pod.begin")
        per_pod.setdefault("start_pod (create+config+start)", []).append(
            mark(f"pod.{p}.start_pod.end") - begin
        )
        for what in ("sidecar", "app"):
            key = f"pod.{p}.{what}_answered"
            if key in marks:
                per_pod.setdefault(f"{what} answered after start_pod", []).append(
                    marks[key] - mark(f"pod.{p}.start_pod.end")
                )
        per_pod.setdefault("wait_ready", []).append(
            mark(f"pod.{p}.wait_ready.end") - mark(f"pod.{p}.wait_ready.begin")
        )
    for key, values in per_pod.items():
        row[f"per_pod_median: {key}"] = statistics.median(values)
        row[f"per_pod_max: {key}"] = max(values)
    row.update(result["cpu"])
    return {k: round(v, 3) for k, v in row.items()}


def call_stats(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    merged: dict[str, list[float]] = {}
    for result in results:
        for name, values in result["calls"].items():
            merged.setdefault(name, []).extend(values)
    runs = len(results)
    return {
        name: {
            "calls_per_up": round(len(v) / runs, 1),
            "median_s": round(statistics.median(v), 3),
            "max_s": round(max(v), 3),
            "sum_per_up_s": round(sum(v) / runs, 3),
        }
        for name, v in sorted(merged.items())
    }


SOLO_MESH = """\
name: {name}
services:
  backend:
    build: {folder}
    command: python app.py
    port: 8080
    health_path: /healthz
"""


# On the micro benchmarks' throwaway containers, so an interrupted run's are found again.
MICRO_LABEL = {"meshdev.bench": "up_speed"}


def _timed_run(client: docker.DockerClient, image: str, args: list[str], **kw: Any) -> float:
    t = time.perf_counter()
    client.containers.run(image, args, remove=True, labels=MICRO_LABEL, **kw)
    return time.perf_counter() - t


# As a sidecar is published: admin and inbound on random ports of the host's loopback.
_TWO_PORTS: dict[str, Any] = {
    f"{ADMIN_PORT}/tcp": ("127.0.0.1",),
    f"{INBOUND_PORT}/tcp": ("127.0.0.1",),
}


def _printed(client: docker.DockerClient, image: str, code: str) -> float:
    out = client.containers.run(
        image, ["-c", code], entrypoint="python", remove=True, labels=MICRO_LABEL
    )
    return float(out.decode().strip().splitlines()[-1])


def _engine_only_pod(
    client: docker.DockerClient, image: str, network: str, n: int, with_app: bool
) -> None:
    """A pod's two containers as meshdev makes them, running `sleep` instead of Python: the
    sidecar on the network with two published ports, the app in its namespace."""
    side = client.containers.create(
        image,
        ["sleep", "600"],
        name=f"meshdev-bench-engine-{os.getpid()}-{n}",
        labels=MICRO_LABEL,
        network=network,
        ports=_TWO_PORTS,
    )
    app = None
    if with_app:
        app = client.containers.create(
            image, ["sleep", "600"], labels=MICRO_LABEL, network_mode=f"container:{side.id}"
        )
    side.start()
    if app is not None:
        app.start()


def engine_only_mesh(client: docker.DockerClient, image: str, pods: int) -> float:
    """Seconds until `pods` such pods all run, started in parallel: the engine's share of a
    mesh start, without the CPU that booting Pythons take from it."""
    network = client.networks.create(f"meshdev-bench-engine-{os.getpid()}", labels=MICRO_LABEL)
    try:
        t = time.perf_counter()
        name = network.name or ""
        with ThreadPoolExecutor(pods) as pool:
            # In a mesh the first pod is the gateway: a sidecar alone.
            jobs = [
                pool.submit(_engine_only_pod, client, image, name, n, pods == 1 or n > 0)
                for n in range(pods)
            ]
            for done in jobs:
                done.result()
        return time.perf_counter() - t
    finally:
        flt: dict[str, str | list[str] | bool] = {"label": "meshdev.bench=up_speed"}
        for c in client.containers.list(all=True, filters=flt):
            c.remove(force=True)
        network.remove()


def micro_costs(images: Mapping[str, str], base_image: str, reps: int) -> dict[str, float]:
    """What one container and one Python start cost alone, serially, nothing else running."""
    client = docker.from_env()
    app_image = images["frontend-0"]
    importing = "import time; t=time.perf_counter(); import {}; print(time.perf_counter()-t)"
    rows: list[dict[str, float]] = []
    try:
        for _ in range(reps):
            rows.append(
                {
                    "container run `true`, no network (create+start+wait+remove)": _timed_run(
                        client, base_image, ["true"], network_mode="none"
                    ),
                    "container run `true`, default bridge": _timed_run(
                        client, base_image, ["true"]
                    ),
                    "container run `true`, bridge + 2 published ports": _timed_run(
                        client, base_image, ["true"], ports=_TWO_PORTS
                    ),
                    "container run `python -c pass`, no network": _timed_run(
                        client, base_image, ["python", "-c", "pass"], network_mode="none"
                    ),
                    "sidecar image: import meshdev.sidecar.main (in-container)": _printed(
                        client,
                        images["proxy"],
                        importing.format("meshdev.sidecar.main"),
                    ),
                    "app image: import app (flask; in-container)": _printed(
                        client, app_image, importing.format("app")
                    ),
                    "engine only: 1 pod (2 containers, sleep) started": engine_only_mesh(
                        client, base_image, 1
                    ),
                    "engine only: 5 pods (9 containers, sleep) started in parallel": (
                        engine_only_mesh(client, base_image, 5)
                    ),
                }
            )
        host = subprocess.run(
            [
                sys.executable,
                "-c",
                importing.format(
                    "meshdev.cli.main, meshdev.session, meshdev.control, "
                    "meshdev.runtime.docker.runtime"
                ),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_start = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([MESHDEV, "--help"], capture_output=True, check=True)
        cli_help = time.perf_counter() - t
    finally:
        flt: dict[str, str | list[str] | bool] = {"label": "meshdev.bench=up_speed"}
        for c in client.containers.list(all=True, filters=flt):
            c.remove(force=True)
        for n in client.networks.list(filters=flt):
            n.remove()
        client.close()
    result = medians(rows)
    result["host: python -c pass"] = round(python_start, 3)
    result["host: meshdev --help (CLI start)"] = round(cli_help, 3)
    result["host: import cli+session+control+runtime.docker"] = round(float(host.stdout.strip()), 3)
    t = time.perf_counter()
    proxy_context(base_image)
    result["host: proxy image content hash (proxy_context)"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    from meshdev.runtime.select import docker_client

    probe = docker_client()
    result["host: engine probe + connect (select.docker_client)"] = round(
        time.perf_counter() - t, 3
    )
    if probe is not None:
        probe.close()
    return result


def breakdown(
    workdir: Path, name: str, base_image: str, runs: int, images: Mapping[str, str]
) -> dict[str, Any]:
    mesh_file = example_copy(workdir, name, free_port())
    mesh = load_mesh(mesh_file)
    results = [asyncio.run(harness_up(mesh, mesh_file, base_image)) for _ in range(runs)]
    solo_file = workdir / "solo.yaml"
    solo_file.write_text(SOLO_MESH.format(name=name, folder=EXAMPLE_DIR))
    solo = load_mesh(solo_file)
    solo_rows = [
        breakdown_row(asyncio.run(harness_up(solo, solo_file, base_image))) for _ in range(runs)
    ]
    return {
        "runs": runs,
        "example_mesh_s": medians([breakdown_row(r) for r in results]),
        "engine_calls": call_stats(results),
        "one_pod_alone_s": medians(solo_rows),
        "micro_s": micro_costs(images, base_image, runs),
    }


# -- main -----------------------------------------------------------------------------------------


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "missing"


def process_runs(workdir: Path, name: str, runs: int) -> dict[str, Any]:
    env = env_for(workdir)
    mesh_file = workdir / "mesh.yaml"
    times: list[float] = []
    phases: list[dict[str, float]] = []
    leftovers: list[str] = []
    for i in range(runs):
        try:
            run = meshdev_up(workdir, name, "process", env, None)
        finally:
            leftovers += meshdev_leftovers(None, name, mesh_file, env)
        times.append(run.ready_s)
        phases.append(run.phases)
        note(f"process run {i + 1}/{runs}: ready in {run.ready_s:.2f}s")
    return {"ready_s": summary(times), "phases_s": medians(phases), "leftovers": leftovers}


def docker_and_compose(
    workdir: Path, name: str, runs: int, base_image: str, skip_compose: bool
) -> dict[str, Any]:
    client = docker.from_env()
    env = {**env_for(workdir), "MESHDEV_BASE_IMAGE": base_image}
    mesh_file = workdir / "mesh.yaml"
    compose_dir = workdir / "compose"
    compose_dir.mkdir(mode=0o755)
    project = ComposeProject(f"meshdevbench{os.getpid()}", compose_dir, client)
    docker_times: list[float] = []
    phases: list[dict[str, float]] = []
    compose_rows: list[dict[str, float]] = []
    leftovers: list[str] = []
    discarded = 0
    try:
        leftovers += meshdev_leftovers(client, name, mesh_file, env)  # of a crashed earlier run
        warm = meshdev_up(workdir, name, "docker", env, client)
        leftovers += meshdev_leftovers(client, name, mesh_file, env)
        images = warm.images
        note(f"docker warm-up: ready in {warm.ready_s:.2f}s (built: {warm.built})")
        while len(docker_times) < runs:
            try:
                run = meshdev_up(workdir, name, "docker", env, client)
            finally:
                leftovers += meshdev_leftovers(client, name, mesh_file, env)
            images = run.images
            if run.built:
                # The package or the example changed under us: that run was no cached start.
                discarded += 1
                note(f"docker run discarded: meshdev built an image ({run.ready_s:.2f}s)")
                if discarded > 2 * runs:
                    raise RuntimeError("meshdev keeps rebuilding: is meshdev/ being edited?")
                continue
            docker_times.append(run.ready_s)
            phases.append(run.phases)
            line = f"docker run {len(docker_times)}/{runs}: ready in {run.ready_s:.2f}s"
            if not skip_compose:
                # Same mesh, same images as the run just before it.
                mesh = load_mesh(mesh_file)
                try:
                    compose_rows.append(project.run(mesh, images, base_image))
                finally:
                    leftovers += project.leftovers()
                line += f"; compose ready in {compose_rows[-1]['items_ok']:.2f}s"
            note(line)
    finally:
        project.down()
        leftovers += project.leftovers()
        leftovers += meshdev_leftovers(client, name, mesh_file, env)
        client.close()
    out: dict[str, Any] = {
        "docker": {
            "ready_s": summary(docker_times),
            "phases_s": medians(phases),
            "discarded_runs_that_built": discarded,
            "images": images,
        },
        "leftovers": leftovers,
    }
    if compose_rows:
        ready = [r["items_ok"] for r in compose_rows]
        out["compose"] = {
            "project": project.project,
            "ready_s": summary(ready),
            "up_d_returned_s": summary([r["up_d_returned"] for r in compose_rows]),
            "marks_s": medians(compose_rows),
        }
        out["ratio_docker_over_compose"] = round(
            statistics.median(docker_times) / statistics.median(ready), 2
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per mode (default 5)")
    parser.add_argument(
        "--base-image",
        default=os.environ.get("MESHDEV_BASE_IMAGE") or DEFAULT_BASE_IMAGE,
        help="meshdev's base image (default: $MESHDEV_BASE_IMAGE or python:3.12-slim)",
    )
    parser.add_argument("--name", default="benchup", help="the docker mesh's name")
    parser.add_argument("--skip-process", action="store_true")
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--skip-compose", action="store_true")
    parser.add_argument(
        "--breakdown-runs", type=int, default=3, help="in-process timed ups (0: no breakdown)"
    )
    args = parser.parse_args()
    if not args.skip_compose and not args.skip_docker and shutil.which(COMPOSE) is None:
        parser.error(f"{COMPOSE} is missing (apt-get install docker-compose) or --skip-compose")
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "docker": _version(["docker", "version", "--format", "{{.Server.Version}}"]),
            "compose": _version([COMPOSE, "version", "--short"]),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "runs": args.runs,
        "base_image": args.base_image,
    }
    with tempfile.TemporaryDirectory(prefix="up_speed-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # compose bind-mounts configs from here for uid 1337
        if not args.skip_process:
            folder = root / "process"
            folder.mkdir()
            result["process"] = process_runs(folder, f"benchup-proc-{os.getpid()}", args.runs)
        if not args.skip_docker:
            folder = root / "docker"
            folder.mkdir(mode=0o755)
            result.update(
                docker_and_compose(folder, args.name, args.runs, args.base_image, args.skip_compose)
            )
            if args.breakdown_runs > 0:
                folder = root / "breakdown"
                folder.mkdir()
                images = result["docker"]["images"]
                try:
                    result["breakdown"] = breakdown(
                        folder, args.name, args.base_image, args.breakdown_runs, images
                    )
                finally:
                    client = docker.from_env()
                    result.setdefault("leftovers", [])
                    result["leftovers"] += meshdev_leftovers(
                        client, args.name, folder / "mesh.yaml", env_for(folder)
                    )
                    client.close()
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["budgets"] = {
        "process_le_1_5_s": result.get("process", {}).get("ready_s", {}).get("median", 99) <= 1.5,
        "docker_le_3_s": result.get("docker", {}).get("ready_s", {}).get("median", 99) <= 3.0,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        main()
    except APIError as exc:
        sys.exit(f"the Docker engine refused: {exc}")
