"""`meshdev import compose`: a docker-compose.yml as a mesh.yaml, and what did not fit.

The file is checked against the Compose Specification's schema first (schema.py), so what is
read is a valid Compose file. Each compose service becomes a mesh service with what meshdev
runs alike: build (its context folder), image, command, environment, its port (the first of
`expose`, else the first container port of `ports`), replicas (deploy.replicas or scale) and a
readiness path read from an HTTP healthcheck. meshdev gives every service one default route
(everything to all of its pods), so none is written. Ports published on the host become the
gateway: meshdev has one gateway port, so the first published port routes `/` to its service
and every other published port is reported. Everything else (volumes, networks, depends_on,
...) is reported with its path, never dropped silently.

A file that `meshdev export compose` wrote is recognised by its labels (layout.py) and read
back as the mesh it came from: its Envoy sidecars are not services, each app container is one
pod of its service and version, and the environment meshdev itself sets (SERVICE, POD, HOST,
PORT, HTTP_PROXY, ...) is taken out again.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshdev.bridges.compose import layout
from meshdev.bridges.compose.schema import schema_problems
from meshdev.bridges.envoy.notes import Note, Notes
from meshdev.config.model import NAME_PATTERN, env_prefix
from meshdev.config.problems import MeshInvalid

Doc = dict[str, Any]

# What a compose service says that becomes part of the mesh service.
_READ = frozenset(
    {
        "build",
        "image",
        "command",
        "environment",
        "ports",
        "expose",
        "deploy",
        "scale",
        "healthcheck",
        "develop",
    }
)
# Keys meshdev's own export writes and its reader takes for what they are.
_EXPORTED = frozenset({"init", "network_mode", "depends_on", "labels", "working_dir", "volumes"})
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")
_HEALTH_URL = re.compile(
    r"https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\])(?::(\d+))?(/[^\s'\"|;&]*)?"
)
# What meshdev sets in every app's environment (plan.app_env, the docker runtime's init).
_MESHDEV_ENV = frozenset(
    {"SERVICE", "POD", "VERSION", "HOST", "PORT", "HTTP_PROXY", "http_proxy", "NO_PROXY"}
    | {"no_proxy", "TINI_KILL_PROCESS_GROUP"}
)
_NAME = re.compile(NAME_PATTERN)
DEFAULT_PORT = 8080
# Ports whose servers speak no HTTP: such a service is meshdev's `protocol: tcp`.
WELL_KNOWN_TCP = {
    1433: "SQL Server",
    2181: "ZooKeeper",
    3306: "MySQL",
    4222: "NATS",
    5432: "PostgreSQL",
    5672: "RabbitMQ",
    6379: "Redis",
    9042: "Cassandra",
    9092: "Kafka",
    11211: "memcached",
    27017: "MongoDB",
}


class ComposeInvalid(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ComposeImport:
    mesh: Doc  # mesh.yaml's content
    notes: tuple[Note, ...]


def mesh_name(text: str) -> str:
    """A Compose name (letters, digits, `.`, `_`, `-`) as a mesh name (a DNS label)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    return name or "compose"


def _labels(svc: Mapping[str, Any]) -> dict[str, str]:
    raw = svc.get("labels") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: "" if v is None else str(v) for k, v in raw.items()}


def _environment(raw: Any, where: str, notes: Notes) -> dict[str, str]:
    out: dict[str, str] = {}
    items: list[tuple[str, Any]]
    if isinstance(raw, list):
        items = [
            (entry.split("=", 1)[0], entry.split("=", 1)[1] if "=" in entry else None)
            for entry in raw
        ]
    else:
        items = list((raw or {}).items())
    for key, value in items:
        if value is None:
            notes.add(
                f"{where}.{key}",
                "takes its value from the environment `docker compose` runs in; mesh.yaml "
                "needs the value itself",
            )
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if "$" in out[key]:
            notes.add(f"{where}.{key}", "Compose interpolates ${...}; meshdev takes it as text")
    return out


@dataclass(frozen=True, slots=True)
class _Port:
    target: int
    published: int | None
    host_ip: str | None
    where: str


def _parse_ports(raw: list[Any], where: str, notes: Notes) -> list[_Port]:
    out: list[_Port] = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if isinstance(entry, int):
            out.append(_Port(entry, None, None, at))
            continue
        if isinstance(entry, dict):
            target = entry.get("target")
            published = entry.get("published")
            if isinstance(target, str) and target.isdigit():
                target = int(target)
            if isinstance(published, str) and published.isdigit():
                published = int(published)
            if not isinstance(target, int) or not (published is None or isinstance(published, int)):
                notes.add(at, "a port range: meshdev has one port per service")
                continue
            if entry.get("protocol", "tcp") != "tcp":
                notes.add(at, "not TCP: meshdev proxies TCP only")
                continue
            out.append(_Port(target, published, entry.get("host_ip"), at))
            continue
        text = str(entry)
        spec, _, proto = text.partition("/")
        if proto and proto != "tcp":
            notes.add(at, "not TCP: meshdev proxies TCP only")
            continue
        # [host_ip:][published:]target, the host ip possibly a bracketed IPv6 address.
        host_ip = None
        if spec.startswith("["):
            host_ip, _, spec = spec[1:].partition("]:")
        parts = spec.split(":")
        if len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
        if not all(p.isdigit() for p in parts if p) or not parts[-1]:
            notes.add(at, f"{text!r} is a port range: meshdev has one port per service")
            continue
        published_text = parts[0] if len(parts) == 2 else ""
        published_port = int(published_text) if published_text else None
        out.append(_Port(int(parts[-1]), published_port, host_ip or None, at))
    return out


def _expose(raw: list[Any], where: str, notes: Notes) -> list[int]:
    out = []
    for i, entry in enumerate(raw):
        text = str(entry).partition("/")[0]
        if text.isdigit():
            out.append(int(text))
        else:
            notes.add(f"{where}[{i}]", f"{entry!r} is a port range: meshdev has one port")
    return out


def _health_path(hc: Mapping[str, Any], port: int, where: str, notes: Notes) -> str | None:
    if hc.get("disable"):
        return None
    test = hc.get("test")
    if test is None or test == ["NONE"]:
        return None
    text = test if isinstance(test, str) else " ".join(str(t) for t in test)
    m = _HEALTH_URL.search(text)
    if m is None:
        notes.add(
            f"{where}.test",
            "not an HTTP request to the container itself: meshdev's readiness is a path "
            "answering 2xx (health_path) or, without one, the port accepting",
        )
        return None
    if m.group(1) is not None and int(m.group(1)) != port:
        notes.add(
            f"{where}.test",
            f"asks port {m.group(1)}; meshdev asks the service's port {port} for health_path",
        )
    timing = sorted(k for k in hc if k not in ("test", "disable"))
    if timing:
        notes.add(where, f"{', '.join(timing)}: meshdev probes on its own schedule")
    return m.group(2) or "/"


def _relative(path: Path, mesh_dir: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), mesh_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return path.resolve().as_posix()


class _Reader:
    def __init__(self, compose_dir: Path, mesh_dir: Path, notes: Notes) -> None:
        self.compose_dir = compose_dir
        self.mesh_dir = mesh_dir
        self.notes = notes

    def build(self, raw: Any, where: str, *, exported: bool = False) -> str | None:
        if isinstance(raw, str):
            context = raw
        else:
            context = raw.get("context", ".")
            dockerfile = raw.get("dockerfile")
            if dockerfile not in (None, "Dockerfile"):
                self.notes.add(
                    f"{where}.dockerfile",
                    "meshdev builds the folder's own Dockerfile; rename it or give the folder",
                )
            for key in raw:
                if key in ("context", "dockerfile"):
                    continue
                if key == "args" and exported and set(raw["args"]) == {"BASE_IMAGE"}:
                    continue  # meshdev's base image, which its own build passes
                self.notes.add(f"{where}.{key}", "meshdev builds with no such setting")
        if "://" in context or context.startswith("git@"):
            self.notes.add(where, "a remote build context: meshdev builds a local folder")
            return None
        return _relative(self.compose_dir / context, self.mesh_dir)

    def watch(self, svc: Mapping[str, Any], build: str | None, where: str) -> list[str]:
        """develop.watch (`docker compose watch`) as the service's watch: each path relative
        to the service's folder (its build folder, else the mesh file's); meshdev rolls the
        service on a change whatever the action."""
        develop = svc.get("develop") or {}
        for key in sorted(set(develop) - {"watch"}):
            self.notes.add(f"{where}.develop.{key}", "meshdev has no such setting")
        folder = (self.mesh_dir / build) if build is not None else self.mesh_dir
        out: list[str] = []
        for i, item in enumerate(develop.get("watch") or []):
            at = f"{where}.develop.watch[{i}]"
            action = item.get("action")
            if action in ("sync", "sync+exec"):
                self.notes.add(
                    f"{at}.action",
                    f"{action}: meshdev replaces the service's pods on a change (as rebuild or "
                    "restart does), it copies no files into running ones",
                )
            for key in ("ignore", "include"):
                if key in item:
                    self.notes.add(
                        f"{at}.{key}", "meshdev's watch is paths and globs: its whole path counts"
                    )
            rel = _relative(self.compose_dir / str(item["path"]), folder)
            if rel == ".." or rel.startswith(("../", "/")):
                self.notes.add(
                    f"{at}.path",
                    "outside the service's folder, which meshdev's watch is relative to: left out",
                )
                continue
            pattern = "**" if rel == "." else rel
            if pattern not in out:
                out.append(pattern)
        return out

    def command(self, raw: Any) -> str | list[str] | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            # Compose splits a string command as a shell would, but runs no shell.
            return shlex.split(raw)
        args = [str(a) for a in raw]
        # meshdev runs a string command with `sh -c` (and its export writes it so).
        if len(args) == 3 and args[:2] == ["sh", "-c"]:
            return args[2]
        return args


def import_compose(
    text: str,
    *,
    compose_dir: Path,
    mesh_dir: Path,
    name: str | None = None,
    source: str = "docker-compose.yml",
) -> ComposeImport:
    """`compose_dir`: the compose file's folder (its paths are relative to it); `mesh_dir`:
    where mesh.yaml will be written (its build folders are relative to that). Raises
    ComposeInvalid listing every problem of a file that is not valid Compose."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ComposeInvalid([f"{source}: not YAML: {exc}"]) from None
    if not isinstance(document, dict):
        raise ComposeInvalid([f"{source}: a Compose file is a mapping"])
    problems = schema_problems(document)
    if problems:
        raise ComposeInvalid([f"{source}: {p}" for p in problems])
    notes = Notes()
    reader = _Reader(compose_dir, mesh_dir, notes)
    for key in document:
        if key not in ("services", "name", "version"):
            notes.add(key, "meshdev's pods share one network and keep no volumes or secrets")
    services: Doc = document.get("services") or {}
    exported = any(layout.LABEL_ROLE in _labels(s or {}) for s in services.values())
    mesh: Doc = {"name": mesh_name(name or str(document.get("name") or compose_dir.resolve().name))}
    if exported:
        mesh["services"] = _exported_services(services, reader, notes)
        gateway = any(
            _labels(s or {}).get(layout.LABEL_ROLE) == "gateway" for s in services.values()
        )
        # Said with or without a gateway: a mesh without one still loses its calls and routes.
        notes.add(
            "ingress" if gateway else "routes",
            ("the gateway (its port and routes), and " if gateway else "")
            + "every service's routes, policies, security and calls, and tracing, are in the "
            "Envoy bootstraps (envoy/*.yaml), which are not read back",
        )
    else:
        mesh["services"], ingress = _services(services, reader, notes)
        if ingress is not None:
            mesh["ingress"] = ingress
    if not mesh["services"]:
        raise ComposeInvalid([f"{source}: no service to import"])
    return ComposeImport(mesh, tuple(notes))


def _service_name(raw: str, taken: set[str], notes: Notes) -> str:
    name = mesh_name(raw)
    if name in taken or not _NAME.match(name):
        base, i = name[:36], 2
        while f"{base}-{i}" in taken:
            i += 1
        name = f"{base}-{i}"
    if name != raw:
        notes.add(f"services.{raw}", f"named {name} in mesh.yaml (a DNS label)")
    taken.add(name)
    return name


def _services(services: Mapping[str, Any], reader: _Reader, notes: Notes) -> tuple[Doc, Doc | None]:
    out: Doc = {}
    taken: set[str] = set()
    published: list[tuple[str, _Port]] = []
    for raw_name, raw in services.items():
        svc: Doc = raw or {}
        where = f"services.{raw_name}"
        name = _service_name(raw_name, taken, notes)
        entry: Doc = {}
        if "build" in svc:
            build = reader.build(svc["build"], f"{where}.build")
            if build is not None:
                entry["build"] = build
            if "image" in svc:
                notes.add(
                    f"{where}.image",
                    "Compose tags the build with it; meshdev runs the build and names its image",
                )
        elif "image" in svc:
            entry["image"] = svc["image"]
        command = reader.command(svc.get("command"))
        if command is not None:
            entry["command"] = command
        watch = reader.watch(svc, entry.get("build"), where)
        if watch:
            entry["watch"] = watch
        ports = _parse_ports(svc.get("ports") or [], f"{where}.ports", notes)
        exposed = _expose(svc.get("expose") or [], f"{where}.expose", notes)
        candidates = exposed + [p.target for p in ports if p.target not in exposed]
        if candidates:
            entry["port"] = candidates[0]
            for other in candidates[1:]:
                notes.add(
                    f"{where}.ports",
                    f"port {other}: a meshdev service has one port ({candidates[0]})",
                )
        else:
            notes.add(where, f"no port exposed or published: meshdev assumes {DEFAULT_PORT}")
        port = candidates[0] if candidates else DEFAULT_PORT
        if port in WELL_KNOWN_TCP:
            entry["protocol"] = "tcp"
            notes.add(
                where,
                f"protocol: tcp (port {port} is {WELL_KNOWN_TCP[port]}'s), relayed by "
                "connection; HTTP is meshdev's default",
            )
        published += [(name, p) for p in ports if p.published is not None]
        env = _environment(svc.get("environment"), f"{where}.environment", notes)
        if env:
            entry["env"] = env
        replicas = (svc.get("deploy") or {}).get("replicas", svc.get("scale"))
        if replicas is not None:
            entry["replicas"] = int(replicas)
        for key in sorted(set(svc.get("deploy") or {}) - {"replicas"}):
            notes.add(f"{where}.deploy.{key}", "meshdev has no such setting")
        if "healthcheck" in svc:
            path = _health_path(svc["healthcheck"], port, f"{where}.healthcheck", notes)
            if path is not None and entry.get("protocol") == "tcp":
                notes.add(
                    f"{where}.healthcheck",
                    "a tcp service is ready when its port accepts; no health_path",
                )
            elif path is not None:
                entry["health_path"] = path
        for key in sorted(set(svc) - _READ):
            notes.add(f"{where}.{key}", "meshdev has no such setting")
        if "build" not in entry and "image" not in entry:
            notes.add(where, "neither a build folder nor an image: give one in mesh.yaml")
        out[name] = entry
    ingress: Doc | None = None
    for service, p in published:
        if p.host_ip not in (None, "127.0.0.1"):
            notes.add(p.where, f"published on {p.host_ip}: meshdev publishes on 127.0.0.1 only")
        own_port = out[service].get("port", DEFAULT_PORT)
        if out[service].get("protocol") == "tcp":
            notes.add(
                p.where,
                f"{p.published}:{p.target}: meshdev's gateway routes HTTP only; a tcp service "
                "is reached from inside the mesh",
            )
        elif ingress is None:
            assert p.published is not None
            ingress = {
                "port": p.published,
                "routes": [{"name": service, "match": {"prefix": "/"}, "to": service}],
            }
            if p.target != own_port:
                notes.add(
                    p.where,
                    f"{p.published}:{p.target}: the gateway reaches {service} on its port "
                    f"{own_port}",
                )
        else:
            notes.add(
                p.where,
                f"{p.published}:{p.target} of {service}: meshdev has one gateway port "
                f"({ingress['port']}); give {service} a path there with an ingress route",
            )
    return out, ingress


# -- a file meshdev wrote --------------------------------------------------------------------


@dataclass(slots=True)
class _Group:
    """The containers of one mesh service's version (None: the service itself)."""

    pods: list[dict[str, str]]  # each pod's user environment
    stub_env: dict[str, str] | None
    runnable: Doc


def _user_env(
    env: dict[str, str], labels: Mapping[str, str], tcp: Mapping[str, int]
) -> dict[str, str]:
    """The environment the user gave: what plan.app_env adds, taken out (a value of the
    user's that differs from meshdev's own stays: it is an override)."""
    own = {
        "SERVICE": labels.get(layout.LABEL_SERVICE),
        "POD": labels.get(layout.LABEL_POD),
        "VERSION": labels.get(layout.LABEL_VERSION),
        "TINI_KILL_PROCESS_GROUP": "1",
    }
    for name, port in tcp.items():
        if name != labels.get(layout.LABEL_SERVICE):
            own[f"{env_prefix(name)}_SERVICE_HOST"] = "127.0.0.1"
            own[f"{env_prefix(name)}_SERVICE_PORT"] = str(port)
    out = {}
    for key, value in env.items():
        if key in own:
            if own[key] == value:
                continue
        elif key in _MESHDEV_ENV:
            continue  # HOST, PORT, HTTP_PROXY, ...: meshdev's, whatever the user said
        out[key] = value
    return out


def _exported_services(services: Mapping[str, Any], reader: _Reader, notes: Notes) -> Doc:
    apps = {n: s for n, s in services.items() if _labels(s or {}).get(layout.LABEL_ROLE) == "app"}
    tcp = {
        lab[layout.LABEL_SERVICE]: int(lab[layout.LABEL_PORT])
        for s in apps.values()
        if (lab := _labels(s)).get(layout.LABEL_PROTOCOL) == "tcp"
    }
    groups: dict[str, dict[str | None, _Group]] = {}
    shape: dict[str, Doc] = {}
    watches: dict[str, list[str]] = {}
    for compose_name, svc in apps.items():
        lab = _labels(svc)
        service = lab[layout.LABEL_SERVICE]
        version = lab.get(layout.LABEL_VERSION)
        where = f"services.{compose_name}"
        runnable: Doc = {}
        if "build" in svc:
            build = reader.build(svc["build"], f"{where}.build", exported=True)
            if build is not None:
                runnable["build"] = build
        elif svc.get("working_dir") != layout.APP_MOUNT:
            runnable["image"] = svc.get("image")
        command = reader.command(svc.get("command"))
        if command is not None:
            runnable["command"] = command
        env = _environment(svc.get("environment"), f"{where}.environment", notes)
        group = groups.setdefault(service, {}).setdefault(version, _Group([], None, runnable))
        if (svc.get("deploy") or {}).get("replicas") == 0:
            group.stub_env = _user_env(env, lab, tcp)
        else:
            group.pods.append(_user_env(env, lab, tcp))
        svc_shape: Doc = {"port": int(lab.get(layout.LABEL_PORT, DEFAULT_PORT))}
        if lab.get(layout.LABEL_PROTOCOL, "http") != "http":
            svc_shape["protocol"] = lab[layout.LABEL_PROTOCOL]
        if layout.LABEL_HEALTH_PATH in lab:
            svc_shape["health_path"] = lab[layout.LABEL_HEALTH_PATH]
        if lab.get(layout.LABEL_EXCLUDED_PORTS):
            svc_shape["excluded_ports"] = [
                int(p) for p in lab[layout.LABEL_EXCLUDED_PORTS].split(",")
            ]
        if service not in watches:
            # Every pod of a service has the same develop.watch: the first one's is read.
            watches[service] = reader.watch(svc, runnable.get("build"), where)
        if watches[service]:
            svc_shape["watch"] = watches[service]
        shape[service] = svc_shape
    out: Doc = {}
    for service, versions in groups.items():
        envs = [
            e
            for g in versions.values()
            for e in (g.pods or ([g.stub_env] if g.stub_env is not None else []))
        ]
        common = {k: v for k, v in envs[0].items() if all(e.get(k) == v for e in envs[1:])}
        entry: Doc = {}
        runnables = [g.runnable for g in versions.values()]
        shared = all(r == runnables[0] for r in runnables)
        if None in versions:
            group = versions[None]
            entry.update(group.runnable)
            entry.update(shape[service])
            if common:
                entry["env"] = common
            entry["replicas"] = len(group.pods)
        else:
            if shared:
                entry.update(runnables[0])
            entry.update(shape[service])
            if common:
                entry["env"] = common
            entry["versions"] = {}
            for vname, group in versions.items():
                assert vname is not None
                ver: Doc = {"replicas": len(group.pods)}
                if not shared:
                    ver.update(group.runnable)
                sample = group.pods[0] if group.pods else (group.stub_env or {})
                own = {k: v for k, v in sample.items() if common.get(k) != v}
                if own:
                    ver["env"] = own
                entry["versions"][vname] = ver
        out[service] = entry
    return out


def parse_checked(mesh: Doc, source: str) -> None:
    """Raise ComposeInvalid when the imported mesh.yaml would not load (a name meshdev
    refuses, say), with the loader's reasons."""
    from meshdev.config import parse_mesh

    try:
        parse_mesh(yaml.safe_dump(mesh, sort_keys=False).encode(), source)
    except MeshInvalid as exc:
        raise ComposeInvalid([str(p) for p in exc.problems]) from None


def dump_mesh(result: ComposeImport, source: str) -> str:
    head = [f"# Imported by `meshdev import compose` from {source}."]
    if result.notes:
        head.append("# Not carried over, or carried over differently:")
        head += [f"#   {note}" for note in result.notes]
    body = yaml.safe_dump(result.mesh, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(head) + "\n" + body
