"""A real grpcio client calling a real grpcio server through real sidecars on loopback: an
outbound sidecar alone, and two hops (outbound -> the callee's inbound sidecar -> the app),
upstream over h2c (`http2: true` clusters, what `protocol: grpc` renders)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import sidecar, stat
from tests.sidecar.http2.grpcapp import EchoApp, call, channel, grpc_server, health_check
from tests.sidecar.proxy.wsapp import inbound_to, outbound_to

H2 = {"http2": True}


def port(sc: Sidecar, name: str) -> int:
    return next(x.port for x in sc.config.listeners if x.name == name)


@asynccontextmanager
async def one_hop(
    route: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None
) -> AsyncIterator[tuple[EchoApp, Sidecar, int]]:
    async with grpc_server() as app:
        cfg = outbound_to(app.port, route=route, cluster={**H2, **(cluster or {})})
        async with sidecar(cfg) as sc:
            yield app, sc, port(sc, "outbound")


@asynccontextmanager
async def two_hops(
    route: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[EchoApp, Sidecar, Sidecar, int]]:
    async with grpc_server() as app, sidecar(inbound_to(app.port, cluster=H2)) as callee:
        cfg = outbound_to(port(callee, "inbound"), route=route, cluster=H2)
        async with sidecar(cfg) as caller:
            yield app, caller, callee, port(caller, "outbound")


async def test_health_check_through_two_hops() -> None:
    async with two_hops() as (_, caller, callee, p), channel(p) as ch:
        assert await health_check(ch) == 1  # SERVING
        assert stat(caller, "cluster.backend.upstream_rq_200") == 1
        assert stat(callee, "cluster.inbound|8080.upstream_rq_200") == 1
        assert stat(caller, "cluster.backend.upstream_cx_http2_total") == 1
        assert stat(caller, "http.outbound.downstream_cx_http2_total") == 1
        assert stat(callee, "http.inbound.downstream_cx_http2_total") == 1


async def test_unary_and_trailers_through_two_hops() -> None:
    async with two_hops() as (app, _, _, p), channel(p) as ch:
        for i in range(5):
            answer, trailers = await call(ch, "Unary", f"hello-{i}".encode())
            assert answer == f"hello-{i}".encode()
            assert ("x-trailer", "done") in list(trailers)
        assert app.calls["Unary"] == 5


async def test_server_streaming_through_two_hops() -> None:
    async with two_hops() as (_, _, _, p), channel(p) as ch:
        rpc: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream("/test.Echo/Stream")
        got = [m async for m in rpc(b"50", timeout=10)]
        assert got == [f"msg-{i}".encode() for i in range(50)]


async def test_error_status_passes_through_unchanged() -> None:
    async with two_hops() as (_, caller, _, p), channel(p) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(ch, "Fail", b"7")
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "failed on purpose"
        # An error in grpc-status is still an HTTP 200 exchange.
        assert stat(caller, "cluster.backend.upstream_rq_200") == 1


async def test_many_concurrent_calls_share_one_upstream_connection() -> None:
    async with one_hop() as (app, sc, p), channel(p) as ch:
        results = await asyncio.gather(*(call(ch, "Unary", b"x" * i) for i in range(40)))
        assert [r[0] for r in results] == [b"x" * i for i in range(40)]
        assert stat(sc, "cluster.backend.upstream_cx_http2_total") == 1
        assert app.calls["Unary"] == 40


async def test_large_messages_both_ways() -> None:
    async with one_hop() as (_, _, p), channel(p) as ch:
        big = bytes(range(256)) * 12000  # ~3 MB, under grpcio's 4 MB default
        answer, _ = await call(ch, "Unary", big)
        assert answer == big
