"""`calls:` in a real mesh on the process runtime (issue 15): an app's call to a service
outside its `calls:` is Envoy's no route, 404 NR, with a body and a sidecar log line saying
why; a save that adds the service routes it, and reaches only the sidecar whose config
changed (every other sidecar's /config_dump keeps its version).

    test -> ingress -> frontend's sidecar -> frontend app (tests/fixtures/tinyapp)
         -> frontend's sidecar (outbound) -> backend's sidecar -> backend app
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from meshdev.runtime.paths import STATE_FILE
from tests.e2e.meshrun import MeshUp, env_for, get
from tests.support import ROOT, free_port, wait_until_sync

pytestmark = pytest.mark.slow

APP = ROOT / "tests" / "fixtures" / "tinyapp"

MESH = """\
name: {name}
services:
  frontend:
    build: {app}
    command: python app.py
    health_path: /healthz
    calls: [{calls}]
  backend:
    build: {app}
    command: python app.py
    health_path: /healthz
    calls: []
  ratings:
    build: {app}
    command: python app.py
    health_path: /healthz
ingress:
  port: {port}
  routes:
    - {{match: {{prefix: /}}, to: frontend}}
"""


def versions(state: dict[str, object]) -> dict[str, int]:
    pods = state["pods"]
    assert isinstance(pods, list)
    out = {}
    for pod in pods:
        _, body = get(f"{pod['admin_url']}/config_dump")
        out[pod["name"]] = json.loads(body)["version"]
    return out


def test_a_call_outside_calls_is_404_nr_saying_why_until_a_save_adds_it(tmp_path: Path) -> None:
    name = f"calls-{os.getpid()}"
    port = free_port()
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, app=APP, port=port, calls="backend"))
    env = env_for(tmp_path)
    up = MeshUp(mesh_file, env, "--runtime", "process")
    try:
        up.wait_for("ready:", 120)
        base = f"http://127.0.0.1:{port}"
        status, body = get(f"{base}/call/backend/items")
        assert status == 200, body
        assert json.loads(body)["service"] == "backend"
        status, body = get(f"{base}/call/ratings/stars")
        assert (status, body) == (404, "no route: ratings is not in frontend's calls\n")

        logs = Path(env["MESHDEV_STATE_DIR"]) / name
        sidecar_log = logs / "frontend-0.sidecar.log"

        def said() -> list[str] | None:
            """Its log line and its access log line (written a moment later), once both are."""
            found = [ln for ln in sidecar_log.read_text().splitlines() if "ratings" in ln]
            return found if len(found) >= 2 else None

        lines = wait_until_sync(said, "the sidecar's log lines")
        assert any(
            "no route: ratings is not in frontend's calls (services.frontend.calls" in ln
            for ln in lines
        ), lines
        assert any(
            '"GET /stars HTTP/1.1" 404 NR' in ln
            and ln.endswith("route_not_found[ratings_not_in_frontend_calls]")
            for ln in lines
        ), lines

        state = json.loads((logs / STATE_FILE).read_text())
        assert set(versions(state).values()) == {1}
        mesh_file.write_text(MESH.format(name=name, app=APP, port=port, calls="backend, ratings"))
        up.wait_for("applied v2", 30)
        status, body = get(f"{base}/call/ratings/stars")
        assert status == 200, body
        assert json.loads(body)["service"] == "ratings"
        # Only frontend's config changed: the other sidecars were not pushed at all.
        assert versions(state) == {
            "ingress": 1,
            "frontend-0": 2,
            "backend-0": 1,
            "ratings-0": 1,
        }
    except BaseException:
        print("\n".join(up.lines[-40:]))
        raise
    finally:
        assert up.stop() == 0
