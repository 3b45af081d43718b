"""Kubernetes' Services and Deployments -> mesh.yaml's services: a Service names one, the
Deployments it selects are its pods (their `version` label its subsets), their container
its image, command, env, port and readiness."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.import_docs import Path, Source, is_port, whole
from meshdev.bridges.kube.workloads import Workload
from meshdev.common.envoy_names import ServiceProtocol
from meshdev.config.model import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.match(value) is not None


@dataclass
class Pod:
    """One Deployment's pods, before meshdev's own env is told from the app's."""

    subset: str | None
    replicas: int
    env: dict[str, str]
    build: str | None
    image: str | None
    command: str | tuple[str, ...] | None
    account: str
    health_path: str | None
    probed: bool
    liveness_path: str | None
    # spec.progressDeadlineSeconds: how long a rollout may take to get ready (ready_timeout).
    ready_timeout: int | None
    excluded: tuple[int, ...]
    source: Source


@dataclass
class ImportedService:
    name: str
    port: int
    protocol: ServiceProtocol
    ports: set[int]
    pods: list[Pod] = field(default_factory=list)

    def workloads(self, own_env: dict[int, dict[str, str]]) -> list[Workload]:
        return [
            Workload(self.name, p.subset, p.replicas, own_env[id(p)], p.build, p.image, p.command)
            for p in self.pods
        ]

    def subsets(self) -> set[str]:
        return {p.subset for p in self.pods if p.subset is not None}


def _pod_labels(d: Source) -> dict[str, str]:
    found = d.take("spec", "template", "metadata", "labels")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _container(d: Source, app: str) -> int | None:
    containers = d.get("spec", "template", "spec", "containers")
    if not isinstance(containers, list) or not containers:
        d.note(("spec", "template", "spec"), "no container: left out")
        return None
    chosen = 0
    for i, c in enumerate(containers):
        if isinstance(c, dict) and c.get("name") == app:
            chosen = i
    for i in range(len(containers)):
        if i != chosen:
            d.note(
                ("spec", "template", "spec", "containers", i),
                "meshdev runs one app container per pod (beside its sidecar): left out",
            )
    return chosen


def _command(d: Source, c: Path) -> str | tuple[str, ...] | None:
    entry = d.take(*c, "command")
    d.take(*c, "args")
    parts = [str(x) for x in d.sequence(*c, "command")] + [str(x) for x in d.sequence(*c, "args")]
    if entry:
        d.note(
            (*c, "command"),
            "replaces the image's entrypoint, which meshdev's command runs after: taken as the "
            "start of the command",
        )
    if not parts:
        return None
    if len(parts) == 3 and parts[:2] == ["sh", "-c"]:
        return parts[2]
    return tuple(parts)


def _env(d: Source, c: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, entry in d.items(*c, "env"):
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        name = str(d.take(*c, "env", i, "name"))
        if "valueFrom" in entry:
            field_path = d.get(*c, "env", i, "valueFrom", "fieldRef", "fieldPath")
            if name == "POD" and field_path == "metadata.name":
                d.take(*c, "env", i, "valueFrom")  # meshdev's own POD
            else:
                d.note((*c, "env", i, "valueFrom"), f"{name} from a reference: left out")
            continue
        value = d.take(*c, "env", i, "value")
        env[name] = "" if value is None else str(value)
    return env


def _probe(d: Source, c: Path, port: int) -> tuple[str | None, bool]:
    """The readiness probe's health path (None: ready when the port accepts), and whether
    the container had one at all."""
    probe = d.get(*c, "readinessProbe")
    if not isinstance(probe, dict):
        return None, False
    p: Path = (*c, "readinessProbe")
    if "httpGet" in probe:
        path = d.take(*p, "httpGet", "path")
        given = d.take(*p, "httpGet", "port")
        if given not in (port, None) and not isinstance(given, str):
            d.note((*p, "httpGet", "port"), f"meshdev asks the app's own port, {port}")
        return (str(path) if path else "/"), True
    if "tcpSocket" in probe:
        d.take(*p, "tcpSocket")
        return None, True
    d.note(p, "meshdev probes an HTTP path or the port: ready when the port accepts")
    return None, True


def _liveness(d: Source, c: Path, port: int) -> str | None:
    """The liveness probe's HTTP path; its timings when they are not meshdev's are said."""
    probe = d.get(*c, "livenessProbe")
    if not isinstance(probe, dict):
        return None
    p: Path = (*c, "livenessProbe")
    if not isinstance(probe.get("httpGet"), dict):
        d.note(p, "meshdev's liveness probe asks an HTTP path: left out")
        return None
    path = d.take(*p, "httpGet", "path")
    given = d.take(*p, "httpGet", "port")
    if given not in (port, None) and not isinstance(given, str):
        d.note((*p, "httpGet", "port"), f"meshdev asks the app's own port, {port}")
    meshdev = {
        "periodSeconds": kc.LIVENESS_PERIOD_SECONDS,
        "timeoutSeconds": kc.LIVENESS_TIMEOUT_SECONDS,
        "failureThreshold": kc.LIVENESS_FAILURES,
    }
    for key, ours in meshdev.items():
        if d.take(*p, key) != ours:
            d.note(
                (*p, key),
                f"meshdev asks every {kc.LIVENESS_PERIOD_SECONDS}s, allows "
                f"{kc.LIVENESS_TIMEOUT_SECONDS}s, and restarts after {kc.LIVENESS_FAILURES} "
                "failures in a row",
            )
            break
    return str(path) if path else "/"


def _excluded(d: Source) -> tuple[int, ...]:
    found: list[set[int]] = []
    for key in (kc.EXCLUDE_INBOUND, kc.EXCLUDE_OUTBOUND):
        value = d.get("spec", "template", "metadata", "annotations", key)
        if value is None:
            found.append(set())
            continue
        d.take("spec", "template", "metadata", "annotations", key)
        ports = {int(p) for p in str(value).split(",") if p.strip().isdigit()}
        found.append({p for p in ports if is_port(p)})
    inbound, outbound = found
    if inbound != outbound:
        d.note(
            ("spec", "template", "metadata", "annotations"),
            "meshdev's excluded_ports leave a port alone both ways: both lists are joined",
        )
    return tuple(sorted(inbound | outbound))


def container_ports(d: Source) -> dict[str, int]:
    """A Deployment's named container ports, and "" for its first."""
    out: dict[str, int] = {}
    containers = d.get("spec", "template", "spec", "containers")
    for c in containers if isinstance(containers, list) else []:
        ports = c.get("ports") if isinstance(c, dict) else None
        for p in ports if isinstance(ports, list) else []:
            if isinstance(p, dict) and is_port(p.get("containerPort")):
                out.setdefault("", p["containerPort"])
                if isinstance(p.get("name"), str):
                    out[p["name"]] = p["containerPort"]
    return out


def read_pod(d: Source, app: str, subset: str | None, port: int) -> Pod | None:
    index = _container(d, app)
    if index is None:
        return None
    c: Path = ("spec", "template", "spec", "containers", index)
    d.take(*c, "name")
    d.take(*c, "ports")
    build = d.annotations().get(kc.BUILD_ANNOTATION)
    image = d.take(*c, "image")
    replicas = d.take("spec", "replicas")
    health, probed = _probe(d, c, port)
    alive = _liveness(d, c, port)
    deadline = d.take("spec", "progressDeadlineSeconds")
    d.take("spec", "selector")
    account = d.take("spec", "template", "spec", "serviceAccountName") or "default"
    return Pod(
        subset=subset,
        replicas=replicas if whole(replicas) else 1,
        env=_env(d, c),
        # A built image's name is the export's; its folder is what the mesh file says.
        build=build,
        image=None if build is not None else (str(image) if image else None),
        command=_command(d, c),
        account=str(account),
        health_path=health,
        probed=probed,
        liveness_path=alive,
        ready_timeout=deadline if whole(deadline) and deadline > 0 else None,
        excluded=_excluded(d),
        source=d,
    )


def _service_port(s: Source, named: dict[str, int]) -> tuple[int, ServiceProtocol, set[int]]:
    """meshdev's one port: where the first Service port leads (Istio's protocol from its name);
    the Service's own port numbers, which destinations may name."""
    chosen: tuple[int, ServiceProtocol] | None = None
    numbers: set[int] = set()
    for i, entry in s.items("spec", "ports"):
        if not isinstance(entry, dict):
            continue
        p: Path = ("spec", "ports", i)
        number = s.take(*p, "port")
        if is_port(number):
            numbers.add(number)
        if s.get(*p, "protocol") in (None, "TCP"):
            s.take(*p, "protocol")
        target = s.take(*p, "targetPort")
        if target is None:
            target = number
        if isinstance(target, str):
            target = named.get(target)
        if not is_port(target):
            s.note((*p, "targetPort"), "names no port of its Deployments' containers")
            continue
        name, app = s.take(*p, "name"), s.take(*p, "appProtocol")
        protocol, lost = kc.port_protocol(
            None if name is None else str(name), None if app is None else str(app)
        )
        if lost:
            s.note((*p, "name"), lost)
        if chosen is None and isinstance(target, int):
            chosen = (target, protocol)
        elif chosen is not None and target != chosen[0]:
            s.note(p, f"meshdev gives a service one port, {chosen[0]}: left out")
    if chosen is None:
        port = named.get("", 8080)
        s.note(("spec", "ports"), f"no port: the container's, {port}")
        return port, "http", numbers
    return chosen[0], chosen[1], numbers


def read_services(services: list[Source], deployments: list[Source]) -> dict[str, ImportedService]:
    """Each Service with the Deployments it selects; a Deployment no Service selects is a
    service of its own (named by its `app` label), as Istio would not route to it."""
    labels = {id(d): _pod_labels(d) for d in deployments}
    claimed: set[int] = set()
    found: list[tuple[Source | None, str, list[Source]]] = []
    for s in sorted(services, key=lambda s: s.name):
        selector = s.take("spec", "selector")
        if s.get("spec", "type") in (None, "ClusterIP"):
            s.take("spec", "type")
        if not isinstance(selector, dict) or not selector:
            s.note((), "selects no pods (no selector): left out")
            continue
        if not is_name(s.name):
            s.note((), "its name is no meshdev service name (lower case, digits, -): left out")
            continue
        mine = [
            d
            for d in deployments
            if id(d) not in claimed
            and all(labels[id(d)].get(str(k)) == str(v) for k, v in selector.items())
        ]
        if not mine:
            s.note((), "no Deployment in these files runs its pods: left out")
            continue
        claimed.update(id(d) for d in mine)
        found.append((s, s.name, mine))
    for d in deployments:
        if id(d) in claimed:
            continue
        app = labels[id(d)].get(kc.APP) or d.name
        if not is_name(app):
            d.note((), "its app label is no meshdev service name: left out")
            continue
        d.note(
            ("metadata", "name"), f"no Service selects it: service {app}, on its container's port"
        )
        found.append((None, app, [d]))
    out: dict[str, ImportedService] = {}
    for service_doc, name, deps in found:
        if name in out:
            for d in deps:
                d.note((), f"service {name} is already read from another document: left out")
            continue
        named: dict[str, int] = {}
        for d in deps:
            for k, v in container_ports(d).items():
                named.setdefault(k, v)
        if service_doc is not None:
            port, protocol, numbers = _service_port(service_doc, named)
        else:
            port, protocol, numbers = named.get("", 8080), "http", set()
        imported = ImportedService(name, port, protocol, numbers | {port})
        versioned = len(deps) > 1 or any(kc.VERSION in labels[id(d)] for d in deps)
        for d in deps:
            subset = labels[id(d)].get(kc.VERSION) if versioned else None
            if versioned and not is_name(subset):
                d.note(
                    ("spec", "template", "metadata", "labels"),
                    f"{name} has several Deployments: each needs a version label meshdev can "
                    "name a subset by: left out",
                )
                continue
            if subset is not None and subset in imported.subsets():
                d.note((), f"a second Deployment of {name} {subset}: left out")
                continue
            pod = read_pod(d, name, subset, port)
            if pod is not None:
                imported.pods.append(pod)
        if imported.pods:
            out[name] = imported
    return out
