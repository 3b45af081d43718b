"""`calls:` in mesh.yaml (Istio's Sidecar egress hosts): the services a service's app calls,
each a known service of the mesh, named once, a service and not a version of one."""

from __future__ import annotations

import textwrap

import pytest

from meshdev.config import MeshInvalid, parse_mesh

BASE = """\
name: shop
services:
  frontend:
    command: python app.py
    calls: {calls}
  backend:
    command: python app.py
    versions: {{v1: {{}}, v2: {{}}}}
  cache:
    command: redis-server
    port: 6379
    protocol: tcp
"""


def mesh_with(calls: str) -> bytes:
    return textwrap.dedent(BASE.format(calls=calls)).encode()


def problems(calls: str) -> list[str]:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(mesh_with(calls), "mesh.yaml")
    return [str(p) for p in info.value.problems]


def test_calls_default_to_none_every_service() -> None:
    mesh = parse_mesh(b"name: a\nservices:\n  web: {command: x}\n", "mesh.yaml")
    assert mesh.services["web"].calls is None


def test_calls_name_services_http_and_tcp_alike() -> None:
    mesh = parse_mesh(mesh_with("[backend, cache]"), "mesh.yaml")
    assert mesh.services["frontend"].calls == ("backend", "cache")
    # An empty list is a service that calls nothing: no route but its own inbound.
    assert parse_mesh(mesh_with("[]"), "mesh.yaml").services["frontend"].calls == ()


def test_unknown_service_is_located_with_did_you_mean() -> None:
    assert problems("[backend, bakcend]") == [
        "mesh.yaml:5:22 services.frontend.calls[1]: unknown service 'bakcend'; "
        "did you mean 'backend'?"
    ]


def test_unknown_service_without_a_close_one_lists_the_known() -> None:
    assert problems("[payments]") == [
        "mesh.yaml:5:13 services.frontend.calls[0]: unknown service 'payments'; "
        "known: backend, cache, frontend"
    ]


def test_a_version_is_not_a_service() -> None:
    assert problems("[backend.v1]") == [
        "mesh.yaml:5:13 services.frontend.calls[0]: calls names services, not versions: "
        "give 'backend' (its routes pick the version)"
    ]


def test_a_service_listed_twice_is_located_at_the_second() -> None:
    assert problems("[backend, cache, backend]") == [
        "mesh.yaml:5:29 services.frontend.calls[2]: 'backend' is listed twice"
    ]


def test_calls_must_be_a_list_of_names() -> None:
    found = problems("backend")
    assert len(found) == 1
    assert found[0].startswith("mesh.yaml:5:12 services.frontend.calls:")
