"""Envoy's tcp_proxy on real loopback sockets: a client -> the caller's sidecar (an outbound
tcp_proxy listener) -> the callee's sidecar (its inbound tcp_proxy) -> an asyncio app.

Bytes both ways, a large transfer against a stalled reader (back-pressure keeps the sidecars'
buffers small), half-close, a failed connect ejecting its host, `max_connections`, a weighted
split over many connections, the idle timeout, and a listener that changes between HTTP and
tcp_proxy in place. Stat names are Envoy's (`tcp.<stat_prefix>.*`, `cluster.<c>.upstream_cx_*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import dead_endpoint, outbound_config, sidecar, stat
from tests.support import LOCALHOST, free_port, wait_until

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class App:
    """An asyncio server standing in for a tcp service's app."""

    handler: Handler
    port: int = 0
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> App:
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await self.handler(r, w)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()
                self._tasks.discard(task)

        self._server = await asyncio.start_server(serve, LOCALHOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await self._server.wait_closed()


async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(65536):
        w.write(data)
        await w.drain()


def answer(text: bytes) -> Handler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(text)
        await w.drain()
        await r.read()  # until the client closes

    return handler


@asynccontextmanager
async def app(handler: Handler = echo) -> AsyncIterator[App]:
    a = await App(handler).start()
    try:
        yield a
    finally:
        await a.stop()


def tcp_listener(
    name: str,
    clusters: dict[str, int],
    *,
    kind: str = "outbound",
    stat_prefix: str | None = None,
    idle_timeout: float | None = None,
    port: int | None = None,
) -> dict[str, Any]:
    proxy: dict[str, Any] = {
        "stat_prefix": stat_prefix or name,
        "clusters": [{"cluster": c, "weight": w} for c, w in clusters.items()],
    }
    if idle_timeout is not None:
        proxy["idle_timeout"] = idle_timeout
    lst: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "address": LOCALHOST,
        "port": port or free_port(),
        "tcp_proxy": proxy,
    }
    if kind == "inbound":
        lst["cluster"] = next(iter(clusters))
    return lst


def cluster(name: str, *ports: int, **policy: Any) -> dict[str, Any]:
    endpoints = [
        {"address": LOCALHOST, "port": p, "pod": f"{name}-{i}"} for i, p in enumerate(ports)
    ]
    return {"name": name, "endpoints": endpoints, **policy}


def tcp_config(listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> SidecarConfig:
    return outbound_config(clusters, [], extra_listeners=listeners, kind="none")


def inbound_config(app_port: int, **proxy: Any) -> SidecarConfig:
    """The callee's sidecar: its inbound listener relays to its app (as plan.render does)."""
    own = f"inbound|{app_port}"
    return tcp_config(
        [tcp_listener("inbound", {own: 1}, kind="inbound", stat_prefix=own, **proxy)],
        [cluster(own, app_port)],
    )


def caller_config(*ports: int, idle_timeout: float | None = None, **policy: Any) -> SidecarConfig:
    """The caller's sidecar: `redis` (endpoints: the given inbound listeners) at a listener."""
    return tcp_config(
        [
            tcp_listener(
                "outbound|6379|redis", {"redis": 1}, stat_prefix="redis", idle_timeout=idle_timeout
            )
        ],
        [cluster("redis", *ports, **policy)],
    )


def listen_port(sc: Sidecar, name: str) -> int:
    return sc.listener_port(name)


@asynccontextmanager
async def mesh(
    handler: Handler = echo, *, idle_timeout: float | None = None, **policy: Any
) -> AsyncIterator[tuple[Sidecar, Sidecar, App]]:
    """app <- callee's sidecar (inbound) <- caller's sidecar (outbound `redis`)."""
    async with app(handler) as a, sidecar(inbound_config(a.port)) as callee:
        inbound = listen_port(callee, "inbound")
        async with sidecar(caller_config(inbound, idle_timeout=idle_timeout, **policy)) as caller:
            yield caller, callee, a


async def connect(
    sc: Sidecar, name: str = "outbound|6379|redis"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(LOCALHOST, listen_port(sc, name))


async def closed_at_once(sc: Sidecar, name: str = "outbound|6379|redis") -> bool:
    """A connection the sidecar closes without relaying: EOF (or a reset) before any byte."""
    r, w = await connect(sc, name)
    try:
        data = await asyncio.wait_for(r.read(), 5)
    except ConnectionResetError:
        data = b""
    w.close()
    return data == b""


# -- bytes both ways ---------------------------------------------------------------------------


async def test_bytes_both_ways_through_two_sidecars() -> None:
    async with mesh() as (caller, callee, a):
        r, w = await connect(caller)
        w.write(b"PING\r\n")
        assert await r.readexactly(6) == b"PING\r\n"
        w.write(b"x" * 1000)
        assert await r.readexactly(1000) == b"x" * 1000
        w.close()
        await w.wait_closed()
        await wait_until(lambda: stat(caller, "cluster.redis.upstream_cx_destroy") == 1, "close")
        await wait_until(
            lambda: stat(callee, f"cluster.inbound|{a.port}.upstream_cx_destroy") == 1,
            "callee's close",
        )

        assert stat(caller, "tcp.redis.downstream_cx_total") == 1
        assert stat(caller, "tcp.redis.downstream_cx_rx_bytes_total") == 1006
        assert stat(caller, "tcp.redis.downstream_cx_tx_bytes_total") == 1006
        assert stat(caller, "cluster.redis.upstream_cx_total") == 1
        assert stat(caller, "cluster.redis.upstream_cx_tx_bytes_total") == 1006
        assert stat(caller, "cluster.redis.upstream_cx_rx_bytes_total") == 1006
        assert stat(caller, "cluster.redis.upstream_cx_active") == 0
        # The client closed first: the caller's sidecar closed its upstream side.
        assert stat(caller, "cluster.redis.upstream_cx_destroy_local") == 1
        own = f"inbound|{a.port}"
        assert stat(callee, f"tcp.{own}.downstream_cx_total") == 1
        assert stat(callee, f"tcp.{own}.downstream_cx_rx_bytes_total") == 1006
        assert stat(callee, f"cluster.{own}.upstream_cx_total") == 1
        assert a.connections == 1
        # A connection is not a request: the HTTP stats of the cluster do not move.
        assert stat(caller, "cluster.redis.upstream_rq_total") == 0


async def test_active_connections_are_counted_while_open() -> None:
    async with mesh() as (caller, _, _a):
        conns = [await connect(caller) for _ in range(3)]
        for r, w in conns:
            w.write(b"hi")
            assert await r.readexactly(2) == b"hi"
        assert stat(caller, "cluster.redis.upstream_cx_active") == 3
        host = next(h for h in caller.hosts() if h.cluster == "redis")
        assert host.cx_active == 3
        assert host.rq_active == 3
        for _, w in conns:
            w.close()
        await wait_until(lambda: stat(caller, "cluster.redis.upstream_cx_active") == 0, "closed")


# -- back-pressure ---------------------------------------------------------------------------


async def test_large_transfer_with_a_stalled_reader_keeps_buffers_small() -> None:
    size = 16 * 1024 * 1024
    reading = asyncio.Event()
    got = hashlib.sha256()
    received = 0

    async def slow_sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        await reading.wait()
        while data := await r.read(65536):
            got.update(data)
            received += len(data)
        w.write(b"done %d" % received)
        await w.drain()

    async with mesh(slow_sink) as (caller, callee, _):
        r, w = await connect(caller)
        payload = bytes(range(256)) * (size // 256)
        sent = hashlib.sha256(payload)
        w.write(payload)
        writer = asyncio.ensure_future(w.drain())
        # The app reads nothing: the relay must stop reading rather than buffer 16 MiB.
        await wait_until(
            lambda: stat(caller, "tcp.redis.downstream_flow_control_paused_reading_total") >= 1,
            "the caller's sidecar to pause reading its client",
        )
        await asyncio.sleep(0.2)
        # What the sidecars hold in memory stays small (the rest waits in the kernel's socket
        # buffers, or in the client, whose writes block once those are full).
        held = caller.tcp_proxy("outbound|6379|redis").buffered()
        held += callee.tcp_proxy("inbound").buffered()
        assert held < 1024 * 1024, held
        reading.set()
        await asyncio.wait_for(writer, 30)
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 30) == b"done %d" % size
        assert got.digest() == sent.digest()
        resumed = "tcp.redis.downstream_flow_control_resumed_reading_total"
        assert stat(caller, resumed) >= 1
        assert stat(caller, "tcp.redis.downstream_cx_rx_bytes_total") == size
        w.close()


async def test_large_answer_to_a_slow_client_pauses_the_upstream() -> None:
    size = 16 * 1024 * 1024

    async def source(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        block = b"y" * 65536
        for _ in range(size // len(block)):
            w.write(block)
            await w.drain()
        w.write_eof()
        await r.read()

    async with mesh(source) as (caller, _, _a):
        r, w = await connect(caller)
        await wait_until(
            lambda: stat(caller, "cluster.redis.upstream_flow_control_paused_reading_total") >= 1,
            "the caller's sidecar to pause reading its upstream",
        )
        assert caller.tcp_proxy("outbound|6379|redis").buffered() < 1024 * 1024
        total = 0
        while data := await asyncio.wait_for(r.read(1 << 20), 30):
            total += len(data)
        assert total == size
        assert stat(caller, "cluster.redis.upstream_cx_rx_bytes_total") == size
        w.close()


# -- half-close ------------------------------------------------------------------------------


async def test_client_half_close_reaches_the_app_and_its_answer_comes_back() -> None:
    async def until_eof(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read()  # everything, up to the client's FIN
        w.write(b"got %d bytes after your FIN" % len(data))
        await w.drain()

    async with mesh(until_eof) as (caller, _, _a):
        r, w = await connect(caller)
        w.write(b"abc" * 100)
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 5) == b"got 300 bytes after your FIN"
        w.close()
        await wait_until(lambda: stat(caller, "cluster.redis.upstream_cx_active") == 0, "closed")


async def test_app_half_close_leaves_the_client_sending() -> None:
    heard: list[bytes] = []

    async def speaks_first(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello")
        w.write_eof()  # done talking, still listening
        heard.append(await r.read())

    async with mesh(speaks_first) as (caller, _, _a):
        r, w = await connect(caller)
        assert await asyncio.wait_for(r.read(), 5) == b"hello"  # then EOF
        w.write(b"still here")
        await w.drain()
        w.write_eof()
        await wait_until(lambda: heard == [b"still here"], "the app to hear the client")
        w.close()
        await wait_until(lambda: stat(caller, "cluster.redis.upstream_cx_active") == 0, "closed")


# -- failures --------------------------------------------------------------------------------


async def test_connect_failures_eject_the_host() -> None:
    dead = dead_endpoint()["port"]
    od = {"consecutive_5xx": 2, "interval": 60, "base_ejection_time": 60}
    async with app() as a, sidecar(inbound_config(a.port)) as callee:
        live = listen_port(callee, "inbound")
        cfg = caller_config(dead, live, lb="round_robin", outlier_detection=od)
        async with sidecar(cfg) as caller:
            outcomes = []
            for _ in range(10):
                r, w = await connect(caller)
                w.write(b"hi")
                try:
                    data = await asyncio.wait_for(r.read(2), 5)
                except ConnectionResetError:
                    data = b""
                outcomes.append(data)
                w.close()
            # Round robin alternates until the dead host's second failure ejects it.
            assert outcomes.count(b"") == 2
            assert outcomes[-4:] == [b"hi"] * 4
            assert stat(caller, "cluster.redis.upstream_cx_connect_fail") == 2
            od_p = "cluster.redis.outlier_detection."
            assert stat(caller, od_p + "ejections_enforced_consecutive_5xx") == 1
            assert stat(caller, od_p + "ejections_active") == 1
            assert stat(caller, "cluster.redis.membership_healthy") == 1
            hosts = {h.port: h for h in caller.hosts() if h.cluster == "redis"}
            assert hosts[dead].ejected
            assert not hosts[live].ejected
            assert stat(caller, "cluster.redis.upstream_cx_total") == 8
            assert stat(caller, "tcp.redis.downstream_cx_total") == 10


@contextlib.contextmanager
def black_hole() -> Any:
    """A port whose connects hang (a listener with a full accept queue drops SYNs)."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        s.listen(0)
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(s.getsockname())
            fillers.append(c)
        try:
            yield s.getsockname()[1]
        finally:
            for c in fillers:
                c.close()


async def test_connect_timeout_is_a_connect_failure_and_a_gateway_timeout() -> None:
    with black_hole() as port:
        od = {"consecutive_5xx": 1, "interval": 60, "base_ejection_time": 60}
        cfg = caller_config(port, connect_timeout=0.2, outlier_detection=od)
        async with sidecar(cfg) as caller:
            assert await closed_at_once(caller)
            assert stat(caller, "cluster.redis.upstream_cx_connect_timeout") == 1
            assert stat(caller, "cluster.redis.upstream_cx_connect_fail") == 1
            assert stat(caller, "cluster.redis.outlier_detection.ejections_active") == 1
            # Its only host is ejected: in panic (none of its hosts healthy) the next connection
            # is still tried there, as by Envoy's balancer, and times out again.
            assert await closed_at_once(caller)
            assert stat(caller, "cluster.redis.upstream_cx_connect_timeout") == 2
            assert stat(caller, "cluster.redis.lb_healthy_panic") == 1
            assert stat(caller, "cluster.redis.upstream_cx_none_healthy") == 0
            assert stat(caller, "cluster.redis.upstream_cx_active") == 0


async def test_max_connections_overflow_closes_at_once() -> None:
    async with mesh(circuit_breaker={"max_connections": 2}) as (caller, _, a):
        held = [await connect(caller) for _ in range(2)]
        for r, w in held:
            w.write(b"1")
            assert await r.readexactly(1) == b"1"
        assert await closed_at_once(caller)
        assert stat(caller, "cluster.redis.upstream_cx_overflow") == 1
        assert stat(caller, "cluster.redis.circuit_breakers.default.cx_open") == 1
        assert a.connections == 2
        held[0][1].close()
        await wait_until(lambda: stat(caller, "cluster.redis.upstream_cx_active") == 1, "freed")
        r, w = await connect(caller)
        w.write(b"2")
        assert await r.readexactly(1) == b"2"
        for _, hw in [held[1], (r, w)]:
            hw.close()


# -- policies ---------------------------------------------------------------------------------


async def test_weighted_split_between_subsets_per_connection() -> None:
    async with app(answer(b"a")) as va, app(answer(b"b")) as vb:
        cfg = tcp_config(
            [
                tcp_listener(
                    "outbound|6379|redis", {"redis.a": 1, "redis.b": 3}, stat_prefix="redis"
                )
            ],
            [
                cluster("redis", va.port, vb.port),
                cluster("redis.a", va.port),
                cluster("redis.b", vb.port),
            ],
        )
        async with sidecar(cfg) as caller:
            seen: list[bytes] = []
            n = 400
            for _ in range(n):
                r, w = await connect(caller)
                seen.append(await asyncio.wait_for(r.readexactly(1), 5))
                w.close()
            b = seen.count(b"b")
            assert seen.count(b"a") + b == n
            # 3:1 weights: 300 expected, binomial sd ~8.7; 5 sd either way.
            assert 256 <= b <= 344, b
            assert stat(caller, "cluster.redis.a.upstream_cx_total") == n - b
            assert stat(caller, "cluster.redis.b.upstream_cx_total") == b
            assert stat(caller, "tcp.redis.downstream_cx_total") == n


async def test_least_request_balances_open_connections() -> None:
    async with app(answer(b"a")) as va, app(answer(b"b")) as vb:
        cfg = caller_config(va.port, vb.port, lb="least_request")
        async with sidecar(cfg) as caller:
            conns = []
            for _ in range(20):
                r, w = await connect(caller)
                await r.readexactly(1)
                conns.append((r, w))
            per_host = sorted(h.rq_active for h in caller.hosts() if h.cluster == "redis")
            # Two random draws, fewer open connections wins: they stay close to even.
            assert per_host[1] - per_host[0] <= 4, per_host
            for _, w in conns:
                w.close()


async def test_idle_timeout_closes_quiet_connections_only() -> None:
    async with mesh(idle_timeout=0.3) as (caller, _, _a):
        r, w = await connect(caller)
        # Bytes every 0.1 s keep it open past the timeout...
        for _ in range(8):
            w.write(b".")
            assert await r.readexactly(1) == b"."
            await asyncio.sleep(0.1)
        assert stat(caller, "tcp.redis.idle_timeout") == 0
        # ...and silence closes it.
        assert await asyncio.wait_for(r.read(), 5) == b""
        assert stat(caller, "tcp.redis.idle_timeout") == 1
        await wait_until(lambda: stat(caller, "cluster.redis.upstream_cx_active") == 0, "closed")
        w.close()


# -- config swaps ------------------------------------------------------------------------------


async def test_swap_keeps_relayed_connections_and_applies_to_new_ones() -> None:
    async with app(answer(b"a")) as va, app(answer(b"b")) as vb:
        port = free_port()
        first = tcp_config([tcp_listener("t", {"one": 1}, port=port)], [cluster("one", va.port)])
        async with sidecar(first) as sc:
            r, w = await connect(sc, "t")
            assert await r.readexactly(1) == b"a"
            second = tcp_config(
                [tcp_listener("t", {"two": 1}, port=port)], [cluster("two", vb.port)]
            ).model_copy(update={"version": 2})
            sc.apply(second)
            r2, w2 = await connect(sc, "t")
            assert await r2.readexactly(1) == b"b"
            # The first connection still relays to its host.
            assert va.connections == 1
            w.close()
            w2.close()


async def test_listener_changes_between_http_and_tcp_in_place() -> None:
    async with app(answer(b"tcp!")) as a:
        port = free_port()
        http = outbound_config([cluster("one", a.port)], [], port=port)
        async with sidecar(http) as sc:
            assert sc.config.listeners[0].tcp_proxy is None
            tcp = tcp_config(
                [tcp_listener("outbound", {"one": 1}, port=port)], [cluster("one", a.port)]
            )
            sc.apply(tcp.model_copy(update={"version": 2, "admin": sc.config.admin}))

            def rebound() -> bool:
                try:
                    return sc.tcp_proxy("outbound").port == port
                except KeyError:
                    return False

            # (Connecting while the HTTP listener closes could meet CPython 3.11's race of an
            # accept finishing after Server.close(), which leaks that socket.)
            await wait_until(rebound, "the tcp_proxy to take the address over")
            r, w = await asyncio.open_connection(LOCALHOST, port)
            assert await asyncio.wait_for(r.read(4), 5) == b"tcp!"
            w.close()


@pytest.mark.parametrize("count", [30])
async def test_many_short_connections_leave_nothing_behind(count: int) -> None:
    async with mesh() as (caller, callee, _):
        for i in range(count):
            r, w = await connect(caller)
            w.write(b"%d" % i)
            await r.readexactly(len(b"%d" % i))
            w.close()
        await wait_until(
            lambda: stat(caller, "cluster.redis.upstream_cx_destroy") == count, "all closed"
        )
        await wait_until(
            lambda: caller.tcp_proxy("outbound|6379|redis").connections == 0, "sessions to end"
        )
        await wait_until(lambda: callee.tcp_proxy("inbound").connections == 0, "callee sessions")
        host = next(h for h in caller.hosts() if h.cluster == "redis")
        assert host.cx_active == 0
        assert host.rq_active == 0


async def test_stopping_the_sidecar_closes_relayed_connections_after_a_moment() -> None:
    async with app() as a, sidecar(inbound_config(a.port)) as callee:
        caller = Sidecar(caller_config(callee.listener_port("inbound")), token="t")
        await caller.start()
        r, w = await connect(caller)
        w.write(b"hi")
        assert await r.readexactly(2) == b"hi"
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A relayed connection has no end of its own to wait for: it gets TCP_STOP_GRACE.
        await caller.stop()
        assert loop.time() - started < 5
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()


def test_bytes_and_fin_sent_before_the_upstream_connects_on_uvloop() -> None:
    # The sidecar runs on uvloop, which starts reading an accepted connection only after
    # connection_made (so the pause there does not hold): what a client sends at once, FIN
    # included, waits for the upstream and then goes through.
    import uvloop

    async def scenario() -> tuple[bytes, int]:
        async def until_eof(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            data = await r.read()
            w.write(b"got %d" % len(data))
            await w.drain()

        async with mesh(until_eof) as (caller, _, _a):
            r, w = await connect(caller)
            w.write(b"z" * 300_000)
            w.write_eof()
            answer = await asyncio.wait_for(r.read(), 10)
            w.close()
            return answer, stat(caller, "tcp.redis.downstream_cx_rx_bytes_total")

    answer, received = uvloop.run(scenario())
    assert answer == b"got 300000"
    assert received == 300_000
