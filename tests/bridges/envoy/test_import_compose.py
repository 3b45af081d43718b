"""`import compose`: a Compose file people write becomes mesh services meshdev loads; what
does not fit is reported with its path; a file that is not valid Compose is refused with the
schema's reasons."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshdev.bridges.compose.import_ import (
    ComposeImport,
    ComposeInvalid,
    dump_mesh,
    import_compose,
    mesh_name,
    parse_checked,
)
from meshdev.config import parse_mesh

FIXTURES = Path(__file__).parents[2] / "fixtures" / "compose"
WEB = FIXTURES / "web" / "docker-compose.yml"


def imported(text: str, tmp_path: Path) -> ComposeImport:
    return import_compose(text, compose_dir=tmp_path, mesh_dir=tmp_path)


def fields(result: ComposeImport) -> list[str]:
    return [n.field for n in result.notes]


def test_a_web_app_becomes_mesh_services() -> None:
    result = import_compose(WEB.read_text(), compose_dir=WEB.parent, mesh_dir=WEB.parent)
    mesh = result.mesh
    assert mesh["name"] == "shop-demo"
    assert mesh["services"]["web"] == {
        "build": "api",
        # Compose splits a string command as a shell would (and runs no shell).
        "command": ["gunicorn", "-b", "0.0.0.0:8000", "app:create()"],
        "port": 8000,
        "env": {"DATABASE_URL": "postgres://db:5432/shop", "DEBUG": "true", "WORKERS": "4"},
        "replicas": 2,
        "health_path": "/healthz",
    }
    assert mesh["services"]["worker"] == {
        "build": "worker",
        "command": ["python", "-m", "worker"],
        "port": 9000,
        "env": {"QUEUE": "redis://cache:6379"},
    }
    assert mesh["services"]["cache"] == {
        "image": "redis:7",
        "port": 6379,
        "protocol": "tcp",
        "replicas": 1,
    }
    assert mesh["services"]["db"]["protocol"] == "tcp"
    # The one published HTTP port is the gateway, routing everything to its service.
    assert mesh["ingress"] == {
        "port": 8080,
        "routes": [{"name": "web", "match": {"prefix": "/"}, "to": "web"}],
    }
    # And meshdev loads it, build folders checked against the files beside it.
    loaded = parse_mesh(
        yaml.safe_dump(mesh, sort_keys=False).encode(), "mesh.yaml", base_dir=WEB.parent
    )
    assert loaded.services["web"].pod_count() == 2


def test_what_does_not_fit_is_reported_with_its_path() -> None:
    result = import_compose(WEB.read_text(), compose_dir=WEB.parent, mesh_dir=WEB.parent)
    assert fields(result) == [
        "volumes",
        "services.web.deploy.resources",
        "services.web.healthcheck",
        "services.web.depends_on",
        "services.worker.build.dockerfile",
        "services.worker.build.args",
        "services.worker.environment.SECRET_KEY",
        "services.cache",
        "services.db",
        "services.db.volumes",
        "services.db.ports[0]",
        "services.db.ports[0]",
    ]
    notes = {(n.field, n.message) for n in result.notes}
    assert (
        "services.db.ports[0]",
        "published on 0.0.0.0: meshdev publishes on 127.0.0.1 only",
    ) in notes


def test_the_written_mesh_lists_the_notes_and_loads(tmp_path: Path) -> None:
    result = import_compose(WEB.read_text(), compose_dir=WEB.parent, mesh_dir=tmp_path)
    text = dump_mesh(result, "docker-compose.yml")
    assert text.startswith("# Imported by `meshdev import compose` from docker-compose.yml.")
    assert "#   services.worker.build.dockerfile: " in text
    # Build folders are relative to where mesh.yaml is written.
    assert yaml.safe_load(text)["services"]["web"]["build"].endswith("fixtures/compose/web/api")
    parse_checked(result.mesh, "mesh.yaml")


def test_invalid_compose_is_refused_with_the_schemas_reasons() -> None:
    with pytest.raises(ComposeInvalid) as caught:
        import_compose(
            (FIXTURES / "invalid.yml").read_text(),
            compose_dir=FIXTURES,
            mesh_dir=FIXTURES,
            source="invalid.yml",
        )
    assert caught.value.problems == [
        "invalid.yml: services.web: 'netwrk_mode' does not match any of the regexes: '^x-'",
        "invalid.yml: services.web.ports: {'http': 80} is not of type 'array'",
    ]


def test_not_a_mapping_or_not_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ComposeInvalid, match="a mapping"):
        imported("- a\n- b\n", tmp_path)
    with pytest.raises(ComposeInvalid, match="not YAML"):
        imported("services: [\n", tmp_path)


def test_ports_in_every_form(tmp_path: Path) -> None:
    result = imported(
        """
services:
  a:
    image: x
    ports: ["9000:80", "127.0.0.1:9443:443/tcp", "53/udp", "7000-7002:7000-7002"]
  b:
    image: y
    ports: [{target: 8080, published: "9001"}]
""",
        tmp_path,
    )
    a, b = result.mesh["services"]["a"], result.mesh["services"]["b"]
    assert a["port"] == 80
    assert b["port"] == 8080
    assert result.mesh["ingress"]["port"] == 9000
    notes = {n.field: n.message for n in result.notes}
    assert "one port (80)" in notes["services.a.ports"]
    assert "not TCP" in notes["services.a.ports[2]"]
    assert "port range" in notes["services.a.ports[3]"]
    assert "meshdev has one gateway port (9000)" in notes["services.b.ports[0]"]


def test_healthchecks_become_health_paths_when_they_ask_http(tmp_path: Path) -> None:
    result = imported(
        """
services:
  a: {image: x, expose: [8080], healthcheck: {test: ["CMD", "wget", "-q", "http://127.0.0.1:8080/ready"]}}
  b: {image: x, expose: [8080], healthcheck: {test: "pg_isready"}}
  c: {image: x, expose: [8080], healthcheck: {test: ["CMD", "curl", "http://localhost:9/up"]}}
  d: {image: x, expose: [8080], healthcheck: {disable: true}}
""",
        tmp_path,
    )
    services = result.mesh["services"]
    assert services["a"]["health_path"] == "/ready"
    assert "health_path" not in services["b"]
    assert services["c"]["health_path"] == "/up"
    assert "health_path" not in services["d"]
    notes = {n.field: n.message for n in result.notes}
    assert "not an HTTP request" in notes["services.b.healthcheck.test"]
    assert "asks port 9" in notes["services.c.healthcheck.test"]


def test_names_become_dns_labels(tmp_path: Path) -> None:
    result = imported("services:\n  My_API: {image: x}\n  my-api: {image: y}\n", tmp_path)
    assert list(result.mesh["services"]) == ["my-api", "my-api-2"]
    assert "named my-api in mesh.yaml" in next(n.message for n in result.notes)
    assert mesh_name("Shop_Demo.v2") == "shop-demo-v2"
    assert mesh_name("__") == "compose"


def test_a_file_with_no_service_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ComposeInvalid, match="no service"):
        imported("services: {}\n", tmp_path)


def test_develop_watch_becomes_watch(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    result = imported(
        """
services:
  api:
    build: ./api
    ports: ["8080:8080"]
    develop:
      watch:
        - {path: ./api/src, action: rebuild}
        - {path: ./api, action: sync, target: /app, ignore: [node_modules/]}
        - {path: ./shared, action: rebuild}
""",
        tmp_path,
    )
    assert result.mesh["services"]["api"]["watch"] == ["src", "**"]
    notes = {n.field: n.message for n in result.notes}
    assert "copies no files" in notes["services.api.develop.watch[1].action"]
    assert "its whole path counts" in notes["services.api.develop.watch[1].ignore"]
    assert "left out" in notes["services.api.develop.watch[2].path"]
    parse_checked(result.mesh, "mesh.yaml")
