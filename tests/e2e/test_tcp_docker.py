"""A tcp service on the Docker runtime: a small key-value server speaking a line protocol as
`cache` (`protocol: tcp`), reached by a caller app from $CACHE_SERVICE_HOST:$CACHE_SERVICE_PORT,
which in Docker is the service's name: it resolves to the service's virtual address in the
caller's pod, and the pod's traffic capture hands the connection to the caller's sidecar.
Readiness of the tcp pod goes through its sidecar's inbound tcp_proxy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, get
from tests.support import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOCKERFILE = """\
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1
WORKDIR /app
COPY kv.py caller.py ./
"""

# `SET k v` / `GET k`, one line each, answered with one line: enough of a Redis.
KV = """\
import asyncio, os

data = {}

async def serve(r, w):
    while line := await r.readline():
        parts = line.decode().split()
        if parts[:1] == ["SET"]:
            data[parts[1]] = parts[2]
            w.write(b"OK\\n")
        elif parts[:1] == ["GET"]:
            w.write((data.get(parts[1], "nil") + "\\n").encode())
        await w.drain()
    w.close()

async def main():
    server = await asyncio.start_server(serve, os.environ["HOST"], int(os.environ["PORT"]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

CALLER = """\
import json, os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CACHE = (os.environ["CACHE_SERVICE_HOST"], int(os.environ["CACHE_SERVICE_PORT"]))

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":  # readiness: the caller itself, not the cache
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        with socket.create_connection(CACHE, timeout=5) as s:
            f = s.makefile("rwb")
            f.write(b"SET greeting hello\\nGET greeting\\n")
            f.flush()
            answers = [f.readline().decode().strip(), f.readline().decode().strip()]
        body = json.dumps({"cache": "%s:%d" % CACHE, "answers": answers}).encode()
        self.send_response(200)
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
    build: ./app
    command: python kv.py
    port: 6379
    protocol: tcp
  caller:
    build: ./app
    command: python caller.py
    health_path: /healthz
ingress:
  port: {port}
  routes: [{{to: caller}}]
"""


def test_a_tcp_service_on_docker(
    tmp_path: Path, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    name = f"dk-tcp-{os.getpid()}"
    port = free_port()
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "kv.py").write_text(KV)
    (app / "caller.py").write_text(CALLER)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port))
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        assert up.wait_for("ready:", 600) == f"ready: http://127.0.0.1:{port}/"
        status, body = get(f"http://127.0.0.1:{port}/")
        assert status == 200, body
        assert json.loads(body) == {"cache": "cache:6379", "answers": ["OK", "hello"]}
        pods = {p["name"]: p for p in up.status()["pods"]}
        assert pods["cache-0"]["protocol"] == "tcp"
        out = admin_stats(pods["caller-0"]["admin_url"], r"^(tcp\.cache\.|cluster\.cache\.)")
        assert out["tcp.cache.downstream_cx_total"] == 1
        assert out["cluster.cache.upstream_cx_total"] == 1
        assert out["tcp.cache.downstream_cx_rx_bytes_total"] == len(
            b"SET greeting hello\nGET greeting\n"
        )
        inbound = admin_stats(pods["cache-0"]["admin_url"], r"^tcp\.inbound\|6379\.")
        # The caller's connection, and the readiness probe's through the same listener.
        assert inbound["tcp.inbound|6379.downstream_cx_total"] >= 2
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
