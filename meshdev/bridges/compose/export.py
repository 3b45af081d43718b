"""`meshdev export compose --proxy envoy`: the mesh as a docker-compose.yml with real Envoys.

Every pod is its Envoy sidecar (named after the pod, its bootstrap from `export envoy`
mounted) and its app (`<pod>-app`), which joins the sidecar's network namespace
(`network_mode: service:<pod>`). The app is run as meshdev's docker runtime runs it: built from
its folder (with the BASE_IMAGE build argument), or its image, or its command in the base image
with the mesh file's folder mounted at /app; under an init process; with the environment
meshdev gives it, which includes HTTP_PROXY to its sidecar's outbound listener on the pod's
loopback, as on meshdev's process runtime (nothing is captured here). The gateway's listener
is published on the host's 127.0.0.1, and so is each sidecar's read-only admin listener, so
`meshdev watch` can show the running Compose project.

A service or version with no replicas has no pod; it is kept as an app service with
`deploy.replicas: 0` so that the file still says it exists. A service's `watch:` becomes its
apps' develop.watch, for `docker compose watch`.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshdev.bridges.compose import layout
from meshdev.bridges.envoy.export import (
    EnvoyExport,
    PodBootstrap,
    export_envoy,
    write_bootstraps,
)
from meshdev.bridges.envoy.notes import Note, Notes
from meshdev.bridges.envoy.proto import Json
from meshdev.config.durations import format_duration
from meshdev.config.model import Mesh, Service
from meshdev.plan import PodSpec, app_env

COMPOSE_FILE = "docker-compose.yml"
README_FILE = "README.txt"
# README.txt's first words: how a later export knows the folder's files are its own.
README_MARKER = "meshdev export compose: "


@dataclass(frozen=True, slots=True)
class ComposeExport:
    mesh: Mesh
    document: Json
    envoy: EnvoyExport
    # Each pod's read-only admin listener, as published on the host's 127.0.0.1.
    admin_ports: Mapping[str, int]
    notes: tuple[Note, ...]
    envoy_image: str

    def watch_command(self, separator: str = " ") -> str:
        targets = [f"{pod}=http://127.0.0.1:{p}" for pod, p in self.admin_ports.items()]
        return separator.join(["meshdev watch", *targets])


# A glob's wildcard in one segment of a watch pattern.
_WILDCARD = re.compile(r"[*?\[]")


def _relative(target: Path, out_dir: Path) -> str:
    """`target` as Compose resolves it: relative to the compose file's folder."""
    try:
        rel = os.path.relpath(target.resolve(), out_dir.resolve())
    except ValueError:  # another drive (Windows): only an absolute path reaches it
        return str(target.resolve())
    return rel if rel.startswith(".") else f"./{rel}"


def _command(command: str | tuple[str, ...] | None) -> list[str] | None:
    # As the docker runtime runs it: a string through a shell, a list as it is.
    if command is None:
        return None
    if isinstance(command, str):
        return ["sh", "-c", command]
    return list(command)


def admin_host_ports(pods: list[str], avoid: set[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    port = layout.ADMIN_HOST_PORT
    for pod in pods:
        while port in avoid:
            port += 1
        out[pod] = port
        port += 1
    return out


class _Writer:
    def __init__(
        self, mesh: Mesh, mesh_dir: Path, out_dir: Path, base_image: str, notes: Notes
    ) -> None:
        self.mesh = mesh
        self.mesh_dir = mesh_dir
        self.out_dir = out_dir
        self.base_image = base_image
        self.notes = notes

    def runnable(
        self,
        build: str | None,
        image: str | None,
        command: str | tuple[str, ...] | None,
    ) -> Json:
        """What to run and where: build, image, or command in the base image."""
        out: Json = {}
        if build is not None:
            out["build"] = {
                "context": _relative(self.mesh_dir / build, self.out_dir),
                "args": {"BASE_IMAGE": self.base_image},
            }
        elif image is not None:
            out["image"] = image
        else:
            out["image"] = self.base_image
            out["working_dir"] = layout.APP_MOUNT
            out["volumes"] = [f"{_relative(self.mesh_dir, self.out_dir)}:{layout.APP_MOUNT}"]
        cmd = _command(command)
        if cmd is not None:
            out["command"] = cmd
        return out

    def app_labels(self, service: str, version: str | None, svc: Service) -> dict[str, str]:
        labels = {
            layout.LABEL_MESH: self.mesh.name,
            layout.LABEL_ROLE: "app",
            layout.LABEL_SERVICE: service,
            layout.LABEL_PORT: str(svc.port),
            layout.LABEL_PROTOCOL: svc.protocol,
        }
        if version is not None:
            labels[layout.LABEL_VERSION] = version
        if svc.health_path is not None:
            labels[layout.LABEL_HEALTH_PATH] = svc.health_path
        if svc.excluded_ports:
            labels[layout.LABEL_EXCLUDED_PORTS] = ",".join(map(str, svc.excluded_ports))
        return labels

    def app(self, pod: PodSpec, envoy: EnvoyExport) -> Json:
        svc = self.mesh.services[pod.service]
        placement = next(p.placement for p in envoy.pods if p.pod.name == pod.name)
        out = self.runnable(pod.build, pod.image, pod.command)
        # The docker runtime's init (tini) signals the app's whole process group.
        out["environment"] = {**app_env(pod, placement), "TINI_KILL_PROCESS_GROUP": "1"}
        out["init"] = True
        out["network_mode"] = f"service:{pod.name}"
        out["depends_on"] = [pod.name]
        out["labels"] = {
            **self.app_labels(pod.service, pod.subset, svc),
            layout.LABEL_POD: pod.name,
        }
        watch = self.watch(pod, svc)
        if watch:
            out["develop"] = {"watch": watch}
        return out

    def watch(self, pod: PodSpec, svc: Service) -> list[Json]:
        """`watch:` as Compose's develop.watch (`docker compose watch`): a built app is
        rebuilt, a command run in the base image with the folder mounted is restarted; a pod
        running a named image has no code here. Compose watches paths, not globs (its
        `include` is too new for the parsers in use): a pattern's path is the folder before its
        first wildcard, which the export notes."""
        if not svc.watch or (pod.build is None and pod.image is not None):
            return []
        folder = self.mesh_dir / svc.build if svc.build else self.mesh_dir
        action = "rebuild" if pod.build is not None else "restart"
        out: list[Json] = []
        for pattern in svc.watch:
            parts = pattern.replace("\\", "/").strip().removeprefix("./").split("/")
            literal = list(itertools.takewhile(lambda p: not _WILDCARD.search(p), parts))
            entry = {"path": _relative(folder.joinpath(*literal), self.out_dir), "action": action}
            if entry not in out:
                out.append(entry)
        return out

    def stub(self, service: str, version: str | None) -> tuple[str, Json]:
        """A service or version with no pod: what it would run, started zero times."""
        svc = self.mesh.services[service]
        env = dict(svc.env)
        build, image, command = svc.build, svc.image, svc.command
        if version is not None:
            ver = svc.versions[version]
            env = {**env, "VERSION": version, **dict(ver.env)}
            build = ver.build or (None if ver.image else build)
            image = ver.image or (None if ver.build else image)
            command = ver.command or command
        out = self.runnable(build, image, command)
        if env:
            out["environment"] = env
        out["deploy"] = {"replicas": 0}
        out["labels"] = self.app_labels(service, version, svc)
        name = service if version is None else f"{service}-{version}"
        return layout.app_service(name), out


def export_compose(
    mesh: Mesh,
    *,
    mesh_dir: Path,
    out_dir: Path,
    base_image: str,
    envoy_image: str = layout.DEFAULT_ENVOY_IMAGE,
    defaults: Mapping[str, Any] | None = None,
) -> ComposeExport:
    """`mesh_dir`: the mesh file's folder (build folders are relative to it); `out_dir`: where
    the compose file will be (Compose resolves its paths from there)."""
    envoy = export_envoy(mesh, defaults=defaults)
    notes = Notes()
    writer = _Writer(mesh, mesh_dir, out_dir, base_image, notes)
    avoid = {mesh.ingress.port} if mesh.ingress is not None else set()
    admin_ports = admin_host_ports([p.pod.name for p in envoy.pods], avoid)
    services: Json = {}

    def add_pod(pb: PodBootstrap) -> None:
        pod = pb.pod
        ports = [f"127.0.0.1:{admin_ports[pod.name]}:{envoy.admin_view_port}"]
        if pod.is_ingress:
            ports.append(f"127.0.0.1:{pod.port}:{pod.port}")
        services[pod.name] = {
            "image": envoy_image,
            "command": ["-c", layout.BOOTSTRAP_MOUNT],
            "volumes": [
                f"./{layout.BOOTSTRAP_DIR}/{pb.file_name('yaml')}:{layout.BOOTSTRAP_MOUNT}:ro"
            ],
            "ports": ports,
            "labels": {
                layout.LABEL_MESH: mesh.name,
                layout.LABEL_ROLE: "gateway" if pod.is_ingress else "sidecar",
                layout.LABEL_POD: pod.name,
            },
        }
        if not pod.is_ingress:
            services[layout.app_service(pod.name)] = writer.app(pod, envoy)

    # In the mesh's order (the plan's), each version's pods or, without any, its stub.
    for pb in envoy.pods:
        if pb.pod.is_ingress:
            add_pod(pb)
    for name, svc in mesh.services.items():
        versions: list[str | None] = [*svc.versions] or [None]
        for version in versions:
            placed = [
                pb for pb in envoy.pods if pb.pod.service == name and pb.pod.subset == version
            ]
            for pb in placed:
                add_pod(pb)
            if not placed:
                stub_name, stub = writer.stub(name, version)
                services[stub_name] = stub
        if svc.health_path is not None:
            notes.add(
                f"services.{name}.health_path",
                "Compose has no readiness gate like meshdev's: Envoy sends requests to a pod "
                "as soon as its sidecar's name resolves, before the app answers "
                f"{svc.health_path}",
            )
        if svc.liveness_path is not None:
            notes.add(
                f"services.{name}.liveness_path",
                "Compose never restarts a container that stops answering (a healthcheck "
                f"only marks it unhealthy): a hung app is not restarted after "
                f"{svc.liveness_path} fails, as meshdev and Kubernetes do",
            )
        if svc.ready_timeout is not None:
            notes.add(
                f"services.{name}.ready_timeout",
                "Compose waits for no container to get ready: a pod slow to answer is not "
                f"failed after {format_duration(svc.ready_timeout)}, as meshdev's up is",
            )
        if svc.watch:
            globs = [p for p in svc.watch if _WILDCARD.search(p)]
            broad = (
                f"; Compose watches paths, so {', '.join(globs)} became the folder before the "
                "first wildcard (any change there counts)"
                if globs
                else ""
            )
            notes.add(
                f"services.{name}.watch",
                "as develop.watch for `docker compose watch`, which replaces each container "
                "in place: requests to it fail while it restarts (meshdev rolls one pod at a "
                f"time through a drain){broad}",
            )
        if svc.excluded_ports:
            notes.add(
                f"services.{name}.excluded_ports",
                "nothing is captured in this layout (apps use HTTP_PROXY), so there is "
                "nothing to exclude",
            )
    document: Json = {"name": mesh.name, "services": services}
    all_notes = Notes()
    all_notes.extend(envoy.notes)
    all_notes.extend(notes)
    return ComposeExport(mesh, document, envoy, admin_ports, tuple(all_notes), envoy_image)


def readme(export: ComposeExport, source: str) -> str:
    mesh = export.mesh
    lines = [
        f"{README_MARKER}the mesh {mesh.name!r} ({source}) with Envoy sidecars",
        "",
        "Run it (Docker Compose v2):",
        "",
        "    docker compose up --build",
        "",
    ]
    if mesh.ingress is not None:
        lines += [f"The gateway is http://127.0.0.1:{mesh.ingress.port}/ .", ""]
    lines += [
        f"Each pod is two containers: its sidecar, a real Envoy ({export.envoy_image}), is the",
        "compose service named after the pod, with its bootstrap from envoy/<pod>.yaml; its app",
        "is <pod>-app, in the sidecar's network namespace. The app reaches other services",
        "through its sidecar with HTTP_PROXY=http://127.0.0.1:15001 (as on meshdev's process",
        "runtime), and its sidecar reaches other pods' sidecars by their compose service names.",
        "",
        "Watch it with meshdev's dashboard (each sidecar's admin API, read-only, is published",
        "on 127.0.0.1):",
        "",
        "    " + export.watch_command(" \\\n        "),
        "",
        "Stop it with `docker compose down`.",
        "",
    ]
    if export.notes:
        lines += ["What Envoy or Compose does differently from meshdev here:", ""]
        lines += [f"- {note}" for note in export.notes]
        lines.append("")
    return "\n".join(lines)


def dump_compose(document: Json) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def write_compose(export: ComposeExport, out_dir: Path, source: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_bootstraps(export.envoy, out_dir / layout.BOOTSTRAP_DIR, "yaml")
    compose = out_dir / COMPOSE_FILE
    compose.write_text(dump_compose(export.document), encoding="utf-8")
    notes = out_dir / README_FILE
    notes.write_text(readme(export, source), encoding="utf-8")
    return [compose, notes, *written]
