"""The commands: `meshdev export envoy`, `meshdev export compose`, `meshdev import compose`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from meshdev.cli.main import main
from meshdev.config import load_mesh

EXAMPLE = Path(__file__).parents[3] / "examples" / "flask-app" / "mesh.yaml"
INVALID = Path(__file__).parents[2] / "fixtures" / "compose" / "invalid.yml"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_export_envoy_writes_a_bootstrap_per_pod_and_says_the_notes(tmp_path: Path) -> None:
    code, out, err = run("export", "envoy", str(EXAMPLE), "-o", str(tmp_path / "envoy"))
    assert code == 0, err
    assert out == f"wrote 7 Envoy bootstrap(s) to {tmp_path / 'envoy'}\n"
    assert "routes.backend[canary].fault: " in err
    frontend = yaml.safe_load((tmp_path / "envoy" / "frontend-0.yaml").read_text())
    assert frontend["node"]["id"] == "frontend-0"


def test_export_envoy_as_json(tmp_path: Path) -> None:
    code, _, err = run("export", "envoy", str(EXAMPLE), "-o", str(tmp_path), "--format", "json")
    assert code == 0, err
    assert json.loads((tmp_path / "ingress.json").read_text())["node"]["cluster"] == "ingress"


def test_export_of_a_bad_mesh_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.yaml"
    bad.write_text("name: m\nservices: {a: {image: x, port: 0}}\n")
    code, _, err = run("export", "envoy", str(bad), "-o", str(tmp_path / "out"))
    assert code == 1
    assert "services.a.port" in err
    assert not (tmp_path / "out").exists()


def test_export_compose_then_import_it(tmp_path: Path) -> None:
    out = tmp_path / "compose"
    code, stdout, err = run(
        "export", "compose", str(EXAMPLE), "-o", str(out), "--envoy-image", "envoy:test"
    )
    assert code == 0, err
    assert "docker compose up --build" in stdout
    document = yaml.safe_load((out / "docker-compose.yml").read_text())
    assert document["services"]["frontend-0"]["image"] == "envoy:test"
    readme = (out / "README.txt").read_text()
    assert "meshdev watch \\\n        ingress=http://127.0.0.1:9901 \\\n" in readme

    target = tmp_path / "mesh.yaml"
    code, stdout, err = run("import", "compose", str(out / "docker-compose.yml"), "-o", str(target))
    assert code == 0, err
    assert stdout == f"wrote {target}: 3 service(s)\n"
    back = load_mesh(target)
    assert list(back.services) == ["frontend", "backend", "greeter"]
    # Not over an existing file, unless asked.
    code, _, err = run("import", "compose", str(out / "docker-compose.yml"), "-o", str(target))
    assert code == 1 and "--force" in err


def test_import_of_invalid_compose_lists_the_schemas_reasons(tmp_path: Path) -> None:
    target = tmp_path / "mesh.yaml"
    code, _, err = run("import", "compose", str(INVALID), "-o", str(target))
    assert code == 1
    assert "services.web.ports: {'http': 80} is not of type 'array'" in err
    assert not target.exists()


def test_exports_write_over_their_own_files_never_the_user_s(tmp_path: Path) -> None:
    # `export compose mesh.yaml -o .` in a project replaced its docker-compose.yml, and
    # `export envoy` a file of the pod's name, without a word.
    project = tmp_path / "project"
    project.mkdir()
    mine = "services: {web: {image: nginx}}\n"
    (project / "docker-compose.yml").write_text(mine)
    code, _, err = run("export", "compose", str(EXAMPLE), "-o", str(project))
    assert code == 1
    assert f"{project / 'docker-compose.yml'} exists and no earlier export wrote it" in err
    assert (project / "docker-compose.yml").read_text() == mine
    assert not (project / "README.txt").exists()  # nothing written
    # An earlier export's files are its own: written over.
    fresh = tmp_path / "fresh"
    assert run("export", "compose", str(EXAMPLE), "-o", str(fresh))[0] == 0
    assert run("export", "compose", str(EXAMPLE), "-o", str(fresh))[0] == 0

    envoy = tmp_path / "envoy"
    envoy.mkdir()
    (envoy / "ingress.yaml").write_text("my: notes\n")
    code, _, err = run("export", "envoy", str(EXAMPLE), "-o", str(envoy))
    assert code == 1
    assert f"{envoy / 'ingress.yaml'} exists and no earlier export wrote it" in err
    assert (envoy / "ingress.yaml").read_text() == "my: notes\n"
    (envoy / "ingress.yaml").unlink()
    assert run("export", "envoy", str(EXAMPLE), "-o", str(envoy))[0] == 0
    assert run("export", "envoy", str(EXAMPLE), "-o", str(envoy))[0] == 0

    board = tmp_path / "dashboard.json"
    board.write_text('{"title": "mine"}')
    code, _, err = run("export", "grafana", str(EXAMPLE), "-o", str(board))
    assert code == 1
    assert board.read_text() == '{"title": "mine"}'
    board.unlink()
    assert run("export", "grafana", str(EXAMPLE), "-o", str(board))[0] == 0
    assert run("export", "grafana", str(EXAMPLE), "-o", str(board))[0] == 0
