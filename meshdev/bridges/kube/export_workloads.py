"""The Kubernetes half of an export: the namespace, and per service its ServiceAccount (its
identity), Service (its name and ports) and one Deployment per subset."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.report import Gaps
from meshdev.bridges.kube.workloads import ImpliedEnv, Workload, tcp_services
from meshdev.config.model import Mesh, Service

Doc = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """Where the mesh goes: the namespace, and the registry its built images are pushed to."""

    namespace: str
    image_prefix: str = ""


@dataclass
class Builds:
    """The images a cluster needs built from the mesh's folders: image -> folder."""

    images: dict[str, str] = field(default_factory=dict)


def labels(mesh: Mesh, **more: str) -> dict[str, str]:
    return {**more, kc.PART_OF: mesh.name, kc.MANAGED_BY: "meshdev"}


def metadata(
    name: str,
    namespace: str | None,
    lbls: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> Doc:
    meta: Doc = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = lbls
    if annotations:
        meta["annotations"] = annotations
    return meta


def namespace(mesh: Mesh, target: Target) -> Doc:
    annotations = {kc.MESH_ANNOTATION: mesh.name}
    if mesh.base_image is not None:
        annotations[kc.BASE_IMAGE_ANNOTATION] = mesh.base_image
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": metadata(target.namespace, None, labels(mesh, **kc.INJECTION), annotations),
    }


def service_account(mesh: Mesh, name: str, target: Target) -> Doc:
    # Its name is the service's: Istio's principal cluster.local/ns/<ns>/sa/<service> is then
    # the one meshdev gives the service's workloads.
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, target.namespace, labels(mesh, app=name)),
    }


def service_ports(svc: Service) -> list[Doc]:
    """Port 80 (http://<service>) and the app's own port for HTTP-speaking services; a tcp
    service only at its port, as its callers' $<NAME>_SERVICE_PORT says."""
    ports = [svc.port] if svc.protocol == "tcp" else sorted({kc.CALL_PORT, svc.port})
    return [
        {"name": kc.port_name(svc.protocol, p), "port": p, "targetPort": svc.port} for p in ports
    ]


def service(mesh: Mesh, name: str, svc: Service, target: Target) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, target.namespace, labels(mesh, app=name)),
        "spec": {"selector": {kc.APP: name}, "ports": service_ports(svc)},
    }


def _where(w: Workload) -> str:
    base = f"services.{w.service}"
    return base if w.subset is None else f"{base}.versions.{w.subset}"


def image(mesh: Mesh, w: Workload, target: Target, builds: Builds, gaps: Gaps) -> str:
    if w.image is not None:
        return w.image
    if w.build is not None:
        tag = kc.image_name(
            target.image_prefix, mesh.name, w.service, w.subset if w.own_build else None
        )
        builds.images.setdefault(tag, w.build)
        return tag
    gaps.add(
        f"{_where(w)}.command",
        "runs in the base image with the mesh file's folder as its working folder; a cluster "
        "has no such folder, so the Deployment runs it in the base image alone: give the "
        "service a build (a folder with a Dockerfile) or an image",
    )
    return mesh.base_image or kc.DEFAULT_BASE_IMAGE


def env(mesh: Mesh, w: Workload, svc: Service) -> list[Doc]:
    implied = ImpliedEnv(w.service, w.subset, svc.port, tcp_services(mesh, w.service))
    values: dict[str, str | None] = {**implied.identity(), "POD": None}
    values.update(w.env)
    values.update(implied.listen())
    out: list[Doc] = []
    for key in sorted(values):
        value = values[key]
        if value is None:
            # The pod's own name, as meshdev's POD: Kubernetes' downward API.
            out.append({"name": key, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        else:
            out.append({"name": key, "value": value})
    return out


def args(command: str | tuple[str, ...] | None) -> list[str] | None:
    """meshdev's command is what Docker runs as the container's command, after the image's
    entrypoint: Kubernetes' `args` (its `command` would replace the entrypoint)."""
    if command is None:
        return None
    if isinstance(command, str):
        return ["sh", "-c", command]
    return list(command)


def readiness(svc: Service) -> Doc:
    if svc.health_path is not None:
        return {"httpGet": {"path": svc.health_path, "port": svc.port}}
    # meshdev's "ready when its port accepts".
    return {"tcpSocket": {"port": svc.port}}


def liveness(path: str, port: int) -> Doc:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": kc.LIVENESS_PERIOD_SECONDS,
        "timeoutSeconds": kc.LIVENESS_TIMEOUT_SECONDS,
        "failureThreshold": kc.LIVENESS_FAILURES,
    }


def deployment(mesh: Mesh, w: Workload, target: Target, builds: Builds, gaps: Gaps) -> Doc:
    svc = mesh.services[w.service]
    pod_labels = {kc.APP: w.service}
    if w.subset is not None:
        pod_labels[kc.VERSION] = w.subset
    container: Doc = {"name": w.service, "image": image(mesh, w, target, builds, gaps)}
    command = args(w.command)
    if command is not None:
        container["args"] = command
    container["env"] = env(mesh, w, svc)
    container["ports"] = [{"containerPort": svc.port}]
    container["readinessProbe"] = readiness(svc)
    if svc.liveness_path is not None:
        container["livenessProbe"] = liveness(svc.liveness_path, svc.port)
    template_meta: Doc = {"labels": dict(pod_labels)}
    if svc.excluded_ports:
        ports = ",".join(str(p) for p in sorted(set(svc.excluded_ports)))
        template_meta["annotations"] = {kc.EXCLUDE_INBOUND: ports, kc.EXCLUDE_OUTBOUND: ports}
    annotations = {kc.BUILD_ANNOTATION: w.build} if w.build is not None else None
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(
            kc.deployment_name(w.service, w.subset),
            target.namespace,
            labels(mesh, **pod_labels),
            annotations,
        ),
        "spec": {
            "replicas": w.replicas,
            # The nearest Kubernetes has to "fail if not ready within": a rollout whose pods
            # are not ready by then is marked failed (its pods are not killed).
            **(
                {"progressDeadlineSeconds": max(1, math.ceil(svc.ready_timeout))}
                if svc.ready_timeout is not None
                else {}
            ),
            "selector": {"matchLabels": dict(pod_labels)},
            "template": {
                "metadata": template_meta,
                "spec": {"serviceAccountName": w.service, "containers": [container]},
            },
        },
    }
