"""Security through the real thing, on both runtimes: a mesh of two callers and one callee with
STRICT mutual TLS and an authorization policy that lets only one caller in.

The allowed caller gets 200, the other 403 `RBAC: access denied`; a plaintext client straight
at the callee's inbound port is refused under STRICT, and after a save that switches the
callee to PERMISSIVE it is let in but denied (no identity); /certs shows the callee's SPIFFE
ID; the callee counts rbac.denied and its TLS handshakes; `status --json` shows each pod's
identity, certificate expiry and mode."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, get
from tests.support import WAIT, free_port

pytestmark = [pytest.mark.slow]

# Callers forward /call to the callee; the callee says who it is. Apps listen on $HOST.
APP = """\
import json, os, urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200
        if self.path.endswith(("/call", "/relay")):
            try:
                with urllib.request.urlopen("http://api/data", timeout=10) as r:
                    status, body = r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read().decode()
            answer = {"status": status, "body": body}
            if self.path.endswith("/relay"):  # the callee's status as its own
                code = status
        else:
            answer = {"service": os.environ["SERVICE"], "path": self.path}
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

MESH = """\
name: {name}
services:
  good: {{command: python3 app.py, health_path: /healthz}}
  bad: {{command: python3 app.py, health_path: /healthz}}
  api: {{command: python3 app.py, health_path: /healthz}}
ingress:
  port: {port}
  routes:
    - {{match: {{prefix: /good}}, to: good}}
    - {{match: {{prefix: /bad}}, to: bad}}
security:
  mtls: STRICT
policies:
  api: {{mtls: {api_mode}}}
authorization:
  api:
    - name: good-only
      action: ALLOW
      from: {{services: [good]}}
"""


def _plaintext_answer(host: str, port: int) -> bytes:
    """What a plaintext HTTP client straight at a port gets (b"" when it is cut off)."""
    with socket.create_connection((host, port), timeout=WAIT) as s:
        s.sendall(b"GET /data HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def _call(port: int, caller: str) -> dict[str, Any]:
    status, body = get(f"http://127.0.0.1:{port}/{caller}/call")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


@pytest.mark.parametrize("runtime", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_mtls_and_authorization_between_services(
    tmp_path: Path, runtime: str, request: pytest.FixtureRequest
) -> None:
    env = env_for(tmp_path)
    if runtime == "docker":
        env["MESHDEV_BASE_IMAGE"] = request.getfixturevalue("docker_base_image")
    name = f"sec-{runtime[0]}-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port, api_mode="STRICT"))
    up = MeshUp(mesh_file, env, "--runtime", runtime)
    try:
        up.wait_for("ready:", 600)
        allowed = _call(port, "good")
        assert allowed["status"] == 200, allowed
        assert json.loads(allowed["body"])["service"] == "api"
        denied = _call(port, "bad")
        assert denied == {"status": 403, "body": "RBAC: access denied"}

        st = up.status()
        pods = {p["name"]: p for p in st["pods"]}
        api = pods["api-0"]
        spiffe = f"spiffe://cluster.local/ns/{name}/sa/api"
        assert api["spiffe_id"] == spiffe
        assert api["mtls"] == "STRICT"
        assert api["cert_expires"]
        assert pods["good-0"]["spiffe_id"] == f"spiffe://cluster.local/ns/{name}/sa/good"

        status, body = get(f"{api['admin_url']}/certs")
        assert status == 200, body
        certs = json.loads(body)["certificates"][0]
        sans = [s["uri"] for c in certs["cert_chain"] for s in c["subject_alt_names"]]
        assert sans == [spiffe]

        # The callee's own inbound port, as the host reaches it: the process runtime's pod
        # address, or what Docker published on the host's loopback.
        inbound = _inbound(up, runtime, name, api)
        assert _plaintext_answer(*inbound) == b""  # STRICT: no TLS, no entry

        stats = admin_stats(api["admin_url"], r"(rbac|ssl\.handshake|no_filter_chain_match)")
        assert stats["http.inbound.rbac.denied"] == 1
        assert stats["http.inbound.rbac.allowed"] >= 1
        handshakes = [v for k, v in stats.items() if k.endswith(".ssl.handshake")]
        assert sum(handshakes) >= 2  # good's and bad's sidecars, each over mTLS
        assert sum(v for k, v in stats.items() if k.endswith("no_filter_chain_match")) == 1

        # A save switches the callee to PERMISSIVE: plaintext is let in, but it carries no
        # identity, so the ALLOW policy denies it; the callers keep their mTLS answers.
        mesh_file.write_text(MESH.format(name=name, port=port, api_mode="PERMISSIVE"))
        up.wait_for("applied v2", WAIT)
        answer = _plaintext_answer(*inbound)
        assert answer.startswith(b"HTTP/1.1 403"), answer
        assert answer.endswith(b"RBAC: access denied")
        assert _call(port, "good")["status"] == 200
        assert _call(port, "bad")["status"] == 403
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr


def _inbound(up: MeshUp, runtime: str, name: str, pod: dict[str, Any]) -> tuple[str, int]:
    if runtime == "process":
        return pod["address"], 15006
    import docker

    client = docker.from_env()
    try:
        ports = client.api.inspect_container(f"meshdev-{name}-api-0")["NetworkSettings"]["Ports"]
        return "127.0.0.1", int(ports["15006/tcp"][0]["HostPort"])
    finally:
        client.close()


PLAIN_MESH = """\
name: {name}
services:
  good: {{command: python3 app.py, health_path: /healthz}}
  api: {{command: python3 app.py, health_path: /healthz}}
ingress:
  port: {port}
  routes: [{{match: {{prefix: /good}}, to: good}}]
"""


LOAD = ("load", "--rps", "100", "--duration", "6s", "--json")


def test_turning_mtls_on_under_load_fails_no_request(tmp_path: Path) -> None:
    """A save that adds `security: {mtls: STRICT}` while requests flow: the control plane goes
    through PERMISSIVE in rounds (meshdev/security/staging.py), so none fails."""
    _switch_under_load(tmp_path, "on", "", "security: {mtls: STRICT}\n", "STRICT")


def test_turning_mtls_off_under_load_fails_no_request(tmp_path: Path) -> None:
    """The other way: a save that removes `security` while requests flow goes back through
    PERMISSIVE in rounds, so none fails."""
    _switch_under_load(tmp_path, "off", "security: {mtls: STRICT}\n", "", "DISABLE")


def _switch_under_load(tmp_path: Path, which: str, before: str, after: str, mode: str) -> None:
    import subprocess
    import time

    from tests.support import MESHDEV

    name = f"sec-{which}-{os.getpid()}"
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(PLAIN_MESH.format(name=name, port=port) + before)
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        load = subprocess.Popen(
            [MESHDEV, *LOAD, f"http://127.0.0.1:{port}/good/relay"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(2.0)
        mesh_file.write_text(PLAIN_MESH.format(name=name, port=port) + after)
        up.wait_for("applied v2", WAIT)
        out, _ = load.communicate(timeout=60)
        result = json.loads(out)
        # Every call through the gateway and good's sidecar to api's answered 200, before,
        # during and after the switch.
        assert result["requests"] >= 500
        assert result["status"] == {"200": result["requests"]}, result["status"]
        pods = {p["name"]: p for p in up.status()["pods"]}
        assert pods["api-0"]["mtls"] == mode
        assert _call(port, "good")["status"] == 200
        stats = admin_stats(pods["api-0"]["admin_url"], r"ssl\.handshake")
        if which == "on":
            assert sum(stats.values()) >= 1  # good's calls are mTLS now
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
