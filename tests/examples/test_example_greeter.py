"""The example's gRPC service (examples/flask-app/greeter.py) as a grpcio client meets it, and the
frontend's `GET /greet` (app.py) calling it: straight to GREETER, and through a real meshdev
sidecar's outbound listener the way the process runtime's HTTP_PROXY leads it (h2c, with the
service name as :authority)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from meshdev.sidecar.main import Sidecar
from tests.examples.test_example_app import SCRUBBED_ENV, AppLauncher, RunningApp, call
from tests.sidecar.helpers import outbound_config, sidecar, stat
from tests.support import LOCALHOST, ROOT, WAIT, free_port

GREETER = ROOT / "examples" / "flask-app" / "greeter.py"
READY_LINE = re.compile(r"listening on grpc://127\.0\.0\.1:(?P<port>\d+)")
SAY_HELLO = "/greeter.Greeter/SayHello"
SAY_HELLOS = "/greeter.Greeter/SayHellos"


# ---------------------------------------------------------------------------------------------
# Running greeter.py


@dataclass
class RunningGreeter:
    port: int
    process: subprocess.Popen[str]
    stderr_path: Path

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode


@dataclass
class GreeterLauncher:
    """Starts greeter.py processes on 127.0.0.1 (PORT=0: it reports the port it got)."""

    workdir: Path
    running: list[RunningGreeter] = field(default_factory=list)

    def start(self, **env: str) -> RunningGreeter:
        full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        full_env.pop("ERROR_RATE", None)
        full_env.update({"HOST": LOCALHOST, "PORT": "0", **env})
        stderr_path = self.workdir / f"greeter-{len(self.running)}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(GREETER)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=full_env,
            )
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            line = process.stdout.readline() if selector.select(timeout=20) else ""
        match = READY_LINE.search(line)
        greeter = RunningGreeter(int(match["port"]) if match else 0, process, stderr_path)
        self.running.append(greeter)
        if match is None:
            greeter.stop()
            output = stderr_path.read_text()
            pytest.fail(f"greeter.py did not report its address; stderr:\n{output}")
        return greeter

    def close(self) -> None:
        for greeter in self.running:
            greeter.stop()


@pytest.fixture(scope="module")
def greeters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GreeterLauncher]:
    launcher = GreeterLauncher(tmp_path_factory.mktemp("greeters"))
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def greeter(greeters: GreeterLauncher) -> RunningGreeter:
    return greeters.start(SERVICE="greeter", VERSION="v1", POD="greeter-0")


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppLauncher]:
    launcher = AppLauncher(tmp_path_factory.mktemp("apps"))
    yield launcher
    launcher.close()


@pytest.fixture
def channel(greeter: RunningGreeter) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(greeter.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
        yield ch


def say_hello(
    ch: grpc.Channel, request: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> dict[str, Any]:
    rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(SAY_HELLO)
    answer: dict[str, Any] = json.loads(rpc(request, timeout=WAIT, metadata=metadata))
    return answer


def say_hellos(ch: grpc.Channel, request: bytes) -> list[dict[str, Any]]:
    rpc: grpc.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream(SAY_HELLOS)
    return [json.loads(m) for m in rpc(request, timeout=WAIT)]


def check_health(ch: grpc.Channel, service: str = "") -> int:
    check: grpc.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ] = ch.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    return int(check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT).status)


def rpc_error(what: Any) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as info:
        what()
    assert isinstance(info.value, grpc.Call)
    return info.value


# ---------------------------------------------------------------------------------------------
# greeter.py with a grpcio client


def test_say_hello_answers_with_who_answered_and_the_metadata(channel: grpc.Channel) -> None:
    answer = say_hello(channel, b'{"name": "ada"}', (("x-request-id", "req-7"),))
    assert answer["message"] == "Hello, ada!"
    assert answer["answered_by"] == {
        "service": "greeter",
        "version": "v1",
        "pod": "greeter-0",
        "hostname": answer["answered_by"]["hostname"],
    }
    assert answer["metadata"]["x-request-id"] == "req-7"
    # An empty request is an empty JSON object: the name defaults.
    assert say_hello(channel, b"")["message"] == "Hello, world!"


def test_say_hellos_streams_count_messages(channel: grpc.Channel) -> None:
    started = time.monotonic()
    got = say_hellos(channel, b'{"name": "bo", "count": 4, "interval_ms": 50}')
    assert time.monotonic() - started >= 0.15  # three intervals between four messages
    assert [(m["index"], m["message"]) for m in got] == [
        (i, f"Hello #{i + 1}, bo!") for i in range(4)
    ]
    assert {m["answered_by"]["pod"] for m in got} == {"greeter-0"}
    assert len(say_hellos(channel, b"{}")) == 3
    assert say_hellos(channel, b'{"count": 0}') == []


def test_the_standard_health_service_answers(channel: grpc.Channel) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert check_health(channel) == serving
    assert check_health(channel, "greeter.Greeter") == serving
    unknown = rpc_error(lambda: check_health(channel, "no.Such"))
    assert unknown.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("method", "request_body", "details"),
    [
        (SAY_HELLO, b"not json", "the request is not JSON"),
        (SAY_HELLO, b"[1]", "the request is not a JSON object"),
        (SAY_HELLO, b'{"name": " "}', "name: expected a non-empty string"),
        (SAY_HELLO, b'{"name": 7}', "name: expected a non-empty string"),
        (SAY_HELLOS, b'{"count": 101}', "count: expected a whole number 0..100"),
        (SAY_HELLOS, b'{"count": true}', "count: expected a whole number 0..100"),
        (SAY_HELLOS, b'{"interval_ms": -1}', "interval_ms: expected a whole number 0..10000"),
    ],
)
def test_a_bad_request_is_invalid_argument(
    channel: grpc.Channel, method: str, request_body: bytes, details: str
) -> None:
    def send() -> object:
        if method == SAY_HELLO:
            return say_hello(channel, request_body)
        return say_hellos(channel, request_body)

    err = rpc_error(send)
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, details)


def test_an_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/greeter.Greeter/Nope")
    assert rpc_error(lambda: rpc(b"{}", timeout=WAIT)).code() is grpc.StatusCode.UNIMPLEMENTED


def test_error_rate_sheds_calls_with_unavailable(greeters: GreeterLauncher) -> None:
    shedding = greeters.start(POD="greeter-9", ERROR_RATE="1")
    with grpc.insecure_channel(shedding.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
        for send in (lambda: say_hello(ch, b"{}"), lambda: say_hellos(ch, b"{}")):
            err = rpc_error(send)
            assert (err.code(), err.details()) == (
                grpc.StatusCode.UNAVAILABLE,
                "greeter-9 is shedding load",
            )
        assert check_health(ch) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT='eighty': expected an integer"),
        ({"ERROR_RATE": "lots"}, "ERROR_RATE='lots': expected a number"),
        ({"ERROR_RATE": "1.5"}, "ERROR_RATE='1.5': expected a number 0..1"),
    ],
)
def test_bad_settings_are_refused_with_their_name(env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    done = subprocess.run(
        [sys.executable, str(GREETER)],
        env={**base, "HOST": LOCALHOST, "PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert message in done.stderr


def test_sigterm_finishes_the_calls_in_flight_then_exits(greeters: GreeterLauncher) -> None:
    stopping = greeters.start(POD="greeter-8")
    with grpc.insecure_channel(stopping.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
        rpc: grpc.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream(SAY_HELLOS)
        stream = rpc(b'{"count": 4, "interval_ms": 200}', timeout=WAIT)
        first = next(stream)
        stopping.process.send_signal(signal.SIGTERM)
        rest = list(stream)
    assert [json.loads(m)["index"] for m in (first, *rest)] == [0, 1, 2, 3]
    assert stopping.process.wait(timeout=WAIT) == 0


# ---------------------------------------------------------------------------------------------
# app.py's GET /greet


def greet(app: RunningApp, query: str = "", headers: dict[str, str] | None = None) -> Any:
    reply = call(f"{app.url}/greet{query}", headers=headers)
    return reply.status, reply.json()


def test_greet_without_greeter_is_not_found(apps: AppLauncher) -> None:
    status, body = greet(apps.start(SERVICE="backend"))
    assert status == 404
    assert body["error"] == "GREETER is not set: no gRPC service to call"


def test_greet_calls_greeter_directly_without_a_proxy(
    apps: AppLauncher, greeter: RunningGreeter
) -> None:
    app = apps.start(SERVICE="frontend", POD="frontend-0", GREETER=greeter.address)
    sent = {"x-request-id": "req-1", "traceparent": "00-1-2-01", "x-private": "no"}

    status, body = greet(app, "?name=ada", headers=sent)

    assert status == 200, body
    assert (body["pod"], body["message"]) == ("frontend-0", "Hello, ada!")
    assert body["answered_by"]["pod"] == "greeter-0"
    assert body["grpc"] == {
        "service": greeter.address,
        "address": greeter.address,  # GREETER names its port: dialled as it is
        "authority": greeter.address,
        "method": SAY_HELLO,
        "status": "OK",
        "metadata": body["grpc"]["metadata"],
    }
    seen = body["grpc"]["metadata"]
    assert (seen["x-request-id"], seen["traceparent"]) == ("req-1", "00-1-2-01")
    assert "x-private" not in seen
    assert seen["user-agent"].startswith("grpc-python/")  # grpcio's own, not the caller's


def test_greet_with_count_streams(apps: AppLauncher, greeter: RunningGreeter) -> None:
    app = apps.start(SERVICE="frontend", GREETER=greeter.address)
    status, body = greet(app, "?name=cy&count=3&interval_ms=10")
    assert status == 200, body
    assert body["messages"] == ["Hello #1, cy!", "Hello #2, cy!", "Hello #3, cy!"]
    assert body["grpc"]["method"] == SAY_HELLOS


@pytest.mark.parametrize(
    ("query", "status", "grpc_status"),
    [
        ("?count=101", 400, "INVALID_ARGUMENT"),  # greeter refuses it
        ("?name=%20", 400, "INVALID_ARGUMENT"),
    ],
)
def test_greet_answers_greeters_status_in_http(
    apps: AppLauncher, greeter: RunningGreeter, query: str, status: int, grpc_status: str
) -> None:
    app = apps.start(SERVICE="frontend", GREETER=greeter.address)
    got, body = greet(app, query)
    assert (got, body["grpc"]["status"]) == (status, grpc_status)
    assert body["grpc"]["details"]


def test_greet_refuses_a_count_that_is_no_number(apps: AppLauncher) -> None:
    app = apps.start(SERVICE="frontend", GREETER="greeter")
    assert greet(app, "?count=many") == (400, {"error": "count: expected a whole number"})


def test_greet_with_a_shedding_or_absent_greeter_is_unavailable(
    apps: AppLauncher, greeters: GreeterLauncher
) -> None:
    shedding = greeters.start(ERROR_RATE="1", POD="greeter-7")
    for target in (shedding.address, f"{LOCALHOST}:{free_port()}"):
        app = apps.start(SERVICE="frontend", GREETER=target, UPSTREAM_TIMEOUT="5")
        status, body = greet(app)
        assert status == 503, body
        assert body["grpc"]["status"] == "UNAVAILABLE"


def test_greet_dials_directly_when_no_proxy_names_the_host(
    apps: AppLauncher, greeter: RunningGreeter
) -> None:
    # As urllib does for /items: NO_PROXY wins over HTTP_PROXY (here a port nothing serves).
    app = apps.start(
        GREETER=greeter.address,
        HTTP_PROXY=f"http://{LOCALHOST}:{free_port()}",
        NO_PROXY=f"localhost,{LOCALHOST}",
    )
    status, body = greet(app)
    assert status == 200, body
    assert body["grpc"]["address"] == greeter.address


def test_greet_without_a_proxy_dials_the_service_on_port_80(apps: AppLauncher) -> None:
    # Docker's traffic capture: `greeter:80` reaches the mesh whatever the app dials. Here the
    # name resolves nowhere, so the call fails, but it says where it went.
    app = apps.start(SERVICE="frontend", GREETER="greeter.invalid", UPSTREAM_TIMEOUT="3")
    status, body = greet(app)
    assert status in {503, 504}, body
    assert body["grpc"]["address"] == body["grpc"]["authority"] == "greeter.invalid:80"


async def test_greet_through_a_sidecar_dials_it_with_the_service_as_authority(
    apps: AppLauncher, greeter: RunningGreeter
) -> None:
    """HTTP_PROXY names the sidecar's outbound listener (the process runtime): /greet dials it in
    h2c and the sidecar routes by :authority to greeter's cluster, counting the gRPC call."""
    vhost = {
        "name": "greeter",
        "domains": ["greeter"],
        "routes": [
            {
                "name": "hello",
                "match": {"prefix": "/greeter.Greeter/"},
                "clusters": [{"cluster": "greeter", "weight": 1}],
            }
        ],
    }
    cluster = {
        "name": "greeter",
        "http2": True,  # what `protocol: grpc` renders
        "endpoints": [{"address": LOCALHOST, "port": greeter.port, "pod": "greeter-0"}],
    }
    async with sidecar(outbound_config([cluster], [vhost])) as sc:
        outbound = listener_port(sc)
        proxy = f"http://{LOCALHOST}:{outbound}"
        app = apps.start(SERVICE="frontend", GREETER="greeter", HTTP_PROXY=proxy)

        status, body = await _in_thread(greet, app, "?name=ada")
        stream_status, streamed = await _in_thread(greet, app, "?name=ada&count=2")

        assert status == 200, body
        assert body["message"] == "Hello, ada!"
        assert body["answered_by"]["pod"] == "greeter-0"
        assert (body["grpc"]["address"], body["grpc"]["authority"]) == (
            f"{LOCALHOST}:{outbound}",
            "greeter",
        )
        assert "x-request-id" in body["grpc"]["metadata"]  # the sidecar added one
        assert stream_status == 200, streamed
        assert len(streamed["messages"]) == 2
        assert stat(sc, "http.outbound.downstream_cx_http2_total") == 1  # one shared channel
        g = "cluster.greeter.grpc.greeter.Greeter."
        assert stat(sc, g + "SayHello.success") == 1
        assert stat(sc, g + "SayHellos.success") == 1


def listener_port(sc: Sidecar, name: str = "outbound") -> int:
    return next(x.port for x in sc.config.listeners if x.name == name)


async def _in_thread(fn: Any, *args: Any) -> Any:
    # The sidecar serves on this test's event loop; the blocking HTTP call must not hold it.
    return await asyncio.to_thread(fn, *args)
