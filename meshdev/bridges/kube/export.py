"""A mesh -> the files that run it on Kubernetes with Istio: one YAML file per service (its
identity, Service, Deployments, routes, policy, the services it calls, mTLS and
authorization), one for the namespace, one for the ingress, one for local rate limits, and a
README.txt saying how to build, push and apply them. Pure: the caller writes the files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.export_security import (
    authorization_policy,
    peer_authentications,
    service_peer_authentication,
)
from meshdev.bridges.kube.export_tracing import telemetry
from meshdev.bridges.kube.export_traffic import (
    destination_rule,
    gateway,
    gateway_envoy_filter,
    gateway_limits,
    rate_limit_gaps,
    sidecar_envoy_filter,
    sidecar_limits,
    sidecar_scope,
    virtual_service,
)
from meshdev.bridges.kube.export_workloads import (
    Builds,
    Doc,
    Target,
    deployment,
    service,
    service_account,
)
from meshdev.bridges.kube.export_workloads import namespace as namespace_doc
from meshdev.bridges.kube.readme import readme
from meshdev.bridges.kube.report import Gap, Gaps
from meshdev.bridges.kube.workloads import workloads
from meshdev.bridges.kube.yamltext import dump_all
from meshdev.config.model import Mesh

NAMESPACE_FILE = "00-namespace.yaml"
INGRESS_FILE = "ingress.yaml"
RATE_LIMIT_FILE = "ratelimit.yaml"
README_FILE = "README.txt"


def service_file(name: str) -> str:
    return f"service-{name}.yaml"


class ExportError(Exception):
    """The mesh cannot be written as a cluster's objects at all (say, two objects would
    share a name); the message says which fields to change."""


@dataclass(frozen=True)
class Export:
    """The files (name -> text, README.txt included), the objects in each, what Kubernetes
    and Istio could not say, and the images to build (image -> folder)."""

    files: dict[str, str]
    documents: dict[str, list[Doc]]
    gaps: tuple[Gap, ...]
    builds: dict[str, str]
    namespace: str


def export_mesh(
    mesh: Mesh,
    namespace: str | None = None,
    image_prefix: str = "",
    mesh_dir: str = ".",
    out_dir: str = ".",
) -> Export:
    """`namespace`: default the mesh's name (so its principals stay the mesh's); `mesh_dir`
    and `out_dir`: the mesh file's folder and the export's, as README.txt's commands should
    name them."""
    target = Target(namespace or mesh.name, image_prefix)
    _check_names(mesh)
    gaps = Gaps()
    builds = Builds()
    documents: dict[str, list[Doc]] = {
        NAMESPACE_FILE: [
            namespace_doc(mesh, target),
            *peer_authentications(mesh, target, gaps),
            *telemetry(mesh, target, gaps),
        ]
    }
    by_service: dict[str, list[Doc]] = {name: [] for name in sorted(mesh.services)}
    for w in sorted(workloads(mesh), key=lambda w: (w.service, w.subset or "")):
        by_service[w.service].append(deployment(mesh, w, target, builds, gaps))
    for name, deployments in by_service.items():
        svc = mesh.services[name]
        docs = [service_account(mesh, name, target), service(mesh, name, svc, target)]
        docs += deployments
        docs.append(destination_rule(mesh, name, target, gaps))
        vs = virtual_service(mesh, name, target, gaps)
        if vs is not None:
            docs.append(vs)
        scope = sidecar_scope(mesh, name, target, gaps)
        if scope is not None:
            docs.append(scope)
        pa = service_peer_authentication(mesh, name, target)
        if pa is not None:
            docs.append(pa)
        policies = sorted(mesh.authorization.get(name, ()), key=lambda a: a.name)
        docs += [authorization_policy(mesh, name, a, target) for a in policies]
        documents[service_file(name)] = docs
    if mesh.ingress is not None:
        docs = gateway(mesh, mesh.ingress, target, gaps)
        limits = gateway_limits(mesh, mesh.ingress)
        if limits:
            docs.append(gateway_envoy_filter(mesh, limits, target))
        documents[INGRESS_FILE] = docs
    rate_limit_gaps(mesh, gaps)
    sidecar = [
        limit for name in sorted(mesh.routes) for limit in sidecar_limits(mesh, name, target)
    ]
    if sidecar:
        documents[RATE_LIMIT_FILE] = [sidecar_envoy_filter(mesh, sidecar, target)]
    _check_collisions(documents)
    files = {name: dump_all(docs) for name, docs in sorted(documents.items())}
    found = tuple(gaps.items)
    files[README_FILE] = readme(mesh, target, documents, builds.images, found, mesh_dir, out_dir)
    return Export(files, documents, found, dict(builds.images), target.namespace)


def _check_names(mesh: Mesh) -> None:
    bad = [name for name in mesh.services if not name[0].isalpha()]
    if bad:
        raise ExportError(
            "; ".join(
                f"services.{name}: a Kubernetes Service's name starts with a letter" for name in bad
            )
        )


def _check_collisions(documents: dict[str, list[Doc]]) -> None:
    keys = Counter(
        (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        for docs in documents.values()
        for d in docs
    )
    clashes = sorted(k for k, n in keys.items() if n > 1)
    if clashes:
        listed = ", ".join(f"{kind} {name}" for kind, _, name in clashes)
        raise ExportError(
            f"two objects would be named alike ({listed}): a service's name is also its "
            f"subsets' Deployments' prefix (<service>-<version>), {kc.INGRESS_NAME} names the "
            "gateway's VirtualService, and authorization policies are named "
            "<service>-<policy>; rename one of them"
        )
