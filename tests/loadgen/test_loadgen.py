"""The load generator against real HTTP servers on loopback.

`Target` is a raw asyncio HTTP/1.1 server (streams), so a test can make it do what a real
server does on a bad day: answer any status and headers, stall everything for a while, hold
each request, never answer, close or reset the connection, send garbage, or close a reused
keep-alive connection as a request arrives on it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from meshdev.loadgen import (
    LoadGenerator,
    LoadResult,
    LoadSpec,
    LoadSpecError,
    format_result,
    parse_header,
    parse_path_mix,
    run_load,
)
from tests.support import MESHDEV, free_port, wait_until


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    # reply | early_hints (103 first) | unframed (body ends at close) | close | reset | garbage
    # | hang
    action: str = "reply"


@dataclass
class Target:
    routes: dict[str, Reply] = field(default_factory=dict)
    hold: float = 0.0  # seconds each request waits before its answer
    close_reused: bool = False  # drop a connection when its second request arrives
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    _stall_at: int = 0
    _stall_for: float = 0.0
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _server: asyncio.Server | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall_once(self, at_request: int, seconds: float) -> None:
        """When request number `at_request` arrives, answer nothing for `seconds`."""
        self._stall_at, self._stall_for = at_request, seconds

    def paths(self) -> Counter[str]:
        return Counter(p for _, p in self.arrivals)

    async def start(self) -> Target:
        self._gate.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if self.close_reused and served:
                    return
                path = head.split(b" ", 2)[1].decode()
                self.arrivals.append((time.monotonic(), path))
                self.heads.append(head)
                if len(self.arrivals) == self._stall_at:
                    self._gate.clear()
                    asyncio.get_running_loop().call_later(self._stall_for, self._gate.set)
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                try:
                    await self._gate.wait()
                    if self.hold:
                        await asyncio.sleep(self.hold)
                finally:
                    self.active -= 1
                if not await self._answer(reader, writer, self.routes.get(path, Reply())):
                    return
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    @staticmethod
    async def _answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: Reply
    ) -> bool:
        """Answer one request; False when the connection is to end."""
        if reply.action == "hang":
            await reader.read()  # until the client gives up
            return False
        if reply.action == "close":
            return False
        if reply.action == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if reply.action == "garbage":
            writer.write(b"HELLO THERE\r\n\r\n")
            await writer.drain()
            return True
        extra = "".join(f"{n}: {v}\r\n" for n, v in reply.headers)
        if reply.action == "early_hints":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
        if reply.action == "unframed":
            writer.write(f"HTTP/1.1 {reply.status} X\r\nConnection: close\r\n\r\nbody".encode())
            await writer.drain()
            return False
        writer.write(f"HTTP/1.1 {reply.status} X\r\n{extra}Content-Length: 2\r\n\r\nok".encode())
        await writer.drain()
        return True


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = await Target().start()
    yield t
    await t.close()


def near(value: float, expected: float, slack: float = 1) -> bool:
    return abs(value - expected) <= slack


async def test_sends_rate_times_duration_requests(target: Target) -> None:
    result = await run_load(LoadSpec(target.url + "/x?q=1", rps=100, duration=0.5))
    assert near(result.requests, 50)
    assert len(target.arrivals) == result.requests == result.responses
    assert result.status == {200: result.requests}
    assert result.errors == {} and result.flags == {} and result.paths == {}
    assert target.paths() == {"/x?q=1": result.requests}
    assert result.latency.count == result.service_time.count == result.requests
    assert not result.running and result.in_flight == 0 and result.queued == 0
    # Requests reuse keep-alive connections instead of opening one each.
    head = target.heads[0].decode()
    assert head.startswith("GET /x?q=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{target.port}\r\n" in head


async def test_path_mix_proportions(target: Target) -> None:
    spec = LoadSpec(target.url, rps=800, duration=0.5, paths=(("/a", 3), ("/b", 1)), seed=7)
    result = await run_load(spec)
    n = result.requests
    seen = target.paths()
    assert seen["/a"] + seen["/b"] == n
    # Binomial(n, 3/4): within 4.5 standard deviations.
    assert abs(seen["/a"] - 0.75 * n) <= 4.5 * math.sqrt(n * 0.75 * 0.25)
    assert {p: t.requests for p, t in result.paths.items()} == dict(seen)
    assert sum(t.latency.count for t in result.paths.values()) == result.latency.count


async def test_status_and_response_flag_breakdown(target: Target) -> None:
    target.routes.update(
        {
            "/uo": Reply(503, (("x-envoy-overloaded", "true"),)),
            "/rl": Reply(429, (("X-Envoy-RateLimited", "true"),)),
            "/flags": Reply(503, (("x-envoy-response-flags", "UF,URX"),)),
            # The overloaded header and the flags header name the same flag: counted once.
            "/both": Reply(503, (("x-envoy-overloaded", "true"), ("x-envoy-response-flags", "UO"))),
            "/none": Reply(404, (("x-envoy-response-flags", "-"),)),
        }
    )
    mix = tuple((p, 1.0) for p in ("/ok", "/uo", "/rl", "/flags", "/both", "/none"))
    result = await run_load(LoadSpec(target.url, rps=300, duration=0.5, paths=mix, seed=1))
    seen = target.paths()
    assert result.status == {
        s: n
        for s, n in {
            200: seen["/ok"],
            503: seen["/uo"] + seen["/flags"] + seen["/both"],
            429: seen["/rl"],
            404: seen["/none"],
        }.items()
        if n
    }
    expected = Counter(
        {
            "UO": seen["/uo"] + seen["/both"],
            "RL": seen["/rl"],
            "UF": seen["/flags"],
            "URX": seen["/flags"],
        }
    )
    assert result.flags == {k: v for k, v in expected.items() if v}
    assert result.paths["/rl"].status == {429: seen["/rl"]}


async def test_a_stall_of_the_target_shows_in_the_latency_of_every_request_it_delayed(
    target: Target,
) -> None:
    # 200 req/s for 2 s; at request 100 the server answers nothing for 500 ms. The ~100
    # requests due during the stall wait for it: a closed-loop client would have sent one.
    target.stall_once(at_request=100, seconds=0.5)
    result = await run_load(LoadSpec(target.url, rps=200, duration=2.0))
    assert near(result.requests, 400)
    assert result.error_count == 0
    assert result.latency.quantile(0.99) >= 400
    assert result.latency.quantile(0.9) >= 100  # at least 10 % of requests were held up
    # The stall shows in the service time of the requests already sent, not in a lower rate.
    assert result.achieved_rps >= 150


async def test_a_stall_of_the_generator_shows_as_send_lag_and_latency(target: Target) -> None:
    async def block_the_loop() -> None:
        await asyncio.sleep(0.2)
        time.sleep(0.3)  # the generator's stall under test: nothing runs meanwhile

    blocker = asyncio.create_task(block_the_loop())
    result = await run_load(LoadSpec(target.url, rps=100, duration=0.6))
    await blocker
    assert near(result.requests, 60)  # late, but none skipped
    assert result.send_lag_max_ms >= 250
    assert result.latency.quantile(0.99) >= 200
    # ~30 requests were due during the stall, late by 150 ms on average: the delay is in their
    # latency, though not in their service time (from the actual send).
    assert result.send_lag_mean_ms >= 30
    assert result.latency.mean() >= result.service_time.mean() + 30


async def test_waiting_for_the_concurrency_cap_counts_in_latency(target: Target) -> None:
    target.hold = 0.1  # each request takes 100 ms: two connections serve 20 req/s
    result = await run_load(LoadSpec(target.url, rps=50, duration=0.5, concurrency=2))
    assert near(result.requests, 25)
    assert result.error_count == 0
    assert target.max_active == 2
    # 25 requests need 1.25 s of the two connections; the last is due at 0.48 s.
    assert result.latency.quantile(1.0) >= 500
    assert result.service_time.quantile(1.0) < result.latency.quantile(1.0)


async def test_connection_refused_is_counted_per_request() -> None:
    port = free_port()  # nothing listens there
    result = await run_load(LoadSpec(f"http://127.0.0.1:{port}/", rps=40, duration=0.5))
    assert near(result.requests, 20)
    assert result.errors == {"connect_refused": result.requests}
    assert result.responses == 0 and result.latency.count == 0
    assert result.to_json()["latency_ms"]["p99"] is None


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(action="close"), "closed"),
        (Reply(action="reset"), "reset"),
        (Reply(action="garbage"), "protocol"),
        (Reply(action="hang"), "timeout"),
    ],
)
async def test_failures_by_kind(target: Target, reply: Reply, kind: str) -> None:
    target.routes["/"] = reply
    result = await run_load(LoadSpec(target.url, rps=20, duration=0.25, timeout=0.2))
    assert near(result.requests, 5)
    assert result.errors == {kind: result.requests}
    assert result.responses == 0 and result.retried == 0


def test_mixed_outcomes_on_uvloop() -> None:
    # The command line runs on uvloop, whose transports differ from asyncio's.
    import uvloop

    routes = {
        "/uo": Reply(503, (("x-envoy-overloaded", "true"),)),
        "/reset": Reply(action="reset"),
        "/close": Reply(action="close"),
        "/hang": Reply(action="hang"),
    }
    mix = tuple((p, 1.0) for p in ("/ok", *routes))

    async def run() -> tuple[LoadResult, Counter[str]]:
        t = await Target(routes=routes).start()
        try:
            spec = LoadSpec(t.url, rps=200, duration=0.3, paths=mix, timeout=0.2, seed=2)
            return await run_load(spec), t.paths()
        finally:
            await t.close()

    result, seen = uvloop.run(run())
    assert result.status == {200: seen["/ok"], 503: seen["/uo"]}
    assert result.flags == {"UO": seen["/uo"]}
    assert result.errors["timeout"] == seen["/hang"]
    assert set(result.errors) == {"reset", "closed", "timeout"}
    # A reset or close on a reused connection, before any byte of the answer, looks like the
    # server's idle close racing the request: sent once more, on a fresh connection.
    resent = seen["/reset"] + seen["/close"] - result.errors["reset"] - result.errors["closed"]
    assert resent == result.retried
    assert result.requests + result.retried == sum(seen.values())


@pytest.mark.parametrize("action", ["unframed", "early_hints"])
async def test_unusual_but_valid_answers(target: Target, action: str) -> None:
    # A body delimited by the connection's close; an interim 103 before the real answer.
    target.routes["/"] = Reply(201, action=action)
    result = await run_load(LoadSpec(target.url, rps=20, duration=0.25))
    assert result.status == {201: result.requests} and result.error_count == 0


async def test_head_responses_end_at_their_headers(target: Target) -> None:
    result = await run_load(LoadSpec(target.url, rps=20, duration=0.25, method="HEAD"))
    assert result.status == {200: result.requests} and result.error_count == 0
    assert all(h.startswith(b"HEAD / ") for h in target.heads)


async def test_a_reused_connection_closed_by_the_server_is_retried_once(target: Target) -> None:
    target.close_reused = True
    result = await run_load(LoadSpec(target.url, rps=40, duration=0.3))
    assert near(result.requests, 12)
    assert result.error_count == 0
    assert result.retried >= 1
    post = await run_load(LoadSpec(target.url, rps=40, duration=0.3, method="POST"))
    assert post.retried == 0
    assert post.errors.get("closed", 0) >= 1  # not idempotent: never sent twice
    assert all(h.startswith(b"POST / ") and b"Content-Length: 0" in h for h in target.heads[-3:])
    strict = await run_load(LoadSpec(target.url, rps=40, duration=0.3, retry_stale=False))
    assert strict.retried == 0 and strict.errors.get("closed", 0) >= 1


async def test_set_rate_changes_the_rate(target: Target) -> None:
    gen = LoadGenerator(LoadSpec(target.url, rps=20))
    gen.start()
    await asyncio.sleep(0.5)
    slow = gen.snapshot()
    gen.set_rate(200)
    await asyncio.sleep(0.5)
    result = await gen.stop()
    fast = result.issued - slow.issued
    # An open loop sends by the schedule whatever the loop's hiccups: ~10, then ~100.
    assert slow.running and slow.rate == 20 and slow.issued <= 15
    assert fast >= 60
    assert result.rate == 200 and result.to_json()["target_rps"] == 200
    assert not result.running and result.requests == result.issued == len(target.arrivals)


async def test_pause_sends_nothing_and_resume_does_not_catch_up(target: Target) -> None:
    gen = LoadGenerator(LoadSpec(target.url, rps=100))
    gen.start()
    await asyncio.sleep(0.2)
    gen.pause()
    # Requests already due may still leave the queue as connections free up; then none may.
    await wait_until(lambda: gen.snapshot().queued == 0, "the queue of due requests to drain")
    paused_at = gen.snapshot().issued
    await asyncio.sleep(0.5)
    assert gen.paused and gen.snapshot().issued == paused_at
    gen.resume()
    await asyncio.sleep(0.05)
    # The 50 requests the pause would have owed are not sent in a burst.
    assert gen.snapshot().issued - paused_at <= 20
    result = await gen.stop()
    assert result.requests == result.issued == len(target.arrivals)


async def test_stop_cancels_queued_requests_and_waits_for_those_in_flight(
    target: Target,
) -> None:
    target.hold = 0.3
    gen = LoadGenerator(LoadSpec(target.url, rps=100, concurrency=1))
    gen.start()
    await asyncio.sleep(0.15)
    result = await gen.stop()
    assert result.cancelled >= 5
    assert result.responses == 1 and result.error_count == 0


async def test_json_shape_is_stable(target: Target) -> None:
    spec = LoadSpec(target.url, rps=50, duration=0.2, paths=(("/a", 1), ("/b", 1)), seed=3)
    result = await run_load(spec)
    out = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert set(out) == {
        "version", "url", "method", "target_rps", "achieved_rps", "elapsed_s", "concurrency",
        "running", "requests", "responses", "errors_total", "in_flight", "queued", "cancelled",
        "retried", "send_lag_ms", "latency_ms", "service_time_ms", "status", "response_flags",
        "errors", "paths",
    }  # fmt: skip
    quantiles = {"p50", "p90", "p95", "p99", "p99.9", "max", "mean"}
    assert out["version"] == 1
    assert set(out["latency_ms"]) == set(out["service_time_ms"]) == quantiles
    assert set(out["send_lag_ms"]) == {"mean", "max"}
    assert out["requests"] == out["responses"] == sum(out["status"].values())
    assert out["concurrency"] == 64 and out["method"] == "GET"
    for path in out["paths"].values():
        assert set(path) == {"requests", "responses", "latency_ms", "status", "errors"}
        assert set(path["latency_ms"]) == quantiles
    assert sum(p["requests"] for p in out["paths"].values()) == out["requests"]
    lat = out["latency_ms"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]


async def test_human_table_lists_paths_statuses_flags_and_errors(target: Target) -> None:
    target.routes["/b"] = Reply(503, (("x-envoy-overloaded", "true"),))
    spec = LoadSpec(target.url, rps=100, duration=0.3, paths=(("/a", 1), ("/b", 1)), seed=5)
    result = await run_load(spec)
    lines = format_result(result).splitlines()
    rows = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert set(rows) == {"p50", "all", "/a", "/b", "service"}
    assert rows["/b"].split()[-1] == str(result.paths["/b"].requests)
    assert f"200 x{result.status[200]}" in lines[-3] and f"503 x{result.status[503]}" in lines[-3]
    assert lines[-2].split() == ["flags", "UO", f"x{result.status[503]}"]
    assert lines[-1].split() == ["errors", "none"]


def test_spec_parsing_and_validation() -> None:
    assert parse_path_mix("/items=9, /=1,/q?a=b") == (("/items", 9.0), ("/", 1.0), ("/q?a=b", 1.0))
    assert parse_header("X-Canary:  1 ") == ("X-Canary", "1")
    for bad_mix in ("", "items=1", "/a=0"):
        with pytest.raises(LoadSpecError):
            parse_path_mix(bad_mix)
    with pytest.raises(LoadSpecError):
        parse_header("no colon")
    bad_specs: list[dict[str, Any]] = [
        {"url": "https://x/"},
        {"url": "http:///"},
        {"rps": 0},
        {"rps": math.inf},
        {"duration": 0},
        {"concurrency": 0},
        {"method": "GE T"},
        {"headers": (("x", "a\r\nb"),)},
        {"paths": (("/a", -1),)},
    ]
    for bad in bad_specs:
        kwargs: dict[str, Any] = {"url": "http://127.0.0.1:1/", "rps": 1.0, **bad}
        with pytest.raises(LoadSpecError):
            LoadSpec(**kwargs)
    assert LoadSpec("http://h/", rps=1000).cap() == 500
    assert LoadSpec("http://h/", rps=10).cap() == 64


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        MESHDEV,
        "load",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_json(target: Target) -> None:
    code, out, err = await _cli(
        target.url, "--rps", "40", "--duration", "500ms", "--json",
        "--path-mix", "/a=1,/b=1", "-H", "x-test: yes", "--method", "get",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert near(result["requests"], 20)
    assert result["requests"] == len(target.arrivals)
    assert result["status"] == {"200": result["requests"]}
    assert {p: v["requests"] for p, v in result["paths"].items()} == dict(target.paths())
    assert all(b"\r\nx-test: yes\r\n" in h and h.startswith(b"GET ") for h in target.heads)
    assert err == ""  # no progress line when stderr is not a terminal


async def test_cli_table_and_exit_code_when_requests_fail() -> None:
    port = free_port()
    code, out, _ = await _cli(f"http://127.0.0.1:{port}/", "--rps", "20", "--duration", "200ms")
    assert code == 1
    assert out.splitlines()[-1].split() == ["errors", "connect_refused", "x4"]
    code, _, err = await _cli("http://127.0.0.1:1/", "--rps", "20", "--duration", "2")
    assert code == 2 and "expected a duration like 250ms or 2s" in err


async def test_cli_exit_code_says_whether_every_request_succeeded(target: Target) -> None:
    target.routes.update(
        {
            "/missing": Reply(404),
            "/limited": Reply(429),
            "/broken": Reply(503),
            "/moved": Reply(301),
        }
    )
    # Every request answered, none as asked: a 404 is no success.
    code, out, err = await _cli(f"{target.url}/missing", "--rps", "40", "--duration", "250ms")
    sent = len(target.arrivals)
    assert code == 1, out
    assert err == f"meshdev load: {sent} of {sent} requests got no 2xx/3xx ({sent} 4xx)\n"
    assert f"status     404 x{sent}" in out
    # One kind of failure among successes is enough, and --json still prints the result.
    code, out, err = await _cli(
        target.url, "--rps", "160", "--duration", "250ms", "--json",
        "--path-mix", "/=2,/limited=1,/broken=1",
    )  # fmt: skip
    result = json.loads(out)
    assert code == 1
    assert {"200", "429", "503"} <= set(result["status"]), result["status"]
    failed = result["status"]["429"] + result["status"]["503"]
    assert err.startswith(f"meshdev load: {failed} of {result['requests']} requests got no ")
    # 2xx and 3xx are successes (a redirect is not followed).
    code, _, err = await _cli(
        target.url, "--rps", "40", "--duration", "250ms", "--path-mix", "/=1,/moved=1"
    )
    assert (code, err) == (0, "")


async def test_per_path_histograms_add_up_to_the_total(target: Target) -> None:
    spec = LoadSpec(target.url, rps=200, duration=0.3, paths=(("/a", 1), ("/b", 1)), seed=9)
    result = await run_load(spec)
    merged = result.paths["/a"].latency + result.paths["/b"].latency
    assert merged == result.latency
    assert merged.count == result.requests
