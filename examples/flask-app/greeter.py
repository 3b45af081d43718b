"""meshdev's example gRPC service: a greeter the frontend calls over gRPC (`GET /greet`).

Run it with `python greeter.py`. Like app.py it is configured only through the environment:

    HOST, PORT          where to listen (0.0.0.0, 50051); PORT=0 takes a free port
    SERVICE, VERSION, POD   who it reports (defaults: greeter, v1, the hostname)
    ERROR_RATE          share of calls (0..1, default 0) refused with UNAVAILABLE, as a server
                        shedding load does: what a route's `retry_on: [unavailable]` retries

It speaks gRPC over cleartext HTTP/2 (h2c), which is how a sidecar reaches a `protocol: grpc`
service. Its service, `greeter.Greeter`, is built with grpcio's generic handlers and carries
JSON in its messages instead of protobuf, so there is no .proto file and no protoc step; any
grpcio client calls it with plain bytes:

    /greeter.Greeter/SayHello   unary:  {"name": "ada"} -> {"message": "Hello, ada!", ...}
    /greeter.Greeter/SayHellos  server streaming: {"name": "ada", "count": 3,
                                "interval_ms": 100} -> `count` messages, `interval_ms` apart

Every answer says who answered (`answered_by`) and the metadata the call arrived with
(`metadata`: what the caller propagated and its sidecar added). It also serves the standard
health service, grpc.health.v1.Health (`grpc_health_probe`, `grpcurl ... Health/Check`), for
"" and for greeter.Greeter; on SIGTERM it reports NOT_SERVING and finishes the calls in flight.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE_NAME = "greeter.Greeter"
MAX_COUNT = 100
MAX_INTERVAL_MS = 10_000
SHUTDOWN_GRACE_S = 5.0

Context = grpc.ServicerContext


class Greeter:
    def __init__(self, env: Mapping[str, str]) -> None:
        hostname = socket.gethostname()
        self.identity = {
            "service": env.get("SERVICE") or "greeter",
            "version": env.get("VERSION") or "v1",
            "pod": env.get("POD") or hostname,
            "hostname": hostname,
        }
        self.error_rate = _error_rate(env.get("ERROR_RATE", ""))
        self.rng = random.Random()

    def say_hello(self, request: bytes, context: Context) -> bytes:
        args = self._arguments(request, context)
        name = _name(args, context)
        return self._answer(context, message=f"Hello, {name}!")

    def say_hellos(self, request: bytes, context: Context) -> Iterator[bytes]:
        args = self._arguments(request, context)
        name = _name(args, context)
        count = _bounded(args, "count", 3, MAX_COUNT, context)
        interval_ms = _bounded(args, "interval_ms", 0, MAX_INTERVAL_MS, context)
        for index in range(count):
            if index and interval_ms:
                time.sleep(interval_ms / 1000)
            if not context.is_active():  # the caller cancelled or its deadline passed
                return
            yield self._answer(context, message=f"Hello #{index + 1}, {name}!", index=index)

    def _arguments(self, request: bytes, context: Context) -> dict[str, Any]:
        # A shed call is refused before anything is sent: a trailers-only answer, which a
        # sidecar may retry (once response headers went out, it may not).
        if self.error_rate and self.rng.random() < self.error_rate:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.identity['pod']} is shedding load")
        try:
            args = json.loads(request or b"{}")
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request is not JSON")
        if not isinstance(args, dict):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a JSON object")
        return args

    def _answer(self, context: Context, **fields: Any) -> bytes:
        metadata = {
            key: value
            for key, value in context.invocation_metadata()
            if isinstance(value, str) and not key.startswith(("grpc-", ":"))
        }
        return json.dumps({**fields, "answered_by": self.identity, "metadata": metadata}).encode()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "SayHello": grpc.unary_unary_rpc_method_handler(self.say_hello),
                "SayHellos": grpc.unary_stream_rpc_method_handler(self.say_hellos),
            },
        )


def _name(args: Mapping[str, Any], context: Context) -> str:
    name = args.get("name", "world")
    if not isinstance(name, str) or not name.strip():
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: expected a non-empty string")
    return str(name).strip()


def _bounded(args: Mapping[str, Any], key: str, default: int, high: int, context: Context) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{key}: expected a whole number 0..{high}")
    return int(value)


def _error_rate(raw: str) -> float:
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"ERROR_RATE={raw!r}: expected a number") from None
    if not 0.0 <= value <= 1.0:
        raise SystemExit(f"ERROR_RATE={raw!r}: expected a number 0..1")
    return value


def _port(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"PORT={raw!r}: expected an integer") from None


def main() -> None:
    env = os.environ
    host = env.get("HOST") or "0.0.0.0"
    greeter = Greeter(env)
    # A thread per call in flight, up to the pool's size: server streams sleep between messages.
    server = grpc.server(ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((greeter.handler(),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"[{host}]" if ":" in host else host
    port = server.add_insecure_port(f"{address}:{_port(env.get('PORT') or '50051')}")
    if port == 0:
        raise SystemExit(f"could not listen on {address}:{env.get('PORT')}")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        # As PID 1 in a container a default SIGTERM is ignored, and `docker stop` would wait.
        if not stopping.is_set():
            stopping.set()
            health_servicer.enter_graceful_shutdown()
            server.stop(SHUTDOWN_GRACE_S)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    me = greeter.identity
    print(
        f"{me['service']} {me['version']} pod {me['pod']} listening on grpc://{address}:{port}",
        flush=True,
    )
    server.wait_for_termination()


if __name__ == "__main__":
    main()
