"""Traces from Docker pods to a collector on the host, named as a user names it on their
machine: `http://127.0.0.1:<port>`. Inside a container 127.0.0.1 is the pod itself, so the plan
points each sidecar at the host's address on the mesh network (its gateway) instead; the
collector (listening on every interface, as a published Jaeger or Zipkin container does) gets
the whole trace of a request through ingress -> frontend -> backend."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

from meshdev.common import trace_wire as tw
from tests.e2e.meshrun import MeshUp, env_for, example_copy, get
from tests.e2e.test_tracing_process import by, check_nested, collector, trace_of
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def test_docker_pods_send_spans_to_a_collector_on_the_hosts_loopback_url(
    tmp_path: Path, docker_base_image: str
) -> None:
    name = f"e2e-trd-{os.getpid()}"
    port = free_port()
    with collector("0.0.0.0") as col:
        text = (Path(__file__).parents[2] / "examples/flask-app/mesh.yaml").read_text()
        text += f"\ntracing:\n  zipkin: {col.base}/api/v2/spans\n"
        mesh_file = example_copy(tmp_path, name, port, text)
        env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
        up = MeshUp(mesh_file, env, "--runtime", "docker")
        try:
            up.wait_for("ready:", 900)
            status, body = get(f"http://127.0.0.1:{port}/items", {"x-request-id": "e2e-docker-1"})
            assert status == 200, body
            spans = trace_of(col, "e2e-docker-1", 5, timeout=30)
            chain = [
                *by(spans, "ingress", "SERVER"),
                *by(spans, "ingress", "CLIENT"),
                *by(spans, "frontend", "SERVER"),
                *by(spans, "frontend", "CLIENT"),
                *by(spans, "backend", "SERVER"),
            ]
            assert len(chain) == len(spans) == 5, spans
            for parent, child in itertools.pairwise(chain):
                check_nested(parent, child)
            # What the sidecars were told: the collector at the mesh network's gateway.
            pods = {p["name"]: p for p in up.status()["pods"]}
            _, raw = get(f"{pods['frontend-0']['admin_url']}/config_dump")
            zipkin = json.loads(raw)["config"]["tracing"]["zipkin"]
            assert not zipkin.startswith("http://127.0.0.1:"), zipkin
            assert zipkin.endswith(f":{col.server_address[1]}/api/v2/spans")
            assert all(s["tags"][tw.TAG_STATUS] == "200" for s in spans)
        finally:
            res = up.run("down", str(mesh_file))
            up.stop()
        assert res.returncode == 0, res.stderr
