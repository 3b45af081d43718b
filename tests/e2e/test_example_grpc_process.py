"""The example mesh on the process runtime carries all three kinds of traffic the dashboard
shows: HTTP (`/items`: frontend -> backend), gRPC (`/greet`: frontend -> greeter, a grpcio
server with `protocol: grpc`) and a WebSocket (`/ws`, frontend's echo), all through the
ingress gateway as a user sends them:

    curl /greet -> ingress -> frontend's sidecar -> frontend -> (h2c, :authority greeter)
        frontend's sidecar (outbound) -> greeter's sidecar (inbound) -> greeter.py

The frontend's sidecar counts /greet's calls as gRPC, per method (Envoy's grpc_stats), and each
greeter pod answers the standard health check through its own sidecar.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import ClientSession, WSMsgType
from grpc_health.v1 import health_pb2

from tests.e2e.meshrun import MeshUp, admin_stats, env_for, example_copy, get
from tests.support import WAIT, free_port

pytestmark = pytest.mark.slow

GREETS = 6
INBOUND_PORT = 15006  # every pod's inbound listener, as in Docker


def health_through_inbound(address: str) -> int:
    """grpc.health.v1 Check of a greeter pod, through its sidecar's inbound listener (h2c)."""
    with grpc.insecure_channel(
        f"{address}:{INBOUND_PORT}",
        options=[("grpc.default_authority", "greeter"), ("grpc.enable_http_proxy", 0)],
    ) as ch:
        check: grpc.UnaryUnaryMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = ch.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        return int(check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT).status)


async def websocket_echo(url: str) -> Any:
    async with ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_str("beside gRPC")
        reply = await asyncio.wait_for(ws.receive(), WAIT)
        assert reply.type is WSMsgType.TEXT, reply
        return reply.data


def test_the_example_carries_http_grpc_and_websocket(tmp_path: Path) -> None:
    name = f"e2e-grpc-example-{os.getpid()}"
    port = free_port()
    mesh_file = example_copy(tmp_path, name, port)
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    base = f"http://127.0.0.1:{port}"
    try:
        up.wait_for("ready:")
        pods = {p["name"]: p for p in up.status()["pods"]}
        greeters = {n: p for n, p in pods.items() if p["service"] == "greeter"}
        assert set(greeters) == {"greeter-0", "greeter-1"}
        assert all(p["protocol"] == "grpc" for p in greeters.values())
        assert all(p["ready"] and p["state"] == "running" for p in pods.values())

        # gRPC: unary calls, spread over both greeter pods, then a server stream.
        answered_by = set()
        for i in range(GREETS):
            status, body = get(f"{base}/greet?name=e2e-{i}", {"x-request-id": f"greet-{i}"})
            assert status == 200, body
            answer = json.loads(body)
            assert answer["pod"] == "frontend-0"
            assert answer["message"] == f"Hello, e2e-{i}!"
            assert answer["grpc"]["authority"] == "greeter"
            assert answer["grpc"]["address"] == f"{pods['frontend-0']['address']}:15001"
            assert answer["grpc"]["metadata"]["x-request-id"] == f"greet-{i}"
            answered_by.add(answer["answered_by"]["pod"])
        assert answered_by == set(greeters)  # round_robin over both pods
        status, body = get(f"{base}/greet?name=e2e&count=3")
        assert status == 200, body
        assert json.loads(body)["messages"] == [f"Hello #{i}, e2e!" for i in (1, 2, 3)]

        # HTTP and WebSocket beside it.
        status, body = get(f"{base}/items")
        assert status == 200, body
        assert json.loads(body)["answered_by"]["pod"].startswith("backend-")
        assert asyncio.run(websocket_echo(f"ws://127.0.0.1:{port}/ws")) == "beside gRPC"

        # The frontend's sidecar saw /greet's calls as gRPC: h2c from the app, h2c upstream,
        # counted per method and status, on the route that matched them.
        front = admin_stats(pods["frontend-0"]["admin_url"], r"greeter|http\.outbound\.")
        g = "cluster.greeter.grpc.greeter.Greeter."
        assert front[g + "SayHello.success"] == GREETS
        assert front[g + "SayHello.0"] == GREETS
        assert front[g + "SayHellos.success"] == 1
        assert front["vhost.greeter.route.hello.grpc.0"] == GREETS + 1
        assert front["http.outbound.downstream_cx_http2_total"] >= 1
        assert front["cluster.greeter.upstream_cx_http2_total"] >= 1

        # Each greeter pod answers the standard health check through its own sidecar, and
        # took /greet's calls over h2c on that sidecar's inbound listener.
        serving = health_pb2.HealthCheckResponse.SERVING
        for pod in greeters.values():
            assert health_through_inbound(pod["address"]) == serving
            inbound = admin_stats(pod["admin_url"], r"http\.inbound\.downstream_cx_http2_total")
            assert inbound["http.inbound.downstream_cx_http2_total"] >= 1
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
