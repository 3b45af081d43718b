"""`meshdev export grafana`: the dashboard's document, and every one of its queries answered
with data by a real Prometheus scraping a running mesh under load (process runtime, Debian's
prometheus binary)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from meshdev.bridges.grafana.dashboard import SCHEMA_VERSION, queries
from tests.e2e.meshrun import MeshUp, env_for, get
from tests.support import MESHDEV, free_port, need_prometheus

MESH = """\
name: {name}
services:
  web: {{command: python3 -m http.server --bind $HOST $PORT, replicas: 2}}
ingress:
  port: {port}
  routes: [{{to: web}}]
routes:
  web:
    - name: all
      match: {{prefix: /}}
      retries: {{attempts: 1}}
      rate_limit: {{requests_per_second: 1000}}
      fault: {{delay: {{percent: {delay}, fixed: 1ms}}}}
policies:
  web:
    outlier_detection: {{consecutive_5xx: 5}}
prometheus: {{port: {prom}, scrape_interval: 1s}}
"""


def export(mesh_file: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [MESHDEV, "export", "grafana", str(mesh_file), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def test_the_dashboard_document(tmp_path: Path) -> None:
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name="shop", port=8000, prom=9090, delay=10))
    doc = export(mesh_file, tmp_path / "dashboard.json")
    assert doc["schemaVersion"] == SCHEMA_VERSION
    assert doc["uid"] == "meshdev-shop"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["current"]["value"] == "shop"
    titles = [p["title"] for p in doc["panels"]]
    assert len(titles) == len(set(titles)) == 7
    cells = set()
    for panel in doc["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
    assert all('namespace="$namespace"' in q for q in queries(doc))


def test_a_bad_mesh_file_is_refused_with_its_place(tmp_path: Path) -> None:
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("name: x\nservices: {}\n")
    done = subprocess.run(
        [MESHDEV, "export", "grafana", str(mesh_file), "-o", str(tmp_path / "d.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "mesh.yaml:2" in done.stderr
    assert not (tmp_path / "d.json").exists()


@pytest.mark.slow
def test_every_query_answers_from_a_real_prometheus(tmp_path: Path) -> None:
    need_prometheus()
    name = f"graf-{os.getpid()}"
    port, prom_port = free_port(), free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port, prom=prom_port, delay=10))
    doc = export(mesh_file, tmp_path / "dashboard.json")
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        load = subprocess.Popen(
            [MESHDEV, "load", f"http://127.0.0.1:{port}/", "--rps", "50", "--duration", "8s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A reload during the run, once Prometheus has seen v1: the annotation query then has
        # a config change to show.
        seen = urllib.parse.quote(f'envoy_config_version{{namespace="{name}"}} == 1')
        deadline = time.monotonic() + 30
        while not json.loads(get(f"{prom}/api/v1/query?query={seen}")[1])["data"]["result"]:
            assert time.monotonic() < deadline, "Prometheus never scraped config v1"
            time.sleep(0.3)
        mesh_file.write_text(MESH.format(name=name, port=port, prom=prom_port, delay=20))
        up.wait_for("applied v2", 60)
        load.wait(60)
        time.sleep(2)  # a last scrape after the load
        empty = []
        for q in queries(doc):
            expr = q.replace("$namespace", name).replace("$__rate_interval", "30s")
            status, body = get(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")
            assert status == 200, (expr, body)
            if not json.loads(body)["data"]["result"]:
                empty.append(expr)
        assert not empty, f"queries without data: {empty}"
        # Grafana fills an annotation's title from its series' labels (renderLegendFormat):
        # every {{name}} in it must be a label of what the query answers.
        for note in doc["annotations"]["list"]:
            expr = note["expr"].replace("$namespace", name)
            series = json.loads(get(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}")[1])
            wanted = re.findall(r"\{\{\s*(.+?)\s*\}\}", note["titleFormat"])
            wanted += [k for k in note.get("tagKeys", "").split(",") if k]
            for one in series["data"]["result"]:
                missing = [k for k in wanted if not one["metric"].get(k)]
                assert not missing, (note["name"], missing, one["metric"])
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
