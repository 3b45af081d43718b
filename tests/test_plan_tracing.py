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


def test_a_collector_on_the_hosts_loopback_is_reached_through_the_host_from_a_container() -> None:
    mesh = parse_mesh(
        with_tracing(
            "{zipkin: 'http://localhost:9411/api/v2/spans', "
            "otlp: 'http://127.0.0.1:4318/v1/traces'}"
        ).encode(),
        "mesh.yaml",
    )
    docker = plan.Placement("frontend-0", "", "0.0.0.0", "127.0.0.1", host_address="172.18.0.1")
    assert plan.tracing(mesh, docker) == sc.Tracing(
        sampling=100,
        zipkin="http://172.18.0.1:9411/api/v2/spans",
        otlp="http://172.18.0.1:4318/v1/traces",
    )
    # Where the pod shares the host's loopback (the process runtime), the URLs stand.
    process = plan.Placement("frontend-0", "127.0.1.2", "127.0.1.2", "127.0.1.2")
    assert plan.tracing(mesh, process).zipkin == "http://localhost:9411/api/v2/spans"
    # A collector elsewhere is elsewhere from a container too.
    remote = parse_mesh(
        with_tracing("{zipkin: 'http://zipkin.obs:9411/api/v2/spans'}").encode(), "m"
    )
    assert plan.tracing(remote, docker).zipkin == "http://zipkin.obs:9411/api/v2/spans"
