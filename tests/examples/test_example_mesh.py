"""The example mesh (examples/flask-app/mesh.yaml) as a user meets it: it validates, editors'
schema accepts it, and it shows every feature. The unit tests use their own copy
(tests/fixtures/demo), so these are the tests that a change to the example must keep passing."""

from __future__ import annotations

import json
import os
import subprocess

import jsonschema
import yaml

from meshdev.config import load_mesh
from meshdev.config.schema import mesh_json_schema
from tests.support import MESHDEV, ROOT

EXAMPLE = ROOT / "examples" / "flask-app" / "mesh.yaml"


def test_the_example_validates() -> None:
    res = subprocess.run(
        [MESHDEV, "validate", "--json", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["ok"] is True


def test_editors_schema_accepts_the_example() -> None:
    validator = jsonschema.Draft202012Validator(mesh_json_schema())
    assert list(validator.iter_errors(yaml.safe_load(EXAMPLE.read_text()))) == []


def test_example_shows_every_feature() -> None:
    mesh = load_mesh(EXAMPLE)
    backend = mesh.services["backend"]
    assert set(backend.versions) == {"v1", "v2"}
    assert all(s.command for s in mesh.services.values())
    assert mesh.ingress is not None
    routes = mesh.routes["backend"]
    assert any(isinstance(r.to, type(backend.env)) for r in routes)  # a weighted split
    assert any(r.match.headers for r in routes)
    assert any(r.retries for r in routes)
    assert any(r.fault and r.fault.abort and r.fault.delay for r in routes)
    assert any(r.rate_limit for r in routes)
    assert any(r.timeout != 15.0 for r in routes)
    pol = mesh.policies["backend"]
    assert pol.outlier_detection is not None
    assert pol.circuit_breaker.max_pending_requests < 1024
    assert pol.lb != "round_robin"


def test_example_has_a_grpc_service_the_frontend_calls() -> None:
    mesh = load_mesh(EXAMPLE)
    greeter = mesh.services["greeter"]
    assert greeter.protocol == "grpc"
    assert greeter.command == "python greeter.py"
    assert greeter.health_path is None  # a gRPC app answers no HTTP/1.1 probe
    assert mesh.services["frontend"].env["GREETER"] == "greeter"
    routes = mesh.routes["greeter"]
    assert routes[0].match.prefix == "/greeter.Greeter/"
    assert routes[0].retries is not None
    assert "unavailable" in routes[0].retries.retry_on
    # The image the Docker runtime builds carries the gRPC service and its dependencies.
    folder = EXAMPLE.parent
    assert "greeter.py" in (folder / "Dockerfile").read_text()
    requirements = (folder / "requirements.txt").read_text()
    assert "grpcio" in requirements
    assert "grpcio-health-checking" in requirements
