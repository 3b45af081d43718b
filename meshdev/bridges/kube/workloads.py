"""A mesh's workloads as a cluster sees them: one per service and subset, with what each pod
really gets (a version's build, image, command and env over its service's, as the plan
resolves them), and the way back from such flattened facts to a mesh file's fields."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from meshdev.bridges.kube.conventions import LISTEN_HOST
from meshdev.config.model import Mesh, env_prefix

V = TypeVar("V", bound=Hashable)

Command = str | tuple[str, ...]


@dataclass(frozen=True)
class Workload:
    """One Deployment: a service, or one subset of it."""

    service: str
    subset: str | None
    replicas: int
    # The app's own environment, as the plan gives it (the service's, VERSION, the
    # version's), before meshdev adds where to listen and who it is.
    env: Mapping[str, str]
    build: str | None
    image: str | None
    command: Command | None
    # Whether its build differs from its service's (its image then carries the subset).
    own_build: bool = False


def workloads(mesh: Mesh) -> list[Workload]:
    """The mesh's workloads in file order, as `plan.pods` resolves a version's fields
    (including versions with no replicas, which have no pods to ask)."""
    out: list[Workload] = []
    for name, svc in mesh.services.items():
        if not svc.versions:
            replicas = svc.pod_count()
            out.append(
                Workload(name, None, replicas, dict(svc.env), svc.build, svc.image, svc.command)
            )
            continue
        for vname, ver in svc.versions.items():
            build = ver.build or (None if ver.image else svc.build)
            out.append(
                Workload(
                    name,
                    vname,
                    ver.replicas,
                    {**svc.env, "VERSION": vname, **ver.env},
                    build,
                    ver.image or (None if ver.build else svc.image),
                    ver.command or svc.command,
                    own_build=build is not None and build != svc.build,
                )
            )
    return out


@dataclass(frozen=True)
class ImpliedEnv:
    """What meshdev sets in every app's environment (plan.app_env) that a cluster's pod gets
    from its Deployment: who it is, where to listen, where tcp services are."""

    service: str
    subset: str | None
    port: int
    tcp_services: Sequence[tuple[str, int]] = field(default_factory=tuple)

    def identity(self) -> dict[str, str]:
        """Defaults the app's own env may override (plan: before the app's env)."""
        env = {"SERVICE": self.service}
        if self.subset is not None:
            env["VERSION"] = self.subset
        for name, port in self.tcp_services:
            # Kubernetes sets these for a Service that exists when the pod starts; set here,
            # they hold whatever order the files are applied in.
            env[f"{env_prefix(name)}_SERVICE_HOST"] = name
            env[f"{env_prefix(name)}_SERVICE_PORT"] = str(port)
        return env

    def listen(self) -> dict[str, str]:
        """What meshdev always sets, over the app's env (the contract of `command`)."""
        return {"HOST": LISTEN_HOST, "PORT": str(self.port)}

    def own(self, env: Mapping[str, str]) -> dict[str, str]:
        """The app's own part of a pod's environment: without what meshdev sets anyway."""
        implied = {**self.identity(), **self.listen()}
        return {k: v for k, v in env.items() if implied.get(k) != v and k not in self.listen()}


def tcp_services(mesh: Mesh, service: str) -> tuple[tuple[str, int], ...]:
    """The tcp services a workload of `service` reaches (plan.tcp_destinations): those in
    its `calls:` when it has one."""
    calls = mesh.services[service].calls
    return tuple(
        (name, svc.port)
        for name, svc in mesh.services.items()
        if svc.protocol == "tcp" and name != service and (calls is None or name in calls)
    )


# -- flattened facts back into a service --------------------------------------------------


def common(values: Sequence[V | None]) -> V | None:
    """The value every version has, else None (each version then keeps its own)."""
    if values and all(v is not None and v == values[0] for v in values):
        return values[0]
    return None


def common_env(envs: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Entries every version has alike: the service's env. VERSION stays with each version:
    the plan sets a version's own name over the service's."""
    if not envs:
        return {}
    first = envs[0]
    return {
        k: v
        for k, v in sorted(first.items())
        if k != "VERSION" and all(e.get(k) == v for e in envs[1:])
    }


def without(env: Mapping[str, str], shared: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(env.items()) if shared.get(k) != v}


def service_fields(parts: Sequence[Workload]) -> dict[str, object]:
    """The mesh-file fields of a service from its workloads (build, image, command, env,
    replicas, versions): what all its subsets share becomes the service's."""
    out: dict[str, object] = {}
    versioned = [w for w in parts if w.subset is not None]
    if not versioned:
        (w,) = parts
        for key, value in (("build", w.build), ("image", w.image), ("command", w.command)):
            if value is not None:
                out[key] = value
        out["replicas"] = w.replicas
        if w.env:
            out["env"] = dict(sorted(w.env.items()))
        return out
    shared: dict[str, object] = {}
    for key in ("build", "image", "command"):
        value = common([getattr(w, key) for w in versioned])
        if value is not None:
            shared[key] = value
    out.update(shared)
    env = common_env([w.env for w in versioned])
    if env:
        out["env"] = env
    versions: dict[str, dict[str, object]] = {}
    for w in versioned:
        assert w.subset is not None
        ver: dict[str, object] = {"replicas": w.replicas}
        for key in ("build", "image", "command"):
            value = getattr(w, key)
            if value is not None and key not in shared:
                ver[key] = value
        own = without(w.env, env)
        if own:
            ver["env"] = own
        versions[w.subset] = ver
    out["versions"] = versions
    return out
