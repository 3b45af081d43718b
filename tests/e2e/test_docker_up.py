"""`meshdev up --headless --runtime docker` on the example, end to end through the CLI: the
ingress answers through frontend -> backend sidecars, gRPC (frontend -> greeter, dialled as
`greeter:80` with no proxy: captured) and a WebSocket pass too, status lists every pod at one
version, a killed backend container shows, and down (also after SIGKILL) leaves no container or
network."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import docker
import grpc
import pytest
from aiohttp import ClientSession, WSMsgType

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, example_copy, get
from tests.support import WAIT, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def labelled(client: docker.DockerClient, name: str) -> tuple[list[str], list[str]]:
    flt: dict[str, str | list[str] | bool] = {"label": f"meshdev.mesh={name}"}
    containers = [str(c.name) for c in client.containers.list(all=True, filters=flt)]
    networks = [str(n.name) for n in client.networks.list(filters=flt)]
    return containers, networks


async def websocket_echo(url: str, message: str) -> str:
    async with ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_str(message)
        reply = await asyncio.wait_for(ws.receive(), WAIT)
        assert reply.type is WSMsgType.TEXT, reply
        return str(reply.data)


def grpc_through_the_gateway(port: int) -> None:
    """A grpcio client on the host calls greeter through the gateway (h2c on its port):
    unary, server streaming, and an error status that passes through unchanged."""
    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]
    ) as channel:
        hello: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/greeter.Greeter/SayHello"
        )
        answer = json.loads(hello(json.dumps({"name": "host"}).encode(), timeout=WAIT))
        assert answer["message"] == "Hello, host!"
        assert answer["answered_by"]["pod"] in ("greeter-0", "greeter-1")
        stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            "/greeter.Greeter/SayHellos"
        )
        messages = [
            json.loads(m)["message"]
            for m in stream(json.dumps({"name": "host", "count": 3}).encode(), timeout=WAIT)
        ]
        assert messages == ["Hello #1, host!", "Hello #2, host!", "Hello #3, host!"]
        with pytest.raises(grpc.RpcError) as refused:
            hello(b"not json", timeout=WAIT)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "the request is not JSON"


def test_example_on_docker(
    tmp_path: Path, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    name = f"dk-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        assert up.wait_for("ready:", 600) == f"ready: http://127.0.0.1:{port}/"
        status, body = get(f"http://127.0.0.1:{port}/items")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["pod"] == "frontend-0"
        assert answer["answered_by"]["pod"].startswith("backend-")

        st = up.status()
        assert st["runtime"] == "docker"
        pods = {p["name"]: p for p in st["pods"]}
        assert set(pods) == {
            "ingress",
            "frontend-0",
            "backend-v1-0",
            "backend-v1-1",
            "backend-v2-0",
            "greeter-0",
            "greeter-1",
        }
        assert all(p["ready"] and p["state"] == "running" for p in pods.values())
        assert {p["config_version"] for p in pods.values()} == {st["version"]}
        assert all(p["admin_url"].startswith("http://127.0.0.1:") for p in pods.values())
        front = admin_stats(
            pods["frontend-0"]["admin_url"], r"^cluster\.backend\.v[12]\.upstream_rq_2xx$"
        )
        assert sum(front.values()) >= 1

        # gRPC: the frontend dials greeter:80 itself (Docker pods get no HTTP_PROXY); capture
        # hands the call to its sidecar, which routes it by :authority over h2c.
        answered_by = set()
        for i in range(4):
            status, body = get(f"http://127.0.0.1:{port}/greet?name=dk{i}")
            assert status == 200, body
            answer = json.loads(body)
            assert answer["message"] == f"Hello, dk{i}!"
            answered_by.add(answer["answered_by"]["pod"])
        assert answered_by == {"greeter-0", "greeter-1"}
        status, body = get(f"http://127.0.0.1:{port}/greet?name=dk&count=2")
        assert status == 200, body
        assert json.loads(body)["messages"] == ["Hello #1, dk!", "Hello #2, dk!"]
        grpc = admin_stats(pods["frontend-0"]["admin_url"], r"^cluster\.greeter\.grpc\.")
        assert grpc["cluster.greeter.grpc.greeter.Greeter.SayHello.success"] == 4
        assert grpc["cluster.greeter.grpc.greeter.Greeter.SayHellos.success"] == 1

        grpc_through_the_gateway(port)

        # A WebSocket through the gateway and the frontend's sidecar to its echo.
        ws_url = f"ws://127.0.0.1:{port}/ws"
        assert asyncio.run(websocket_echo(ws_url, "through docker")) == "through docker"

        docker_client.containers.get(f"meshdev-{name}-backend-v2-0-app").kill()
        # The pod heals: restarted at once, the restart and the exit code in status.
        assert "exited with code 137; restarting now" in up.wait_for(
            "pod backend-v2-0: its app exited", 30
        )
        up.wait_for("pod backend-v2-0: restarted (1 restarts)", 60)
        backend = next(p for p in up.status()["pods"] if p["name"] == "backend-v2-0")
        assert (backend["restarts"], backend["exit_code"]) == (1, 137)
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
    assert labelled(docker_client, name) == ([], [])


def test_sigkill_then_down_on_docker(
    tmp_path: Path, docker_client: docker.DockerClient, docker_base_image: str
) -> None:
    name = f"dk-kill-{os.getpid()}"
    mesh_file = example_copy(tmp_path, name, free_port())
    env = {**env_for(tmp_path), "MESHDEV_BASE_IMAGE": docker_base_image}
    up = MeshUp(mesh_file, env, "--runtime", "docker")
    try:
        up.wait_for("ready:", 600)
        up.stop(signal.SIGKILL)
        containers, networks = labelled(docker_client, name)
        # 7 sidecars + 6 apps, orphaned by the crash; no capture step outlives its pod's start.
        assert len(containers) == 13
        assert networks == [f"meshdev-{name}"]
        # The next `up` would sweep them too; `down` does it without starting anything.
        res = up.run("down", str(mesh_file))
        assert res.returncode == 0, res.stderr
    finally:
        up.run("down", str(mesh_file))
    assert labelled(docker_client, name) == ([], [])
