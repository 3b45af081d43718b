"""Where the dashboard's load and breaker trip send their GETs (tui/logic/load_control.py)."""

from __future__ import annotations

import pytest

from meshdev.config import MeshInvalid, load_mesh
from meshdev.config.load import parse_mesh
from meshdev.tui.logic.load_control import load_path, load_route
from tests.support import DEMO_MESH

SERVICES = """
services:
  web: {command: "python3 -m http.server $PORT"}
  greeter: {command: "python3 greeter.py", protocol: grpc}
  admin: {command: "python3 admin.py"}
"""


def mesh_with(ingress: str) -> str:
    return f"name: m\n{SERVICES}ingress:\n{ingress}"


@pytest.mark.parametrize(
    ("ingress", "path"),
    [
        # What `meshdev init` writes: the app serves /, which /items (the old fixed path) is not.
        ("  routes:\n    - {match: {prefix: /}, to: web}\n", "/"),
        # gRPC, a header match, a regex and a POST-only route cannot take a plain GET.
        (
            "  routes:\n"
            "    - {match: {prefix: /greeter.Greeter/}, to: greeter}\n"
            "    - {match: {prefix: /admin, headers: {x-admin: {exact: '1'}}}, to: admin}\n"
            "    - {match: {regex: '/v[0-9]+/.*'}, to: web}\n"
            "    - {match: {prefix: /upload, method: POST}, to: web}\n"
            "    - {match: {prefix: /shop/}, to: web}\n",
            "/shop/",
        ),
        (
            "  routes:\n    - {match: {path: /index.html, method: [GET, HEAD]}, to: web}\n",
            "/index.html",
        ),
        ("  routes:\n    - {to: web}\n", "/"),
        ("  routes:\n    - {match: {prefix: /greeter.Greeter/}, to: greeter}\n", "/"),
        # Said in the file, it wins.
        ("  load_path: /items?n=3\n  routes:\n    - {match: {prefix: /}, to: web}\n", "/items?n=3"),
    ],
)
def test_the_load_goes_where_a_plain_get_is_routed(ingress: str, path: str) -> None:
    assert load_path(parse_mesh(mesh_with(ingress).encode(), "mesh.yaml")) == path


def test_a_mesh_without_ingress_has_the_root() -> None:
    assert load_path(parse_mesh(f"name: m\n{SERVICES}".encode(), "mesh.yaml")) == "/"
    assert load_path(None) == "/"


def test_a_load_path_that_is_no_path_is_an_error_at_its_line() -> None:
    text = mesh_with("  load_path: items\n  routes:\n    - {match: {prefix: /}, to: web}\n")
    with pytest.raises(MeshInvalid) as err:
        parse_mesh(text.encode(), "mesh.yaml")
    said = "\n".join(str(p) for p in err.value.problems)
    assert said == (
        "mesh.yaml:8:14 ingress.load_path: expected a path that starts with '/' and has no "
        "spaces, e.g. /items"
    )


def test_the_example_s_load_takes_the_frontend_s_default_route_not_the_top_row() -> None:
    # /items reaches the frontend, whose vhost has no routes of its own (the plan's `default`);
    # backend/canary, the routes table's top row, wants an x-canary header the load never sends.
    assert load_route(load_mesh(DEMO_MESH)) == "frontend/default"


ROUTED = """
routes:
  web:
    - {name: beta, match: {prefix: /items, headers: {x-beta: {exact: "1"}}}, to: web}
    - {name: nobeta, match: {prefix: /items, headers: {x-beta: {present: false}}}, to: web}
    - {match: {prefix: /}, to: web}
"""


@pytest.mark.parametrize(
    ("path", "route"),
    [
        # A header the load sends none of cannot match; its absence can.
        ("/items", "web/nobeta"),
        # Unnamed routes are r<index>, as the plan names them.
        ("/other", "web/r2"),
        # The path of the load's GETs, its query aside.
        ("/items?n=3", "web/nobeta"),
    ],
)
def test_the_load_s_route_is_the_first_of_its_destination_a_plain_get_matches(
    path: str, route: str
) -> None:
    ingress = "  routes:\n    - {match: {prefix: /}, to: web}\n"
    mesh = parse_mesh((mesh_with(ingress) + ROUTED).encode(), "mesh.yaml")
    assert load_route(mesh, path) == route


def test_no_load_route_where_no_route_takes_the_load() -> None:
    only_grpc = "  routes:\n    - {match: {prefix: /greeter.Greeter/}, to: greeter}\n"
    assert load_route(parse_mesh(mesh_with(only_grpc).encode(), "mesh.yaml"), "/") is None
    assert load_route(parse_mesh(f"name: m\n{SERVICES}".encode(), "mesh.yaml")) is None
    assert load_route(None) is None
