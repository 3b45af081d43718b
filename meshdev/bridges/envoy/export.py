"""`meshdev export envoy`: every pod's Envoy bootstrap, rendered by meshdev's own plan.

Each bootstrap is translated from the very SidecarConfig `plan.render` gives meshdev's sidecar
for that pod, so both proxies get the same routes, clusters and limits. Only the placements
are the target's: the compose layout (export compose), where each pod is a pair of containers
sharing one network namespace, its sidecar the compose service named after the pod:

- other pods reach a pod's inbound listener at `<pod>:15006` (the compose service's name);
- the app and the outbound listener share the pod's loopback (HTTP_PROXY=127.0.0.1:15001), as
  on meshdev's process runtime; nothing is captured;
- listeners that others reach bind 0.0.0.0, and so does the gateway's (published by compose);
- the admin API binds the pod's loopback; the read-only `meshdev_admin` listener (bootstrap.py)
  is what compose publishes on the host's 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from meshdev.bridges.envoy.bootstrap import ADMIN_VIEW_PORT, bootstrap
from meshdev.bridges.envoy.notes import Note, Notes
from meshdev.bridges.envoy.proto import Json
from meshdev.common import sidecar_config as sc
from meshdev.config.model import Mesh
from meshdev.plan import Placement, PodSpec, pods, render

Format = Literal["yaml", "json"]
LOOPBACK = "127.0.0.1"
ANY = "0.0.0.0"


def compose_placement(pod: PodSpec) -> Placement:
    """Where a pod's sidecar is in the compose layout (module doc)."""
    return Placement(pod.name, address=pod.name, listen=ANY, local=LOOPBACK, public=ANY)


def admin_view_port(mesh: Mesh) -> int:
    """15090, unless a port of the pod's own (an app's, a tcp service's, the gateway's) has it."""
    taken = {svc.port for svc in mesh.services.values()}
    taken |= {sc.ADMIN_PORT, sc.OUTBOUND_PORT, sc.INBOUND_PORT}
    if mesh.ingress is not None:
        taken.add(mesh.ingress.port)
    port = ADMIN_VIEW_PORT
    while port in taken:
        port += 1
    return port


@dataclass(frozen=True, slots=True)
class PodBootstrap:
    pod: PodSpec
    placement: Placement
    # What meshdev's own sidecar would serve in this pod: the source of `bootstrap`.
    config: sc.SidecarConfig
    bootstrap: Json

    def file_name(self, fmt: Format) -> str:
        return f"{self.pod.name}.{fmt}"


@dataclass(frozen=True, slots=True)
class EnvoyExport:
    pods: tuple[PodBootstrap, ...]
    notes: tuple[Note, ...]
    admin_view_port: int


def export_envoy(mesh: Mesh, *, defaults: Mapping[str, Any] | None = None) -> EnvoyExport:
    """`defaults`: the sidecar template's (templates/sidecar.yaml), as the control plane
    renders with; none: the config's own defaults, which are the template's."""
    specs = pods(mesh)
    placed = [(spec, compose_placement(spec)) for spec in specs]
    view_port = admin_view_port(mesh)
    notes = Notes()
    out: list[PodBootstrap] = []
    for spec, placement in placed:
        cfg = render(mesh, spec, placement, placed, version=1, defaults=defaults or {})
        doc = bootstrap(
            cfg, notes, admin_address=placement.local, view=(placement.listen, view_port)
        )
        out.append(PodBootstrap(spec, placement, cfg, doc))
    return EnvoyExport(tuple(out), tuple(notes), view_port)


def dump(doc: Json, fmt: Format) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def write_bootstraps(export: EnvoyExport, out_dir: Path, fmt: Format = "yaml") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for pod in export.pods:
        path = out_dir / pod.file_name(fmt)
        path.write_text(dump(pod.bootstrap, fmt), encoding="utf-8")
        # Envoy's image runs as its own user (uid 101), which must read a mounted bootstrap;
        # a bootstrap holds no secret.
        path.chmod(0o644)
        written.append(path)
    return written
