"""A real grpcio client calling a real grpcio server through real sidecars on loopback: an
outbound sidecar alone, and two hops (outbound -> the callee's inbound sidecar -> the app),
upstream over h2c (`http2: true` clusters, what `protocol: grpc` renders)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import outbound_config, sidecar, simple_config, stat, upstreams
from tests.sidecar.http2.grpcapp import EchoApp, call, channel, grpc_server, health_check
from tests.sidecar.http2.h2client import H2Client
from tests.sidecar.proxy.wsapp import inbound_to, outbound_to
from tests.support import LOCALHOST

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


# -- gRPC semantics, as Envoy's ------------------------------------------------------------

GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]
# A gRPC message: uncompressed flag, 4-byte length, then the bytes.
EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"


async def test_retry_on_unavailable_retries_until_served() -> None:
    route = {"retries": {"attempts": 3, "retry_on": ["unavailable"], "base_interval": 0.001}}
    async with one_hop(route=route) as (app, sc, p), channel(p) as ch:
        app.flaky_left = 2
        answer, _ = await call(ch, "Flaky", b"")
        assert answer == b"ok"
        assert app.calls["Flaky"] == 3
        assert stat(sc, "cluster.backend.upstream_rq_retry") == 2
        assert stat(sc, "cluster.backend.upstream_rq_retry_success") == 1
        # Only the status retry_on names: PERMISSION_DENIED goes back at once.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(ch, "Fail", b"7")
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert app.calls["Fail"] == 1


async def test_route_timeout_answers_deadline_exceeded() -> None:
    async with one_hop(route={"timeout": 0.3}) as (_, sc, p), channel(p) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(ch, "Slow", b"5", timeout=10)
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert info.value.details() == "upstream request timeout"
        assert stat(sc, "cluster.backend.upstream_rq_timeout") == 1


async def test_grpc_timeout_caps_the_route_timeout() -> None:
    """A raw HTTP/2 caller (no deadline of its own) sending grpc-timeout: 300m gets
    grpc-status 4 from the sidecar after ~0.3 s although the route allows 15 s. The upstream
    is a plain HTTP one that ignores grpc-timeout, so the sidecar's timer is the only one."""
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        c = await H2Client.open(LOCALHOST, port(sc, "outbound"))
        try:
            t0 = time.monotonic()
            sid = c.start(
                "/test.Echo/Slow?delay=5",
                method="POST",
                headers=[*GRPC_HEADERS, ("grpc-timeout", "300m")],
                end=False,
            )
            await c.send_body(sid, EMPTY_MESSAGE)
            a = await c.answer(sid)
            elapsed = time.monotonic() - t0
        finally:
            await c.close()
        assert a.status == 200
        assert a.headers["grpc-status"] == "4"
        assert a.headers["grpc-message"] == "upstream request timeout"
        assert 0.25 < elapsed < 3.0
        assert stat(sc, "cluster.backend.upstream_rq_timeout") == 1


async def test_grpc_stats_per_method_and_status() -> None:
    async with one_hop() as (_, sc, p), channel(p) as ch:
        for _ in range(3):
            await call(ch, "Unary", b"x")
        for code in (7, 7, 5):
            with pytest.raises(grpc.aio.AioRpcError):
                await call(ch, "Fail", str(code).encode())
        g = "cluster.backend.grpc.test.Echo."
        assert stat(sc, g + "Unary.success") == 3
        assert stat(sc, g + "Unary.total") == 3
        assert stat(sc, g + "Unary.0") == 3
        assert stat(sc, g + "Fail.failure") == 3
        assert stat(sc, g + "Fail.total") == 3
        assert stat(sc, g + "Fail.7") == 2
        assert stat(sc, g + "Fail.5") == 1


async def test_local_replies_carry_grpc_status() -> None:
    route = {"fault": {"abort": {"status": 503, "percent": 100, "grpc_status": 9}}}
    async with one_hop(route=route) as (app, _, p):
        async with channel(p) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(ch, "Unary", b"x")
            assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert info.value.details() == "fault filter abort"
        # No route for this authority: Envoy's 404 NR becomes UNIMPLEMENTED.
        async with channel(p, authority="nowhere") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(ch, "Unary", b"x")
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert app.calls.get("Unary", 0) == 0


async def test_overflow_and_rate_limit_are_unavailable() -> None:
    route = {"rate_limit": {"requests_per_second": 0.001, "burst": 1}}
    async with one_hop(route=route) as (_, _, p), channel(p) as ch:
        await call(ch, "Unary", b"first")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(ch, "Unary", b"second")
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == "local_rate_limited"
    cluster = {"circuit_breaker": {"max_requests": 1}}
    async with one_hop(cluster=cluster) as (_, sc, p), channel(p) as ch:
        slow = asyncio.ensure_future(call(ch, "Slow", b"0.5"))
        await asyncio.sleep(0.2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(ch, "Unary", b"x")
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert (await slow)[0] == b"slow"
        # Envoy's overflow: a 503 charged to the cluster, answered UNAVAILABLE.
        assert stat(sc, "cluster.backend.upstream_rq_503") == 1


async def test_many_answers_never_exhaust_the_connection_window() -> None:
    """Forty 64 KiB answers, each arrived whole before it is relayed (the fast path), on one
    upstream connection whose window is 1 MiB: every byte taken is acknowledged."""
    async with one_hop() as (_, sc, p), channel(p) as ch:
        big = b"y" * 65536
        for _ in range(40):
            answer, _ = await call(ch, "Unary", big)
            assert answer == big
        assert stat(sc, "cluster.backend.upstream_cx_http2_total") == 1


async def test_routes_match_grpc_methods_by_path() -> None:
    """`/package.Service/Method` is a path: an exact match picks one method's route."""
    async with grpc_server() as app:
        cluster = {
            "name": "backend",
            "http2": True,
            "endpoints": [{"address": LOCALHOST, "port": app.port, "pod": "backend-0"}],
        }
        to = [{"cluster": "backend", "weight": 1}]
        fault = {"abort": {"status": 503, "percent": 100, "grpc_status": 5}}
        routes = [
            {"name": "fail", "match": {"path": "/test.Echo/Fail"}, "clusters": to, "fault": fault},
            {"name": "rest", "match": {"prefix": "/test.Echo/"}, "clusters": to},
        ]
        vhosts = [{"name": "backend", "domains": ["backend"], "routes": routes}]
        async with (
            sidecar(outbound_config([cluster], vhosts)) as sc,
            channel(port(sc, "outbound")) as ch,
        ):
            assert (await call(ch, "Unary", b"ok"))[0] == b"ok"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(ch, "Fail", b"7")
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
            assert "Fail" not in app.calls
            assert stat(sc, "vhost.backend.route.fail.grpc.5") == 1
            assert stat(sc, "vhost.backend.route.rest.grpc.0") == 1


async def test_a_cluster_switched_to_http2_at_a_hot_swap() -> None:
    """A service whose protocol changes to grpc: the swap gives its hosts h2c pools."""
    async with grpc_server() as app, sidecar(outbound_to(app.port)) as sc:
        p = port(sc, "outbound")
        async with channel(p) as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                # HTTP/1.1 to a gRPC server: no gRPC answer comes back.
                await call(ch, "Unary", b"x", timeout=3)
        (backend,) = sc.config.clusters
        h2 = backend.model_copy(update={"http2": True})
        sc.apply(sc.config.model_copy(update={"version": 2, "clusters": (h2,)}))
        async with channel(p) as ch:
            assert (await call(ch, "Unary", b"x"))[0] == b"x"
        assert stat(sc, "cluster.backend.upstream_cx_http2_total") == 1


async def test_an_upstream_restart_is_survived() -> None:
    """The upstream goes away (GOAWAY, then its connection closes) and comes back on the same
    port: the next call opens a new h2c connection."""
    app = EchoApp()
    first = grpc.aio.server()
    first.add_generic_rpc_handlers((app.handler(),))
    app.port = first.add_insecure_port(f"{LOCALHOST}:0")
    await first.start()
    second: grpc.aio.Server | None = None
    try:
        async with (
            sidecar(outbound_to(app.port, cluster=H2)) as sc,
            channel(port(sc, "outbound")) as ch,
        ):
            assert (await call(ch, "Unary", b"one"))[0] == b"one"
            await first.stop(0)
            second = grpc.aio.server()
            second.add_generic_rpc_handlers((app.handler(),))
            second.add_insecure_port(f"{LOCALHOST}:{app.port}")
            await second.start()
            assert (await call(ch, "Unary", b"two"))[0] == b"two"
            assert stat(sc, "cluster.backend.upstream_cx_http2_total") == 2
    finally:
        await first.stop(0)
        if second is not None:
            await second.stop(0)
