"""Traffic capture on the Docker runtime, through the real thing: iptables in each pod's network
namespace, the service names in the pod's hosts file, the sidecar's original_dst hand-off.

Inside the frontend's app container, clients with no proxy variable at all reach
`http://backend`, and the frontend's own sidecar counts (and routes, and faults) the calls; a
destination that is no mesh service passes through; an app that listens on every interface is
still reached only through its sidecar; the app container has no extra capability."""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, get
from tests.support import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Listens on every interface on purpose (HOST is ignored): capture must still put its sidecar
# in front of it.
APP = """\
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pod": os.environ["POD"], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""

MESH = """\
name: {name}
services:
  frontend:
    command: python3 app.py
    health_path: /healthz
  backend:
    command: python3 app.py
    health_path: /healthz
ingress:
  port: {port}
  routes: [{{to: frontend}}]
routes:
  backend:
    - name: broken
      match: {{prefix: /broken}}
      fault: {{abort: {{percent: 100, status: 418}}}}
    - name: rest
      match: {{prefix: /}}
"""

# Run inside the frontend's app container with an empty environment: no HTTP_PROXY, no
# NO_PROXY, nothing a client could take a proxy from.
CLIENT = """\
import json, sys, urllib.request, urllib.error
out = {}
for url in sys.argv[1:]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out[url] = [r.status, json.loads(r.read())]
    except urllib.error.HTTPError as e:
        out[url] = [e.code, None]
print(json.dumps(out))
"""


class _Answer(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"outside got " + self.rfile.readline())


@pytest.fixture
def outside_server() -> Iterator[int]:
    """A TCP server on the host that answers one line: a destination that is no mesh service."""
    server = socketserver.ThreadingTCPServer(("0.0.0.0", 0), _Answer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _exec(client: docker.DockerClient, container: str, *cmd: str) -> str:
    code, out = client.containers.get(container).exec_run(list(cmd), environment={})
    assert isinstance(out, bytes)  # not streamed
    text = out.decode(errors="replace")
    assert code == 0, text
    return text


def test_an_app_without_proxy_settings_is_meshed_in_docker(
    tmp_path: Path,
    docker_client: docker.DockerClient,
    docker_base_image: str,
    outside_server: int,
) -> None:
    name = f"dk-cap-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "client.py").write_text(CLIENT)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port))
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        assert up.wait_for("ready:", 600) == f"ready: http://127.0.0.1:{port}/"
        pods = {p["name"]: p for p in up.status()["pods"]}
        app = f"meshdev-{name}-frontend-0-app"
        frontend_admin = pods["frontend-0"]["admin_url"]

        # No proxy variable in the app's environment at all.
        env_lines = _exec(docker_client, app, "env")
        assert "proxy" not in env_lines.lower()

        before = admin_stats(frontend_admin, r"^cluster\.backend\.upstream_rq_total$")
        raw = _exec(
            docker_client,
            app,
            "env",
            "-i",
            "python3",
            "/app/client.py",
            "http://backend/items",
            f"http://backend.{name}/b",
            "http://backend:8080/c",
            "http://backend/broken",
        )
        answers = json.loads(raw)
        assert answers["http://backend/items"] == [200, {"pod": "backend-0", "path": "/items"}]
        assert answers[f"http://backend.{name}/b"][0] == 200
        # The app's own port is a service port too (Istio's 0.0.0.0_<port> listener).
        assert answers["http://backend:8080/c"][0] == 200
        # The destination's routes apply to the captured call: the fault answers.
        assert answers["http://backend/broken"] == [418, None]
        after = admin_stats(frontend_admin, r"^cluster\.backend\.upstream_rq_total$")
        # Counted by the frontend's own sidecar (the faulted one never left it).
        assert (
            after["cluster.backend.upstream_rq_total"]
            - before.get("cluster.backend.upstream_rq_total", 0)
            == 3
        )

        # A destination that is no mesh service (the host, through the network's gateway) is
        # relayed unchanged, and counted as Istio's PassthroughCluster.
        gateway = docker_client.networks.get(f"meshdev-{name}").attrs["IPAM"]["Config"][0][
            "Gateway"
        ]
        said = _exec(
            docker_client,
            app,
            "python3",
            "-c",
            "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5);"
            " s.sendall(b'hi\\n'); print(s.makefile().readline().strip())",
            gateway,
            str(outside_server),
        )
        assert said.strip() == "outside got hi"
        passthrough = admin_stats(frontend_admin, r"^cluster\.PassthroughCluster\.")
        assert passthrough["cluster.PassthroughCluster.upstream_cx_total"] == 1

        # Inbound: the backend app listens on every interface, yet a connection to its port at
        # the pod's address lands on its sidecar's inbound listener.
        backend_admin = pods["backend-0"]["admin_url"]
        inbound_before = admin_stats(backend_admin, r"^http\.inbound\.downstream_rq_total$")
        answers = json.loads(
            _exec(
                docker_client,
                app,
                "python3",
                "/app/client.py",
                f"http://{pods['backend-0']['address']}:8080/direct",
            )
        )
        assert answers[f"http://{pods['backend-0']['address']}:8080/direct"][0] == 200
        inbound_after = admin_stats(backend_admin, r"^http\.inbound\.downstream_rq_total$")
        key = "http.inbound.downstream_rq_total"
        assert inbound_after[key] - inbound_before.get(key, 0) == 1

        # The app container got no capability; the capture step is gone once the pod runs.
        host_config = docker_client.api.inspect_container(app)["HostConfig"]
        assert not host_config.get("CapAdd")
        names = [c.name or "" for c in docker_client.containers.list(all=True)]
        assert not [n for n in names if n.startswith(f"meshdev-{name}-") and "capture" in n]

        # The ingress still reaches the frontend (its sidecar is not captured).
        status, _ = get(f"http://127.0.0.1:{port}/hello")
        assert status == 200
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr


def test_no_capture_falls_back_to_http_proxy(
    tmp_path: Path, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    """`up --no-capture` (an engine that refuses NET_ADMIN): no capture step, no iptables,
    no service names in the pod's hosts file; apps reach services through HTTP_PROXY."""
    name = f"dk-nocap-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "client.py").write_text(CLIENT)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port))
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker", "--no-capture")
    try:
        assert "without traffic capture" in up.wait_for("docker runtime without traffic capture")
        up.wait_for("ready:", 600)
        app = f"meshdev-{name}-frontend-0-app"
        env_lines = _exec(docker_client, app, "env")
        assert "HTTP_PROXY=http://127.0.0.1:15001" in env_lines
        assert "# meshdev service" not in _exec(docker_client, app, "cat", "/etc/hosts")
        # urllib honours HTTP_PROXY (exec inherits the container's environment).
        answers = json.loads(
            _exec(docker_client, app, "python3", "/app/client.py", "http://backend/items")
        )
        assert answers["http://backend/items"] == [200, {"pod": "backend-0", "path": "/items"}]
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
