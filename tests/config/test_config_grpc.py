"""`protocol: http2 | grpc` services in mesh.yaml, gRPC's retry_on conditions and grpc_status
aborts: what they accept, how they render for the sidecars, and every misuse located."""

from __future__ import annotations

import textwrap

import jsonschema
import pytest
import yaml

from meshdev import plan
from meshdev.config import MeshInvalid, parse_mesh
from meshdev.config.schema import mesh_json_schema
from tests.support import ROOT

DEFAULTS = yaml.safe_load((ROOT / "templates" / "sidecar.yaml").read_text())

BASE = """\
name: demo
services:
  web:
    command: python app.py
  ratings:
    command: python grpc_server.py
    protocol: grpc
    versions: {v1: {}, v2: {}}
routes:
  ratings:
    - name: get
      match: {path: /ratings.Ratings/Get}
      timeout: 2s
      retries: {attempts: 3, retry_on: [unavailable, resource-exhausted, cancelled]}
      fault: {abort: {percent: 5, grpc_status: 14}}
"""


def parse(text: str) -> object:
    return parse_mesh(textwrap.dedent(text).encode(), "mesh.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(MeshInvalid) as info:
        parse(text)
    return [str(p) for p in info.value.problems]


def test_grpc_services_render_http2_clusters_on_every_hop() -> None:
    mesh = parse_mesh(BASE.encode(), "mesh.yaml")
    assert mesh.services["ratings"].protocol == "grpc"
    specs = plan.pods(mesh)
    placed = [
        plan.Placement(p.name, f"10.0.0.{i + 2}", "0.0.0.0", "127.0.0.1")
        for i, p in enumerate(specs)
    ]
    both = list(zip(specs, placed, strict=True))
    web = next(i for i, s in enumerate(specs) if s.service == "web")
    cfg = plan.render(mesh, specs[web], placed[web], both, version=1, defaults=DEFAULTS)
    clusters = {c.name: c for c in cfg.clusters}
    # The callers' clusters of a grpc service speak h2c; an http one's do not.
    assert clusters["ratings"].http2
    assert clusters["ratings.v1"].http2
    assert not clusters["web"].http2
    # gRPC is routed per request: its virtual host is there like any HTTP service's.
    vhost = next(v for v in cfg.virtual_hosts if v.name == "ratings")
    route = vhost.routes[0]
    assert route.match.path == "/ratings.Ratings/Get"
    assert route.retries is not None
    assert route.retries.retry_on == ("unavailable", "resource-exhausted", "cancelled")
    assert route.fault is not None and route.fault.abort is not None
    assert (route.fault.abort.grpc_status, route.fault.abort.status) == (14, 503)
    # The callee's inbound hop calls its app over h2c too.
    own = next(i for i, s in enumerate(specs) if s.service == "ratings")
    cfg = plan.render(mesh, specs[own], placed[own], both, version=1, defaults=DEFAULTS)
    inbound = next(c for c in cfg.clusters if c.name.startswith("inbound|"))
    assert inbound.http2


def test_http2_is_a_protocol_too() -> None:
    mesh = parse("name: d\nservices:\n  a: {command: x, protocol: http2}\n")
    assert mesh.services["a"].protocol == "http2"  # type: ignore[attr-defined]


def test_an_unknown_retry_on_is_located() -> None:
    text = BASE.replace("retry_on: [unavailable,", "retry_on: [unavailabel,")
    assert problems(text) == [
        "mesh.yaml:14:41 routes.ratings[0].retries.retry_on[0]: unknown value 'unavailabel'; "
        "did you mean 'unavailable'?"
    ]


def test_an_abort_must_answer_something() -> None:
    text = BASE.replace("abort: {percent: 5, grpc_status: 14}", "abort: {percent: 5}")
    assert problems(text) == [
        "mesh.yaml:15:22 routes.ratings[0].fault.abort: give status, grpc_status, or both"
    ]


def test_a_grpc_status_out_of_range_is_located() -> None:
    text = BASE.replace("grpc_status: 14", "grpc_status: 17")
    assert problems(text) == [
        "mesh.yaml:15:48 routes.ratings[0].fault.abort.grpc_status: must be at most 16"
    ]


def test_the_schema_knows_grpc() -> None:
    schema = mesh_json_schema()
    doc = yaml.safe_load(BASE)
    jsonschema.validate(doc, schema)
    doc["services"]["ratings"]["protocol"] = "grpc2"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    abort = schema["$defs"]["Abort"]["properties"]["grpc_status"]
    assert "UNAVAILABLE" in abort["description"]
