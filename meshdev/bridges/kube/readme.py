"""README.txt of an export: how to build, push and apply it, what each file holds, and what
could not be carried over."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.report import Gap
from meshdev.config.model import Mesh

if TYPE_CHECKING:
    from meshdev.bridges.kube.export_workloads import Target

# The first line: how a later export knows this folder is one it may replace.
MARKER = "meshdev export kubernetes"


def _what(name: str, docs: Sequence[Mapping[str, Any]]) -> str:
    if name == "00-namespace.yaml":
        return "the namespace (Istio sidecar injection on) and its mutual TLS mode"
    if name == "ingress.yaml":
        return "the ingress: an Istio Gateway and the VirtualService bound to it"
    if name == "ratelimit.yaml":
        return "local rate limits: an EnvoyFilter for every sidecar of the namespace"
    kinds = list(dict.fromkeys(str(d["kind"]) for d in docs))
    return ", ".join(kinds)


def readme(
    mesh: Mesh,
    target: Target,
    documents: Mapping[str, Sequence[Mapping[str, Any]]],
    builds: Mapping[str, str],
    gaps: Sequence[Gap],
    mesh_dir: str,
    out_dir: str,
) -> str:
    base = mesh.base_image or kc.DEFAULT_BASE_IMAGE
    lines = [
        f"{MARKER}: mesh {mesh.name!r} for Kubernetes + Istio, in namespace {target.namespace!r}.",
        "Running the export again replaces these files.",
        "",
        "It needs a cluster with Istio installed (`istioctl install`: its default profile's",
        f"ingress gateway, {kc.GATEWAY_SERVICE} in {kc.GATEWAY_NAMESPACE}), kubectl pointing at",
        "it, and a registry the cluster pulls from (--image-prefix REGISTRY/ names it).",
        "",
    ]
    step = 1
    if builds:
        lines += [
            f"{step}. Build and push the images, from the mesh file's folder:",
            "",
            f"     cd {shlex.quote(mesh_dir)}",
        ]
        # One build per folder, tagged for each service that runs it (as meshdev builds).
        folders: dict[str, list[str]] = {}
        for image, folder in sorted(builds.items()):
            folders.setdefault(folder, []).append(image)
        for folder, images in sorted(folders.items()):
            tags = " ".join(f"-t {shlex.quote(i)}" for i in images)
            lines.append(
                f"     docker build --build-arg BASE_IMAGE={shlex.quote(base)} {tags} "
                f"{shlex.quote(folder)}"
            )
        lines += [f"     docker push {shlex.quote(i)}" for i in sorted(builds)]
        lines.append("")
        step += 1
    lines += [
        f"{step}. Apply everything (kubectl takes a folder's files in name order, the",
        "   namespace's first):",
        "",
        f"     kubectl apply -f {shlex.quote(out_dir)}",
        "",
    ]
    step += 1
    if mesh.ingress is not None:
        port = mesh.ingress.port
        lines += [
            f"{step}. Reach the gateway where meshdev publishes it, http://127.0.0.1:{port}/:",
            "",
            f"     kubectl -n {kc.GATEWAY_NAMESPACE} port-forward svc/{kc.GATEWAY_SERVICE} "
            f"{port}:80",
            "",
        ]
    lines += ["Files:", ""]
    width = max(len(f) for f in [*documents, "README.txt"])
    for name, docs in sorted(documents.items()):
        lines.append(f"  {name.ljust(width)}  {_what(name, docs)}")
    lines += [
        f"  {'README.txt'.ljust(width)}  this file",
        "",
        "Not carried over as meshdev runs it (what Kubernetes and Istio cannot say):",
        "",
    ]
    if gaps:
        lines += [f"  - {gap}" for gap in gaps]
    else:
        lines.append("  nothing")
    lines.append("")
    return "\n".join(lines)
