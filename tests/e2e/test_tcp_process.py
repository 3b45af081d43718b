"""A tcp service in a real mesh on the process runtime: Debian's `redis-server` as `cache`
(`protocol: tcp`), reached through the mesh by a caller app that speaks RESP to
$CACHE_SERVICE_HOST:$CACHE_SERVICE_PORT, and by this test over a socket at the same place.

    test -> ingress -> caller's sidecar -> caller app -> caller's sidecar (tcp_proxy `cache`)
         -> cache's sidecar (inbound tcp_proxy) -> redis-server

The answers come back right and both sidecars count the connections and bytes under Envoy's
names. redis-server comes from scripts/test.sh (apt); without it the test fails in CI
(CI=true) and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, get
from tests.support import MESHDEV, free_port

pytestmark = pytest.mark.slow

# The caller: an HTTP app whose /redis?cmd=... sends one command to the cache and answers
# what redis said, with where its environment said the cache is.
CALLER = """\
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CACHE = (os.environ["CACHE_SERVICE_HOST"], int(os.environ["CACHE_SERVICE_PORT"]))


def resp(*args):
    out = b"*%d\\r\\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\\r\\n%s\\r\\n" % (len(a), a)
    return out


def ask(*args):
    with socket.create_connection(CACHE, timeout=5) as s:
        s.sendall(resp(*args))
        s.shutdown(socket.SHUT_WR)  # half-close: redis answers, then closes
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        cmd = parse_qs(urlparse(self.path).query).get("cmd", ["PING"])[0].split()
        body = json.dumps({"cache": "%s:%d" % CACHE, "answer": ask(*cmd)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

MESH = """\
name: {name}
services:
  cache:
    command: redis-server --port $PORT --bind $HOST --save '' --appendonly no --protected-mode no
    port: 6379
    protocol: tcp
  caller:
    command: python caller.py
    port: 8080
ingress:
  port: {port}
  routes: [{{to: caller}}]
policies:
  cache:
    circuit_breaker: {{max_connections: 50}}
    outlier_detection: {{consecutive_5xx: 3}}
"""


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is required in CI (scripts/test.sh installs it with apt)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    return found


def resp_command(sock: socket.socket, *args: str) -> bytes:
    """Send one RESP command; read one reply line (enough for +OK, :n, $n\\r\\nvalue)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode())
    sock.sendall(out)
    data = b""
    deadline = time.monotonic() + 5
    while not data.endswith(b"\r\n") or (data.startswith(b"$") and data.count(b"\r\n") < 2):
        assert time.monotonic() < deadline, data
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_redis_through_the_mesh(tmp_path: Path) -> None:
    redis_server()
    name = f"e2e-tcp-{os.getpid()}"
    port = free_port()
    (tmp_path / "caller.py").write_text(CALLER)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port))
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        pods = {p["name"]: p for p in up.status()["pods"]}
        assert {"ingress", "cache-0", "caller-0"} <= set(pods)
        caller = pods["caller-0"]
        protocols = {name: p["protocol"] for name, p in pods.items()}
        assert protocols == {"ingress": None, "cache-0": "tcp", "caller-0": "http"}

        # The caller app, from its environment, through its sidecar to redis and back.
        status, body = get(f"http://127.0.0.1:{port}/redis?cmd=SET+greeting+hello")
        assert status == 200, body
        said = json.loads(body)
        assert said["answer"] == "+OK\r\n"
        # Kubernetes' variables point at the caller's own address, where its sidecar listens.
        assert said["cache"] == f"{caller['address']}:6379"
        status, body = get(f"http://127.0.0.1:{port}/redis?cmd=GET+greeting")
        assert json.loads(body)["answer"] == "$5\r\nhello\r\n"

        # This test, speaking RESP over one socket to the same place (the caller's sidecar).
        with socket.create_connection((caller["address"], 6379), timeout=5) as s:
            assert resp_command(s, "PING") == b"+PONG\r\n"
            for i in range(1, 51):
                assert resp_command(s, "INCR", "hits") == b":%d\r\n" % i
            big = "x" * 300_000
            assert resp_command(s, "SET", "big", big) == b"+OK\r\n"
            s.sendall(b"*2\r\n$6\r\nSTRLEN\r\n$3\r\nbig\r\n")
            assert s.recv(100) == b":300000\r\n"

        # The caller's sidecar: its tcp_proxy `cache`, the cluster's connections and bytes.
        out = admin_stats(caller["admin_url"], r"^(tcp\.cache\.|cluster\.cache\.upstream_cx_)")
        assert out["tcp.cache.downstream_cx_total"] == 3
        assert out["tcp.cache.downstream_cx_rx_bytes_total"] > 300_000
        assert out["tcp.cache.downstream_cx_tx_bytes_total"] > 0
        assert out["cluster.cache.upstream_cx_total"] == 3
        assert (
            out["cluster.cache.upstream_cx_tx_bytes_total"]
            == (out["tcp.cache.downstream_cx_rx_bytes_total"])
        )
        assert out.get("cluster.cache.upstream_cx_connect_fail", 0) == 0
        # The cache's sidecar: its inbound tcp_proxy relayed the same connections to redis.
        inbound = admin_stats(pods["cache-0"]["admin_url"], r"^tcp\.inbound\|6379\.")
        assert inbound["tcp.inbound|6379.downstream_cx_total"] == 3
        assert (
            inbound["tcp.inbound|6379.downstream_cx_rx_bytes_total"]
            == (out["tcp.cache.downstream_cx_rx_bytes_total"])
        )
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr


def test_validate_locates_tcp_misuse(tmp_path: Path) -> None:
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(
        textwrap.dedent(
            """\
            name: bad-tcp
            services:
              cache: {command: redis-server, port: 6379, protocol: tcp}
            routes:
              cache:
                - {match: {prefix: /}, retries: {attempts: 2}}
            """
        )
    )
    res = subprocess.run(
        [MESHDEV, "validate", str(mesh_file)],
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=60,
    )
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert lines[0].startswith(f"{mesh_file}:6:15 routes.cache[0].match: cache is a tcp service")
    assert lines[1].startswith(f"{mesh_file}:6:37 routes.cache[0].retries: cache is a tcp service")
