"""The process runtime: the same pods as local processes, each on its own loopback address.

A pod is a sidecar process and an app process sharing one address (127.0.K.N), with the same
ports as in Docker, so rendered configs differ only in addresses. It needs nothing but Python,
which makes it the default wherever no Docker engine answers.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import sys
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from meshdev.common.sidecar_config import ADMIN_PORT, INBOUND_PORT
from meshdev.config.model import Mesh
from meshdev.plan import INGRESS_POD, Placement, PodSpec, app_env
from meshdev.runtime.base import (
    Container,
    PodExit,
    PodState,
    Progress,
    RuntimeFailure,
    RuntimeKind,
    StartedPod,
)
from meshdev.runtime.paths import mesh_dir
from meshdev.runtime.process import procscan
from meshdev.runtime.process.logtail import follow, tail
from meshdev.runtime.process.template import ForkedProcess, SidecarTemplate, StartRefused
from meshdev.runtime.readiness import http_status, tcp_open

# The suffix of the files that note which process runs a pod's container (see record_path).
RECORD_SUFFIX = ".pid"
# How pods start: sidecars forked by the mesh's pre-imported template and apps started by it
# (template.py), or (`exec`, the way before the template, kept to compare and to fall back on)
# each sidecar a fresh interpreter and each process spawned by the control plane itself.
SidecarStart = Literal["template", "exec"]
ENV_SIDECAR_START = "MESHDEV_SIDECAR_START"
# A pod's process: started here, or forked by the template.
Child = asyncio.subprocess.Process | ForkedProcess


def subnet_of(mesh_name: str) -> str:
    """127.0.K: one /24 of loopback per mesh, so meshes with different names coexist."""
    return f"127.0.{1 + zlib.crc32(mesh_name.encode()) % 250}"


class ProcessRuntime:
    kind: RuntimeKind = "process"

    def __init__(
        self, mesh: Mesh, mesh_file: Path, *, sidecar_start: SidecarStart | None = None
    ) -> None:
        self.mesh = mesh
        if sidecar_start is None:
            chosen = os.environ.get(ENV_SIDECAR_START, "template")
            sidecar_start = "exec" if chosen == "exec" else "template"
        self.sidecar_start: SidecarStart = sidecar_start
        self.mesh_dir = mesh_file.resolve().parent
        self.subnet = subnet_of(mesh.name)
        self.dir = mesh_dir(mesh.name)
        self._hosts: dict[str, int] = {}
        self._children: dict[str, list[Child]] = {}
        self._template: SidecarTemplate | None = None
        self._template_lock = asyncio.Lock()
        # Where pods run is said at the first prepare; reloads and code rolls prepare again.
        self._said_where = False

    # -- placement ------------------------------------------------------------------------

    def planned_placement(self, spec: PodSpec) -> Placement:
        host = self._host_of(spec.name)
        address = f"{self.subnet}.{host}"
        return Placement(spec.name, address, listen=address, local=address, public="127.0.0.1")

    def code_version(self, spec: PodSpec) -> str | None:
        return None  # its folder's files as they are when it starts

    def _host_of(self, pod: str) -> int:
        if pod not in self._hosts:
            if pod == INGRESS_POD:
                self._hosts[pod] = 1
            else:
                used = set(self._hosts.values()) | {1}
                self._hosts[pod] = next(n for n in range(2, 255) if n not in used)
        return self._hosts[pod]

    # -- lifecycle ------------------------------------------------------------------------

    async def remove_leftovers(self) -> list[str]:
        return await self.teardown()

    async def prepare(self, mesh: Mesh, specs: list[PodSpec], progress: Progress) -> None:
        self.mesh = mesh
        problems = [f"service {s.service!r}: {why}" for s in specs if (why := self._unrunnable(s))]
        if problems:
            why = "; ".join(sorted(set(problems)))
            raise RuntimeFailure(f"cannot run as local processes: {why}")
        # Only pods about to start need their ports (a reload's prepare sees just those).
        if mesh.ingress is not None and any(s.is_ingress for s in specs):
            _check_free("127.0.0.1", mesh.ingress.port, "ingress.port in mesh.yaml")
            # A save that moves ingress.port replaces our own gateway, which holds this port
            # until the reload stops it, just before the new one starts.
            if INGRESS_POD not in self._children:
                _check_free(f"{self.subnet}.1", ADMIN_PORT, "the gateway's admin port")
        if not self._said_where:
            self._check_subnet_unshared()
            self._said_where = True
            progress(f"process runtime: pods on {self.subnet}.0/24, logs in {self.dir}")
        if self.sidecar_start == "template" and specs:
            await self._sidecar_template()  # it imports while the pods' configs are rendered

    def _check_subnet_unshared(self) -> None:
        """Fail when another mesh's pods run on this mesh's /24: names map to one of 250,
        so two meshes can share one, and their pods would take each other's addresses
        (crash-looping on "address already in use", or a gateway admin port said taken)."""
        prefix = f"{self.subnet}."
        others = sorted(
            {
                p.mesh
                for p in procscan.labelled_processes()
                if p.mesh != self.mesh.name and p.address.startswith(prefix)
            }
        )
        if others:
            raise RuntimeFailure(
                f"the pods of mesh {others[0]} run on {self.subnet}.0/24, the loopback "
                f"addresses mesh {self.mesh.name}'s name maps to as well: give this mesh "
                f"another `name:`, or remove that one (`meshdev down --name {others[0]}`)"
            )

    def _unrunnable(self, spec: PodSpec) -> str | None:
        if spec.is_ingress or spec.command:
            return None
        if spec.image:
            return f"has only an image ({spec.image}); give it a command: or use --runtime docker"
        return "has no command:; the process runtime runs a service's command in its folder"

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        placement = self.planned_placement(spec)
        labels = {
            procscan.ENV_MESH: self.mesh.name,
            procscan.ENV_POD: spec.name,
            procscan.ENV_ADDRESS: placement.address,
            procscan.ENV_SERVICE: spec.service,
            procscan.ENV_SUBSET: spec.subset or "",
        }
        config_path = self.dir / f"{spec.name}.sidecar.json"
        config_path.write_bytes(sidecar_config)
        sidecar_env = {
            **os.environ,
            **labels,
            procscan.ENV_ROLE: "sidecar",
            "MESHDEV_ADMIN_TOKEN": token,
            # pydantic scans every installed package for plugins at import: ~90 ms per sidecar.
            "PYDANTIC_DISABLE_PLUGINS": "__all__",
        }
        argv = [sys.executable, "-m", "meshdev", "sidecar", "--config", str(config_path)]
        app: _Program | None = None
        if not spec.is_ingress:
            assert spec.command is not None
            folder = (self.mesh_dir / spec.build) if spec.build else self.mesh_dir
            # `python` in a command means the Python meshdev runs on (a venv has the app's deps).
            path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
            env = {**os.environ, **app_env(spec, placement), **labels, "PATH": path}
            env[procscan.ENV_ROLE] = "app"
            app_argv = (
                ["/bin/sh", "-c", spec.command]
                if isinstance(spec.command, str)
                else list(spec.command)
            )
            app = _Program(app_argv, env, folder)
        if self.sidecar_start == "template":
            procs = await self._start_forked(
                spec.name, _Program(argv, sidecar_env, self.dir), config_path, app
            )
        else:
            procs = [await self._spawn(spec.name, "sidecar", argv, env=sidecar_env, cwd=self.dir)]
            if app is not None:
                procs.append(
                    await self._spawn(spec.name, "app", app.argv, env=app.env, cwd=app.cwd)
                )
        self._children[spec.name] = procs
        return StartedPod(
            placement,
            f"http://{placement.address}:{ADMIN_PORT}",
            inbound_url=f"http://{placement.address}:{INBOUND_PORT}",
        )

    async def _spawn(
        self, pod: str, container: Container, argv: list[str], *, env: dict[str, str], cwd: Path
    ) -> Child:
        """Start a program from this process (the `exec` way)."""
        log = self.log_path(pod, container)
        with log.open("ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # its own group: stopping it stops its children
                )
            except OSError as exc:
                raise RuntimeFailure(_cannot_start(pod, container, argv, cwd, exc)) from None
        # An app may wipe its label (redis-server rewrites its environ with its title); this is
        # how `down` finds it anyway, after this process crashed.
        procscan.record(self.record_path(pod, container), proc.pid)
        return proc

    async def _start_forked(
        self, pod: str, sidecar: _Program, config: Path, app: _Program | None
    ) -> list[Child]:
        """The pod's sidecar forked and its app started by the template (see
        meshdev/sidecar/template.py), both asked for at once: when 40 pods start on two busy
        cores, waiting for the sidecar's answer before asking for the app (a round trip
        through two starved processes) spread the apps' starts over a second."""
        template = await self._sidecar_template()
        asked = [
            template.fork_sidecar(
                argv=sidecar.argv,
                env=sidecar.env,
                config=config,
                log=self.log_path(pod, "sidecar"),
                cwd=sidecar.cwd,
            )
        ]
        if app is not None:
            asked.append(
                template.spawn(
                    argv=app.argv, env=app.env, log=self.log_path(pod, "app"), cwd=app.cwd
                )
            )
        outcomes = await asyncio.gather(*asked, return_exceptions=True)
        started: list[Child] = [p for p in outcomes if isinstance(p, ForkedProcess)]
        roles: tuple[Container, ...] = ("sidecar", "app")
        for container, outcome in zip(roles, outcomes, strict=False):
            if isinstance(outcome, ForkedProcess):
                # An app may wipe its label (redis-server rewrites its environ with its title);
                # this is how `down` finds it anyway, after this process crashed.
                procscan.record(self.record_path(pod, container), outcome.pid)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is None:
            return started
        # Half a pod is no pod: what did start is stopped, not left to the next teardown.
        await procscan.terminate([p.pid for p in started])
        for proc in started:
            await proc.wait()
        for role in roles:
            self.record_path(pod, role).unlink(missing_ok=True)
        if isinstance(failed, StartRefused):
            if outcomes[0] is failed:
                raise RuntimeFailure(f"pod {pod}: cannot start its sidecar: {failed}") from None
            assert app is not None
            raise RuntimeFailure(_cannot_start(pod, "app", app.argv, app.cwd, failed)) from None
        raise failed

    async def _sidecar_template(self) -> SidecarTemplate:
        """The mesh's template, started now if there is none or it died."""
        async with self._template_lock:
            if self._template is None or not self._template.alive:
                self._template = await SidecarTemplate.start(
                    self.mesh.name,
                    # pydantic scans every installed package for plugins at import: ~90 ms.
                    {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"},
                    cwd=self.dir,
                    log=self.dir / "sidecar-template.log",
                    # A sidecar's command line names its config file, in this folder.
                    room=len(str(self.dir)) + 256,
                )
            return self._template

    def log_path(self, pod: str, container: Container) -> Path:
        return self.dir / f"{pod}.{container}.log"

    def record_path(self, pod: str, container: Container) -> Path:
        """Where which process runs `container` of `pod` is noted (see procscan.record)."""
        return self.dir / f"{pod}.{container}{RECORD_SUFFIX}"

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        addr = started.placement.local
        # What answered once is not asked again (an exit after that is seen all the same): two
        # probes a pod every 50 ms add up when dozens of pods start on a busy machine.
        sidecar_ok, app_ok = False, spec.is_ingress
        # Kept so that a timeout says what each last answered (garbage, a 500, nothing).
        sidecar_why = app_why = ""
        while True:
            for proc in self._children.get(spec.name, []):
                if _ended(proc):
                    role: Container = "sidecar" if proc is self._children[spec.name][0] else "app"
                    code = _exit_code(proc.returncode)
                    await self._fail(spec, role, f"exited with code {code} at start", code)
            if not sidecar_ok:
                status, sidecar_why = await http_status(f"{started.admin_url}/ready")
                sidecar_ok = status == 200
            if not app_ok and spec.health_path:
                status, app_why = await http_status(f"http://{addr}:{spec.port}{spec.health_path}")
                app_ok = status is not None and 200 <= status < 300
            elif not app_ok:
                app_ok = await tcp_open(addr, spec.port)
            if sidecar_ok and app_ok:
                return
            if loop.time() > deadline:
                which: Container = "sidecar" if not sidecar_ok else "app"
                what = (
                    f"did not answer {started.admin_url}/ready"
                    if which == "sidecar"
                    else f"did not answer on {addr}:{spec.port}{spec.health_path or ''}"
                )
                last = sidecar_why if which == "sidecar" else app_why
                await self._fail(
                    spec,
                    which,
                    f"{what} within {timeout:g}s" + (f" (last: {last})" if last else ""),
                )
            await asyncio.sleep(0.05)

    async def _fail(
        self, spec: PodSpec, container: Container, why: str, exit_code: int | None = None
    ) -> None:
        lines = await self.last_lines(spec.name, container, 12)
        shown = "\n".join(f"    {ln}" for ln in lines) or "    (no output)"
        raise RuntimeFailure(
            f"pod {spec.name}: {container} {why}; last lines of its log "
            f"({self.log_path(spec.name, container)}):\n{shown}",
            exit_code=exit_code,
        )

    async def stop_pod(self, pod: str) -> None:
        pids = [p.pid for p in self._children.pop(pod, [])]
        pids += [p.pid for p in procscan.labelled_processes(self.mesh.name) if p.pod == pod]
        records = [self.record_path(pod, c) for c in get_args(Container)]
        pids += [pid for path in records if (pid := procscan.recorded_pid(path)) is not None]
        await procscan.terminate(sorted(set(pids)))
        await self._reap(pod)
        for path in records:
            path.unlink(missing_ok=True)
        # Its address is free for the next pod: replacements (a reload's, a roll's) get new
        # names, and 253 addresses per mesh would otherwise run out after enough saves.
        self._hosts.pop(pod, None)

    async def exits(self) -> list[PodExit]:
        # The event loop's child watcher sets returncode when a child ends: no syscall here.
        out = []
        for pod, procs in self._children.items():
            for i, proc in enumerate(procs):
                if _ended(proc):
                    container: Container = "sidecar" if i == 0 else "app"
                    out.append(PodExit(pod, container, _exit_code(proc.returncode)))
                    break
        return out

    async def _reap(self, pod: str | None = None) -> None:
        # Our own children must be waited for, or they linger as zombies until we exit.
        for name, procs in list(self._children.items()):
            if pod is None or name == pod:
                for proc in procs:
                    if not _ended(proc):
                        await proc.wait()

    async def pod_states(self) -> list[PodState]:
        by_pod: dict[str, list[procscan.LabelledProcess]] = {}
        for proc in procscan.labelled_processes(self.mesh.name):
            if proc.role in ("sidecar", "app"):  # not the mesh's Prometheus
                by_pod.setdefault(proc.pod, []).append(proc)
        states = []
        for pod, procs in sorted(by_pod.items()):
            roles = {p.role for p in procs}
            first = procs[0]
            want = {"sidecar"} if pod == INGRESS_POD else {"sidecar", "app"}
            missing = want - roles
            states.append(
                PodState(
                    pod=pod,
                    service=first.service,
                    subset=first.subset or None,
                    state="running" if not missing else "degraded",
                    address=first.address,
                    admin_url=f"http://{first.address}:{ADMIN_PORT}",
                    detail=f"{', '.join(sorted(missing))} not running" if missing else "",
                )
            )
        return states

    def logs(self, pod: str, container: Container) -> AsyncIterator[str]:
        return follow(self.log_path(pod, container))

    async def last_lines(self, pod: str, container: Container, n: int = 20) -> list[str]:
        return tail(self.log_path(pod, container), n)

    async def teardown(self) -> list[str]:
        procs = procscan.labelled_processes(self.mesh.name)
        # The template and the mesh's Prometheus belong to no pod.
        removed = {
            f"{p.pod} ({p.role}, pid {p.pid})" if p.pod else f"{p.role} (pid {p.pid})"
            for p in procs
        }
        pids = {p.pid for p in procs} | {
            proc.pid for ps in self._children.values() for proc in ps if not _ended(proc)
        }
        records = sorted(self.dir.glob(f"*{RECORD_SUFFIX}"))
        for path in records:
            pid = procscan.recorded_pid(path)
            if pid is not None and pid not in pids:
                # Found by its record alone: its label is gone, the record's name tells.
                pod, _, container = path.name.removesuffix(RECORD_SUFFIX).rpartition(".")
                removed.add(f"{pod} ({container}, pid {pid})")
                pids.add(pid)
        await procscan.terminate(sorted(pids))
        await self._reap()
        self._children.clear()
        if self._template is not None:
            await self._template.close()
            self._template = None
        for path in records:
            path.unlink(missing_ok=True)
        return sorted(removed)


@dataclass(frozen=True, slots=True)
class _Program:
    """What a pod's container runs: its command line, environment and folder."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


def _cannot_start(pod: str, container: Container, argv: list[str], cwd: Path, why: OSError) -> str:
    return f"pod {pod}: cannot start {container} ({shlex.join(argv)}) in {cwd}: {why}"


def _check_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RuntimeFailure(
                f"{host}:{port} is already in use ({what}): {exc.strerror}; "
                "free it or change the port"
            ) from None


def _ended(proc: Child) -> bool:
    # A forked sidecar whose template died before it ends with no code to report.
    return proc.returncode is not None or (
        isinstance(proc, ForkedProcess) and proc.finished.is_set()
    )


def _exit_code(returncode: int | None) -> int | None:
    """As a shell (and Docker) reports it: a death by signal N is 128 + N (kill -9: 137)."""
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode
