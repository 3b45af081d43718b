"""A gRPC service in a real mesh on the process runtime: a grpcio server as `ratings`
(`protocol: grpc`, a `command:`), called by a real grpcio client through the ingress:

    test (grpcio) -> ingress (h2c) -> ratings' sidecar (h2c) -> the grpcio server

Unary and server-streaming calls pass, an error status comes back unchanged, `retry_on:
[unavailable]` retries a call the server refused, and both sidecars count it under Envoy's
names (HTTP/2 connections, grpc_stats per method).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
import pytest

from tests.e2e.meshrun import MeshUp, admin_stats, env_for
from tests.support import free_port

pytestmark = pytest.mark.slow

SERVER = """\
import asyncio
import os

import grpc

left = {"flaky": 2}


async def echo(request, context):
    return request


async def count(request, context):
    for i in range(int(request.decode())):
        yield b"n%d" % i


async def deny(request, context):
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")


async def flaky(request, context):
    if left["flaky"] > 0:
        left["flaky"] -= 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
    return b"served"


async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("ratings.Ratings", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Deny": grpc.unary_unary_rpc_method_handler(deny),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
    }),))
    server.add_insecure_port("%s:%s" % (os.environ["HOST"], os.environ["PORT"]))
    await server.start()
    await server.wait_for_termination()


asyncio.run(main())
"""

MESH = """\
name: {name}
services:
  ratings:
    command: {python} server.py
    port: 50051
    protocol: grpc
ingress:
  port: {port}
  routes: [{{to: ratings}}]
routes:
  ratings:
    - name: calls
      match: {{prefix: /ratings.Ratings/}}
      retries: {{attempts: 3, retry_on: [unavailable]}}
"""


async def calls(port: int) -> None:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]
    ) as ch:
        echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
            "/ratings.Ratings/Echo"
        )
        for i in range(10):
            assert await echo(b"hi %d" % i, timeout=10) == b"hi %d" % i
        count: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream(
            "/ratings.Ratings/Count"
        )
        assert [m async for m in count(b"20", timeout=10)] == [b"n%d" % i for i in range(20)]
        deny: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
            "/ratings.Ratings/Deny"
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await deny(b"", timeout=10)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "not yours"
        flaky: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
            "/ratings.Ratings/Flaky"
        )
        assert await flaky(b"", timeout=10) == b"served"


def test_grpc_through_the_mesh(tmp_path: Path) -> None:
    name = f"e2e-grpc-{os.getpid()}"
    port = free_port()
    (tmp_path / "server.py").write_text(SERVER)
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(MESH.format(name=name, port=port, python=sys.executable))
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process")
    try:
        up.wait_for("ready:")
        pods = {p["name"]: p for p in up.status()["pods"]}
        assert pods["ratings-0"]["protocol"] == "grpc"
        asyncio.run(calls(port))

        gw = admin_stats(pods["ingress"]["admin_url"], r"(http2|grpc|retry)")
        assert gw["http.ingress.downstream_cx_http2_total"] >= 1
        assert gw["cluster.ratings.upstream_cx_http2_total"] >= 1
        g = "cluster.ratings.grpc.ratings.Ratings."
        assert gw[g + "Echo.success"] == 10
        assert gw[g + "Count.0"] == 1
        assert gw[g + "Deny.7"] == 1
        assert gw[g + "Flaky.success"] == 1
        assert gw["cluster.ratings.upstream_rq_retry"] == 2
        app_side = admin_stats(pods["ratings-0"]["admin_url"], r"http2")
        assert app_side["http.inbound.downstream_cx_http2_total"] >= 1
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
