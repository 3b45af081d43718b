"""`meshdev validate`, `schema` and `init` as a user runs them: the real console script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import yaml

from tests.support import DEMO_MESH, MESHDEV


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        [MESHDEV, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_validate_a_good_mesh() -> None:
    res = run("validate", str(DEMO_MESH))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "OK: 2 services, 5 pods, 4 routes"


def test_validate_defaults_to_mesh_yaml_in_cwd(tmp_path: Path) -> None:
    res = run("validate", cwd=tmp_path)
    assert res.returncode == 1
    assert "mesh.yaml:1:1: no such file" in res.stderr


def test_validate_reports_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.yaml"
    bad.write_text(
        "name: demo\nservices:\n  api: {command: x}\n"
        "routes:\n  api:\n    - {timeout: 2, timout: 1s}\n"
        "policies:\n  api: {lb: rr}\n"
    )
    res = run("validate", str(bad))
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert lines == [
        f"{bad}:6:17 routes.api[0].timeout: expected a duration like 250ms or 2s",
        f"{bad}:6:20 routes.api[0].timout: unknown key 'timout'; did you mean 'timeout'?",
        f"{bad}:8:13 policies.api.lb: expected one of: round_robin, least_request, random, "
        "ring_hash",
        f"3 problems in {bad}",
    ]


def test_validate_reports_a_bad_policy_name_with_the_rest(tmp_path: Path) -> None:
    # Before, the name's problem came alone; the unknown service only at the next run.
    bad = tmp_path / "mesh.yaml"
    bad.write_text(
        "name: demo\nservices:\n  api: {command: x}\n  web: {command: x}\n"
        "security: {}\nauthorization:\n  api:\n"
        "    - {name: Web_Reads, from: {services: [wbe]}}\n"
    )
    res = run("validate", str(bad))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"{bad}:8:14 authorization.api[0].name: expected a name of lower-case letters, digits "
        "and '-' (a DNS label, at most 40)",
        f"{bad}:8:43 authorization.api[0].from.services[0]: unknown service 'wbe'; did you mean "
        "'web'?",
        f"2 problems in {bad}",
    ]


def test_validate_json(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.yaml"
    bad.write_text("name: demo\nservices:\n  api: {command: x, port: 0}\n")
    res = run("validate", "--json", str(bad))
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert out["ok"] is False
    assert out["errors"] == [
        {
            "file": str(bad),
            "line": 3,
            "column": 27,
            "path": "services.api.port",
            "message": "must be at least 1",
        }
    ]
    ok = json.loads(run("validate", "--json", str(DEMO_MESH)).stdout)
    assert ok == {
        "ok": True,
        "file": str(DEMO_MESH),
        "name": "demo",
        "services": 2,
        "pods": 5,
        "routes": 4,
    }


def test_validate_opens_no_socket_and_needs_no_docker(tmp_path: Path) -> None:
    # With no route to any engine and a poisoned DOCKER_HOST, validation still works.
    env = {**os.environ, "DOCKER_HOST": "tcp://192.0.2.1:1", "http_proxy": "http://192.0.2.1:1"}
    res = subprocess.run(
        [MESHDEV, "validate", str(DEMO_MESH)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def test_schema_accepts_what_the_loader_accepts() -> None:
    res = run("schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = yaml.safe_load(DEMO_MESH.read_text())
    assert list(validator.iter_errors(good)) == []
    # A typo, a bad duration and a bad enum value are caught by editors too.
    broken = {**good, "polices": {}}
    assert any("polices" in e.message for e in validator.iter_errors(broken))
    broken = json.loads(json.dumps(good))
    broken["routes"]["backend"][1]["timeout"] = "2 seconds"
    assert list(validator.iter_errors(broken))
    broken["routes"]["backend"][1]["timeout"] = "2s"
    broken["policies"]["backend"]["lb"] = "fastest"
    assert list(validator.iter_errors(broken))


def test_init_writes_a_valid_starter(tmp_path: Path) -> None:
    res = run("init", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    written = tmp_path / "mesh.yaml"
    assert written.read_text().startswith("# A meshdev mesh.")
    assert run("validate", cwd=tmp_path).returncode == 0
    again = run("init", cwd=tmp_path)
    assert again.returncode == 1
    assert "exists; pass --force" in again.stderr
    written.write_text("changed")
    assert run("init", "--force", cwd=tmp_path).returncode == 0
    assert written.read_text().startswith("# A meshdev mesh.")


def test_help_lists_the_commands() -> None:
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("validate", "schema", "init", "sidecar"):
        assert f"  {cmd}" in res.stdout
