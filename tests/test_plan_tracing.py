"""The plan carries `tracing:` into every sidecar's config, the gateway's included, and a save
that changes it changes every config's hash: the control plane pushes it like any change."""

from __future__ import annotations

import json

import yaml

from meshdev import plan
from meshdev.common import sidecar_config as sc
from meshdev.config import parse_mesh
from tests.test_plan import DEFAULTS, MESH, pairs, placements

ZIPKIN = "http://127.0.0.1:9411/api/v2/spans"


def rendered(mesh_text: str | None = None) -> list[sc.SidecarConfig]:
    mesh = MESH if mesh_text is None else parse_mesh(mesh_text.encode(), "mesh.yaml")
    specs = plan.pods(mesh)
    placed = placements(specs)
    return [
        plan.render(mesh, spec, where, pairs(specs, placed), version=1, defaults=DEFAULTS)
        for spec, where in zip(specs, placed, strict=True)
    ]


def with_tracing(line: str) -> str:
    data = json.loads(MESH.model_dump_json())
    data["tracing"] = yaml.safe_load(line)
    return yaml.safe_dump(data)


def test_every_sidecar_traces_by_default_into_its_ring() -> None:
    configs = rendered()
    assert {c.node for c in configs} >= {"ingress", "frontend-0"}
    assert all(c.tracing == sc.Tracing(sampling=100.0) for c in configs)


def test_the_mesh_tracing_reaches_every_sidecar_and_changes_its_hash() -> None:
    before = rendered()
    after = rendered(with_tracing(f"{{sampling: 25, zipkin: '{ZIPKIN}'}}"))
    assert all(c.tracing == sc.Tracing(sampling=25, zipkin=ZIPKIN) for c in after)
    assert all(a.content_hash() != b.content_hash() for a, b in zip(after, before, strict=True))
    off = rendered(with_tracing("{sampling: 0}"))
    assert all(c.tracing.sampling == 0 for c in off)
