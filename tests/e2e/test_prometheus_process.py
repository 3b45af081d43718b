"""A real Prometheus beside a process-runtime mesh (`prometheus:` in mesh.yaml): Debian's
`prometheus` binary scrapes every sidecar through file-based discovery; every target is up with
the labels Kubernetes discovery would give it, a scale-up shows within a few scrapes without a
Prometheus reload, the mesh's traffic is queryable under Envoy's metric names, and `down`
leaves no Prometheus behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from meshdev.runtime.process import procscan
from tests.e2e.meshrun import MeshUp, env_for, get
from tests.support import free_port, need_prometheus, wait_until_sync

pytestmark = [pytest.mark.slow]

MESH = """\
name: {name}
services:
  web: {{command: python3 -m http.server --bind $HOST $PORT, replicas: {replicas}}}
ingress:
  port: {port}
  routes: [{{to: web}}]
prometheus: {{port: {prom}, scrape_interval: 1s}}
"""


def query(prom: str, path: str) -> Any:
    status, body = get(f"{prom}{path}")
    assert status == 200, body
    return json.loads(body)["data"]


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    return wait_until_sync(check, what, timeout=timeout, step=0.2)


def up_targets(prom: str) -> dict[str, dict[str, str]]:
    """pod -> labels of each target Prometheus scrapes successfully."""
    active = query(prom, "/api/v1/targets")["activeTargets"]
    return {t["labels"]["pod"]: t["labels"] for t in active if t["health"] == "up"}


def test_prometheus_scrapes_every_sidecar_and_follows_the_mesh(tmp_path: Path) -> None:
    need_prometheus()
    name = f"prom-{os.getpid()}"
    port, prom_port = free_port(), free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port, prom=prom_port, replicas=1))
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        assert f"prometheus: {prom} scraping the sidecars' /stats/prometheus" in up.lines
        targets = wait_for(
            "both sidecars up", lambda: len(up_targets(prom)) == 2 and up_targets(prom)
        )
        assert targets["web-0"] == {
            "namespace": name,
            "pod": "web-0",
            "service": "web",
            "cluster": "meshdev",
            "job": "envoy-stats",
            "instance": targets["web-0"]["instance"],
        }
        assert targets["ingress"]["service"] == "ingress"

        for _ in range(5):
            assert get(f"http://127.0.0.1:{port}/")[0] == 200
        q = urllib.parse.quote(
            f'sum(envoy_cluster_upstream_rq_total{{namespace="{name}",pod="ingress"}})'
        )

        def counted() -> float:
            result = query(prom, f"/api/v1/query?query={q}")["result"]
            return float(result[0]["value"][1]) if result else 0.0

        wait_for("the ingress's requests in Prometheus", lambda: counted() >= 5)

        # A scale-up: the new pod is a target within a few scrapes, with no reload of
        # Prometheus (it follows the targets file).
        # The save also changes the prometheus: section, which only the next `up` applies:
        # said, not left for the "applied" line to seem to cover.
        scaled = MESH.format(name=name, port=port, prom=prom_port, replicas=2)
        mesh_file.write_text(scaled.replace("scrape_interval: 1s", "scrape_interval: 2s"))
        up.wait_for("applied v2", 60)
        assert "prometheus: the change applies at the next `meshdev up`" in "\n".join(up.lines)
        wait_for("web-1 scraped", lambda: "web-1" in up_targets(prom))
        # meshdev status lists pods only, not Prometheus.
        assert {p["name"] for p in up.status()["pods"]} == {"ingress", "web-0", "web-1"}
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
    assert not procscan.labelled_processes(name)
    with pytest.raises(urllib.error.URLError):
        get(f"{prom}/-/ready", timeout=2)


def test_another_prometheus_on_the_port_is_not_taken_for_the_mesh_s(tmp_path: Path) -> None:
    # 9090, the default, is every Prometheus's: one already there answered /-/ready, so `up`
    # said "prometheus: ... scraping the sidecars" while nothing scraped them.
    need_prometheus()
    name = f"promtaken-{os.getpid()}"
    port, prom_port = free_port(), free_port()
    (tmp_path / "other.yml").write_text("scrape_configs: []\n")
    other = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'other.yml'}",
            f"--storage.tsdb.path={tmp_path / 'other-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            "the other Prometheus ready",
            lambda: _answers(f"http://127.0.0.1:{prom_port}/-/ready"),
        )
        mesh_file = tmp_path / "mesh.yaml"
        mesh_file.write_text(MESH.format(name=name, port=port, prom=prom_port, replicas=1))
        up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
        try:
            up.proc.wait(60)
        finally:
            code = up.stop()  # ends it if it took the other Prometheus for its own
        output = "\n".join(up.lines)
        assert code == 1, output
        assert "Error: prometheus exited at its start" in output
        assert "address already in use" in output
        assert f"127.0.0.1:{prom_port} (prometheus.port in mesh.yaml) taken?" in output
        assert "scraping the sidecars" not in output
        # The pods it had started are removed, and counted (it said "removed 0").
        assert "removed 0 processes/containers" not in output
        assert re.search(r"^removed [1-9]\d* processes/containers$", output, re.M), output
        assert not procscan.labelled_processes(name)
    finally:
        other.terminate()
        other.wait(30)


def _answers(url: str) -> bool:
    try:
        return get(url, timeout=2)[0] == 200
    except OSError:
        return False


# The official image's shape (ENTRYPOINT the server, flags as the command), from Debian's
# package: no image registry is reachable here, and the product pulls prom/prometheus itself.
STAND_IN = """\
FROM {base}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus \\
    && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["/usr/bin/prometheus"]
"""


@pytest.mark.docker
def test_prometheus_in_docker_scrapes_the_published_admin_ports(
    tmp_path: Path, docker_client: Any, docker_base_image: str
) -> None:
    image = "meshdev-test-prometheus:local"
    build = tmp_path / "prometheus-image"
    build.mkdir()
    (build / "Dockerfile").write_text(STAND_IN.format(base=docker_base_image))
    docker_client.images.build(path=str(build), tag=image, rm=True)
    name = f"dkprom-{os.getpid()}"
    port, prom_port = free_port(), free_port()
    prom = f"http://127.0.0.1:{prom_port}"
    mesh_file = tmp_path / "mesh.yaml"
    text = MESH.format(name=name, port=port, prom=prom_port, replicas=1)
    text = text.replace("scrape_interval: 1s}", f"scrape_interval: 1s, image: {image}}}")
    mesh_file.write_text(text)
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        up.wait_for("ready:", 600)
        targets = wait_for(
            "both sidecars up", lambda: len(up_targets(prom)) == 2 and up_targets(prom)
        )
        assert targets["web-0"]["namespace"] == name
        assert targets["web-0"]["service"] == "web"
        container = docker_client.containers.get(f"meshdev-{name}-prometheus")
        assert container.labels["meshdev.mesh"] == name
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
    names = [c.name for c in docker_client.containers.list(all=True)]
    assert f"meshdev-{name}-prometheus" not in names
