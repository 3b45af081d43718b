"""`policies.<service>.include_attempt_count`: Envoy's include_attempt_count_in_response on the
service's virtual host, on every hop that routes to it (callers' sidecars and the gateway),
off unless asked for, and refused for a tcp service, which has no answers to carry it."""

from __future__ import annotations

import pytest
import yaml

from meshdev import plan
from meshdev.config import MeshInvalid, parse_mesh
from meshdev.config.schema import mesh_json_schema
from tests.support import ROOT

DEFAULTS = yaml.safe_load((ROOT / "templates" / "sidecar.yaml").read_text())
BASE = (
    "name: t\nservices:\n  chat: {command: x}\n  web: {command: x}\n"
    "ingress: {routes: [{to: chat}]}\n"
)


def test_each_hop_routing_to_the_service_includes_the_count() -> None:
    mesh = parse_mesh((BASE + "policies:\n  chat: {include_attempt_count: true}\n").encode(), "m")
    specs = plan.pods(mesh)
    placed = [
        plan.Placement(p.name, f"10.0.0.{i + 2}", "0.0.0.0", "127.0.0.1")
        for i, p in enumerate(specs)
    ]
    for spec, where in zip(specs, placed, strict=True):
        cfg = plan.render(
            mesh, spec, where, list(zip(specs, placed, strict=True)), version=1, defaults=DEFAULTS
        )
        flags = {v.name: v.include_attempt_count_in_response for v in cfg.virtual_hosts}
        assert flags == {"chat": True, "web": False}, spec.name


def test_off_by_default_as_in_envoy() -> None:
    mesh = parse_mesh(BASE.encode(), "m")
    assert all(not p.include_attempt_count for p in mesh.policies.values())
    specs = plan.pods(mesh)
    placed = [plan.Placement(p.name, "10.0.0.2", "0.0.0.0", "127.0.0.1") for p in specs]
    cfg = plan.render(mesh, specs[0], placed[0], [], version=1, defaults=DEFAULTS)
    assert not any(v.include_attempt_count_in_response for v in cfg.virtual_hosts)


def test_a_tcp_service_has_no_answers_to_count_in() -> None:
    text = (
        "name: t\nservices:\n  redis: {command: x, protocol: tcp}\n"
        "policies:\n  redis:\n    include_attempt_count: true\n"
    )
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(text.encode(), "mesh.yaml")
    assert [str(p) for p in info.value.problems] == [
        "mesh.yaml:6:28 policies.redis.include_attempt_count: redis is a tcp service: "
        "connections have no answers to carry x-envoy-attempt-count"
    ]


def test_the_schema_tells_editors_what_it_does() -> None:
    field = mesh_json_schema()["$defs"]["Policy"]["properties"]["include_attempt_count"]
    assert field["type"] == "boolean" and field["default"] is False
    assert "x-envoy-attempt-count" in field["description"]
