"""A real grpcio server for tests: the standard `grpc.health.v1` health service, and a small
`test.Echo` service built with grpcio's generic handlers (raw bytes, so no protoc step):

- `Unary`: answers the request bytes, with a `x-trailer: done` trailing metadata;
- `Stream`: `n` messages (`n` = the request as decimal) `msg-0`, `msg-1`, ...;
- `Fail`: aborts with the status code given as the request (decimal), message "failed on purpose";
- `Flaky`: UNAVAILABLE while `flaky_left` > 0 (counting down), then OK;
- `Slow`: sleeps `delay` seconds (the request as a float), then answers "slow".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.support import LOCALHOST

SERVICE = "test.Echo"


@dataclass
class EchoApp:
    port: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    flaky_left: int = 0

    def _count(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self._count("Unary")
        context.set_trailing_metadata((("x-trailer", "done"),))
        return request

    async def stream(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        self._count("Stream")
        for i in range(int(request.decode())):
            yield f"msg-{i}".encode()

    async def fail(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self._count("Fail")
        await context.abort(status_code(int(request.decode())), "failed on purpose")
        raise AssertionError("abort returned")

    async def flaky(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self._count("Flaky")
        if self.flaky_left > 0:
            self.flaky_left -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return b"ok"

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        self._count("Slow")
        await asyncio.sleep(float(request.decode()))
        return b"slow"

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
                "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
                "Flaky": grpc.unary_unary_rpc_method_handler(self.flaky),
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            },
        )


def status_code(value: int) -> grpc.StatusCode:
    """grpc.StatusCode of a numeric code."""
    return next(code for code in grpc.StatusCode if code.value[0] == value)


@asynccontextmanager
async def grpc_server() -> AsyncIterator[EchoApp]:
    app = EchoApp()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((app.handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    app.port = server.add_insecure_port(f"{LOCALHOST}:0")
    await server.start()
    try:
        yield app
    finally:
        await server.stop(0)


@asynccontextmanager
async def channel(port: int, authority: str = "backend") -> AsyncIterator[grpc.aio.Channel]:
    """A grpcio client channel to a listener, calling `authority` (routed as Host)."""
    ch = grpc.aio.insecure_channel(
        f"{LOCALHOST}:{port}", options=[("grpc.default_authority", authority)]
    )
    try:
        yield ch
    finally:
        await ch.close()


async def call(
    ch: grpc.aio.Channel, method: str, request: bytes, timeout: float | None = 10.0
) -> tuple[bytes, grpc.aio.Metadata]:
    """A unary call of test.Echo/<method>: the answer and its trailing metadata."""
    rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(f"/{SERVICE}/{method}")
    c = rpc(request, timeout=timeout)
    answer: bytes = await c
    return answer, await c.trailing_metadata()


async def health_check(ch: grpc.aio.Channel) -> int:
    check: grpc.aio.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ] = ch.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    resp = await check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return int(resp.status)
