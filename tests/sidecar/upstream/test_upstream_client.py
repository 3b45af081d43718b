"""The pooled upstream client and the per-cluster connection budget, against real upstream
servers on loopback (our HTTP/1.1 server, or raw sockets where the upstream misbehaves)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from meshdev.common.sidecar_config import Limits
from meshdev.sidecar.http import HttpServer, Request, ResponseWriter, start_server
from meshdev.sidecar.upstream import (
    HIGH_WATER,
    ConnectFailure,
    ConnectionBudget,
    PendingOverflow,
    ResponseTooLarge,
    UpstreamPool,
    UpstreamReset,
    UpstreamResponse,
)
from meshdev.sidecar.upstream import pool as upstream_mod
from tests.support import WAIT, wait_until

MiB = 1024 * 1024
Handler = Callable[[Request, ResponseWriter], Awaitable[None]]
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def upstream(handler: Handler) -> AsyncIterator[HttpServer]:
    srv = await start_server(handler, "127.0.0.1", 0, Limits())
    try:
        yield srv
    finally:
        await srv.close(grace=1.0)


@contextlib.asynccontextmanager
async def raw_upstream(handler: RawHandler) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[object]] = set()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await handler(reader, writer)
        finally:
            writer.close()
            tasks.discard(task)

    srv = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await srv.wait_closed()


class Echo:
    """Answers with what it got; counts requests and the connections they came on."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, req: Request, writer: ResponseWriter) -> None:
        self.requests.append(req)
        if req.path == "/hold":
            await self.release.wait()
        if req.path.startswith("/big/"):
            size = int(req.path[5:])
            block = b"b" * (64 * 1024)
            await writer.start(200, [("content-length", str(size))])
            for _ in range(size // len(block)):
                await writer.write(block)
            await writer.end()
            return
        chunks = 0
        size = 0
        async for chunk in req.body:
            chunks += 1
            size += len(chunk)
            if req.path == "/count":
                continue
            self.bodies.append(chunk)
        body = f"{req.method} {req.target} {size} {chunks}".encode()
        await writer.start(200, [("x-echo", "1"), ("content-length", str(len(body)))])
        await writer.write(body)
        await writer.end()


async def get(pool: UpstreamPool, target: str = "/", **kw: object) -> tuple[int, bytes]:
    resp = await pool.request("GET", target, [("host", "svc")], None, connect_timeout=WAIT)
    return resp.status, await resp.read_all(1 << 20)


def assert_idle(pool: UpstreamPool, budget: ConnectionBudget, connections: int = 0) -> None:
    assert pool.rq_active == 0
    assert budget.rq_pending_active == 0
    assert pool.cx_active == budget.cx_active == connections


async def test_requests_reuse_one_keep_alive_connection() -> None:
    app = Echo()
    async with upstream(app) as srv:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        for i in range(3):
            resp = await pool.request(
                "GET", f"/r{i}?q=1", [("host", "svc"), ("x-a", "1")], None, connect_timeout=WAIT
            )
            assert resp.status == 200
            assert ("x-echo", "1") in resp.headers
            assert await resp.read_all(1000) == f"GET /r{i}?q=1 0 0".encode()
        assert (pool.cx_total, pool.rq_total) == (1, 3)
        assert_idle(pool, budget, connections=1)
        assert srv.connections == 1
        assert [r.authority for r in app.requests] == ["svc"] * 3
        await pool.close()
        assert_idle(pool, budget, connections=0)


async def test_host_is_added_when_missing_and_framing_is_ours() -> None:
    app = Echo()
    async with upstream(app) as srv:
        pool = UpstreamPool("127.0.0.1", srv.port, ConnectionBudget())
        resp = await pool.request(
            "POST",
            "/p",
            [("transfer-encoding", "chunked"), ("content-length", "99"), ("connection", "close")],
            b"hello",
            connect_timeout=WAIT,
        )
        assert await resp.read_all(100) == b"POST /p 5 1"
        req = app.requests[0]
        assert req.authority == f"127.0.0.1:{srv.port}"
        assert req.body.length == 5
        assert req.keep_alive
        # POST without a body still says so.
        resp = await pool.request("POST", "/e", [], None, connect_timeout=WAIT)
        assert await resp.read_all(100) == b"POST /e 0 0"
        assert app.requests[1].body.length == 0
        assert pool.cx_total == 1
        await pool.close()


async def test_streamed_request_body_chunked_or_with_given_length() -> None:
    app = Echo()

    async def parts() -> AsyncIterator[bytes]:
        for p in (b"ab", b"", b"cde"):
            yield p

    async with upstream(app) as srv:
        pool = UpstreamPool("127.0.0.1", srv.port, ConnectionBudget())
        resp = await pool.request("PUT", "/c", [], parts(), connect_timeout=WAIT)
        assert (await resp.read_all(100)).startswith(b"PUT /c 5 ")
        assert app.requests[0].body.length is None  # chunked
        resp = await pool.request(
            "PUT", "/l", [("content-length", "5")], parts(), connect_timeout=WAIT
        )
        assert (await resp.read_all(100)).startswith(b"PUT /l 5 ")
        assert app.requests[1].body.length == 5
        assert b"".join(app.bodies) == b"abcde" * 2
        assert pool.cx_total == 1
        await pool.close()


async def test_large_upload_is_streamed_with_back_pressure() -> None:
    app = Echo()
    total = 32 * MiB
    produced = 0

    async def generate() -> AsyncIterator[bytes]:
        nonlocal produced
        block = b"u" * (256 * 1024)
        while produced < total:
            produced += len(block)
            yield block

    hold = asyncio.Event()

    async def slow_reader(req: Request, writer: ResponseWriter) -> None:
        await hold.wait()  # reads nothing until released
        await app(req, writer)

    async with upstream(slow_reader) as srv:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        task = asyncio.create_task(
            pool.request("POST", "/count", [], generate(), connect_timeout=WAIT)
        )
        last = -1
        while produced != last:  # wait until the producer stalls
            last = produced
            await asyncio.sleep(0.1)
        assert produced < total // 2
        hold.set()
        resp = await asyncio.wait_for(task, WAIT)
        body = await resp.read_all(100)
        assert body.startswith(b"POST /count %d " % total)
        assert int(body.split()[-1]) > 16  # arrived in many chunks
        assert_idle(pool, budget, connections=1)
        await pool.close()


async def test_large_response_is_streamed_with_bounded_buffering() -> None:
    async with upstream(Echo()) as srv:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        size = 16 * MiB
        resp = await pool.request("GET", f"/big/{size}", [], None, connect_timeout=WAIT)
        assert resp.buffered() is None  # not all here yet
        got = chunks = max_pending = 0
        async for chunk in resp:
            got += len(chunk)
            chunks += 1
            max_pending = max(max_pending, resp.pending_bytes)
            await asyncio.sleep(0)
        assert got == size
        assert chunks > 16
        assert max_pending <= HIGH_WATER + 256 * 1024
        assert resp.complete
        assert_idle(pool, budget, connections=1)
        await pool.close()


async def test_small_response_is_buffered_whole_and_connection_released() -> None:
    async with upstream(Echo()) as srv:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        resp = await pool.request("GET", "/x", [], None, connect_timeout=WAIT)
        # The whole response arrived with its head: the connection is already back.
        assert resp.complete
        assert pool.cx_idle == 1
        assert resp.buffered() == b"GET /x 0 0"
        assert_idle(pool, budget, connections=1)
        await pool.close()


async def test_head_response_has_no_body_and_keeps_the_connection() -> None:
    async with upstream(Echo()) as srv:
        pool = UpstreamPool("127.0.0.1", srv.port, ConnectionBudget())
        resp = await pool.request("HEAD", "/h", [], None, connect_timeout=WAIT)
        assert resp.status == 200
        assert ("content-length", "11") in resp.headers  # len("HEAD /h 0 0")
        assert await resp.read_all(100) == b""
        assert await get(pool, "/after") == (200, b"GET /after 0 0")
        assert pool.cx_total == 1
        await pool.close()


async def test_connect_refused_is_a_connect_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        with pytest.raises(ConnectFailure):
            await get(pool)
    assert pool.cx_connect_fail == 1
    assert pool.cx_total == 0
    assert_idle(pool, budget)


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:  # ENOTCONN: its handshake has not completed
        return False
    return True


async def test_connect_timeout_is_a_connect_failure() -> None:
    # A listener whose accept queue is full drops further SYNs: connecting hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(("127.0.0.1", port))
            fillers.append(f)
        # One handshake done fills the queue (backlog 0); the others' SYNs are dropped.
        await wait_until(lambda: any(map(_connected, fillers)), "a filler in the accept queue")
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        with pytest.raises(ConnectFailure, match="connect timeout"):
            await pool.request("GET", "/", [], None, connect_timeout=0.2)
        assert pool.cx_connect_fail == 1
        assert_idle(pool, budget)
    finally:
        for f in fillers:
            f.close()
        listener.close()


async def test_reset_before_the_head_is_an_upstream_reset() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with raw_upstream(hang_up) as port:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        with pytest.raises(UpstreamReset):
            await get(pool)
        assert_idle(pool, budget)


async def test_malformed_response_is_an_upstream_reset() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
        await reader.read()

    async with raw_upstream(garbage) as port:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        with pytest.raises(UpstreamReset, match="malformed"):
            await get(pool)
        assert_idle(pool, budget)


async def test_reset_mid_body_raises_from_iteration() -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
        await writer.drain()
        await asyncio.sleep(0.05)

    async with raw_upstream(half) as port:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        resp = await pool.request("GET", "/", [], None, connect_timeout=WAIT)
        assert resp.status == 200
        got: list[bytes] = []

        async def drain() -> None:
            async for chunk in resp:
                got.append(chunk)

        with pytest.raises(UpstreamReset):
            await drain()
        assert b"".join(got) == b"only ten.."
        assert not resp.complete
        assert_idle(pool, budget)


async def test_close_delimited_response_ends_with_the_connection() -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nX-Old: 1\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"part two")
        await writer.drain()

    async with raw_upstream(old_style) as port:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        resp = await pool.request("GET", "/", [], None, connect_timeout=WAIT)
        assert await resp.read_all(100) == b"part one, part two"
        assert resp.complete
        assert_idle(pool, budget)


async def test_informational_responses_are_skipped() -> None:
    async def with_continue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"
        )
        await reader.read()

    async with raw_upstream(with_continue) as port:
        pool = UpstreamPool("127.0.0.1", port, ConnectionBudget())
        resp = await pool.request("POST", "/", [], b"x", connect_timeout=WAIT)
        assert (resp.status, resp.headers) == (201, [("content-length", "2"), ("x-final", "yes")])
        assert await resp.read_all(10) == b"ok"
        await pool.close()


async def test_stale_pooled_connection_is_replaced_transparently() -> None:
    served: list[int] = []

    async def one_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Keep-alive response, then the upstream closes the idle connection (its timeout).
        await reader.readuntil(b"\r\n\r\n")
        served.append(writer.get_extra_info("peername")[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_upstream(one_per_connection) as port:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        assert await get(pool) == (200, b"ok")
        # Wait until the close reached the pool, then reuse: no reset surfaces.
        await wait_until(lambda: pool.cx_active == 0, "the close to reach the pool")
        assert await get(pool) == (200, b"ok")
        assert pool.cx_total == 2
        assert len(set(served)) == 2
        await pool.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_close_of_a_long_idle_connection_is_seen_before_reuse(
    monkeypatch: pytest.MonkeyPatch, loop_kind: str
) -> None:
    """The upstream's close arrived while the loop was busy: it must not cost a reset."""
    monkeypatch.setattr(upstream_mod, "STALE_AFTER", 0.05)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    close_first = threading.Event()

    def serve() -> None:
        # A blocking upstream in a thread, so it acts while the event loop is stuck.
        for n in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(WAIT)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if n == 0:
                    close_first.wait(WAIT)  # then its keep-alive timeout closes it
                else:
                    with contextlib.suppress(OSError):
                        conn.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    async def scenario() -> tuple[int, int]:
        pool = UpstreamPool("127.0.0.1", port, ConnectionBudget())
        assert await get(pool) == (200, b"ok")
        close_first.set()
        time.sleep(0.2)  # the loop is busy; the close waits unprocessed in the socket
        assert pool.cx_idle == 1
        status = (await get(pool))[0]
        await pool.close()
        return status, pool.cx_total

    run = uvloop.run if loop_kind == "uvloop" else asyncio.run
    try:
        assert run(scenario()) == (200, 2)
    finally:
        thread.join(WAIT)
        listener.close()


async def test_cancel_while_awaiting_the_head_closes_and_restores_counts() -> None:
    app = Echo()
    app.release.clear()
    async with upstream(app) as srv:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(get(pool, "/hold"), 0.2)
        assert_idle(pool, budget, connections=0)
        # The upstream sees the connection go away.
        await wait_until(lambda: srv.connections == 0, "the upstream to see the close")
        app.release.set()
        assert await get(pool, "/next") == (200, b"GET /next 0 0")
        await pool.close()


async def test_cancel_while_streaming_the_body_closes_and_restores_counts() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst part")
        await reader.read()

    async with raw_upstream(stall) as port:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        resp = await pool.request("GET", "/", [], None, connect_timeout=WAIT)

        async def read_all(r: UpstreamResponse) -> None:
            async for _ in r:
                pass

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read_all(resp), 0.2)
        assert_idle(pool, budget, connections=0)
        await pool.close()


async def test_caller_cancelled_elsewhere_closes_the_response_itself() -> None:
    async with upstream(Echo()) as srv:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        resp = await pool.request("GET", f"/big/{64 * MiB}", [], None, connect_timeout=WAIT)

        async def relay_slowly(r: UpstreamResponse) -> None:
            try:
                async for _ in r:
                    await asyncio.sleep(0.01)  # e.g. a slow downstream client
            finally:
                r.close()

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(relay_slowly(resp), 0.2)
        assert_idle(pool, budget, connections=0)
        await pool.close()


async def test_closing_an_unfinished_response_discards_its_connection() -> None:
    async with upstream(Echo()) as srv:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        resp = await pool.request("GET", f"/big/{8 * MiB}", [], None, connect_timeout=WAIT)
        with pytest.raises(ResponseTooLarge):
            await resp.read_all(1000)
        assert_idle(pool, budget, connections=0)
        resp.close()  # idempotent
        resp = await pool.request("GET", "/small", [], None, connect_timeout=WAIT)
        resp.close()  # complete already: the connection stays pooled
        assert_idle(pool, budget, connections=1)
        assert pool.cx_total == 2
        await pool.close()


async def test_budget_makes_requests_pending_then_overflow() -> None:
    app = Echo()
    app.release.clear()
    async with upstream(app) as srv:
        budget = ConnectionBudget(max_connections=1, max_pending_requests=1)
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        first = asyncio.create_task(get(pool, "/hold"))
        await wait_until(lambda: len(app.requests) == 1, "the first request upstream")
        second = asyncio.create_task(get(pool, "/second"))
        await wait_until(lambda: budget.rq_pending_active == 1, "a pending request")
        assert budget.cx_open and budget.rq_pending_open
        with pytest.raises(PendingOverflow):
            await get(pool, "/third")
        assert (budget.cx_overflow, budget.rq_pending_overflow) == (2, 1)
        app.release.set()
        assert await first == (200, b"GET /hold 0 0")
        # The pending request got the released connection; no second one was opened.
        assert await second == (200, b"GET /second 0 0")
        assert pool.cx_total == 1
        assert budget.rq_pending_total == 1
        assert_idle(pool, budget, connections=1)
        await pool.close()


async def test_cancelled_pending_request_leaves_no_trace() -> None:
    app = Echo()
    app.release.clear()
    async with upstream(app) as srv:
        budget = ConnectionBudget(max_connections=1, max_pending_requests=5)
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        first = asyncio.create_task(get(pool, "/hold"))
        await wait_until(lambda: len(app.requests) == 1, "the first request upstream")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(get(pool, "/pending"), 0.1)
        assert budget.rq_pending_active == 0
        assert pool.rq_active == 1
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert_idle(pool, budget, connections=0)
        await pool.close()


async def test_pending_request_connects_when_the_budget_frees_up() -> None:
    app_a, app_b = Echo(), Echo()
    app_a.release.clear()
    app_b.release.clear()
    async with upstream(app_a) as a_srv, upstream(app_b) as b_srv:
        budget = ConnectionBudget(max_connections=2, max_pending_requests=5)
        a = UpstreamPool("127.0.0.1", a_srv.port, budget)
        b = UpstreamPool("127.0.0.1", b_srv.port, budget)
        held_a = asyncio.create_task(get(a, "/hold"))
        held_b = asyncio.create_task(get(b, "/hold"))
        await wait_until(
            lambda: len(app_a.requests) == len(app_b.requests) == 1, "a request held at each"
        )
        # b's only connection is busy and the budget is spent: b's next request waits.
        quick = asyncio.create_task(get(b, "/quick"))
        await wait_until(lambda: budget.rq_pending_active == 1, "a pending request")
        # a's answer frees a's connection; rather than idling it, a gives the slot to b.
        app_a.release.set()
        assert (await held_a)[0] == 200
        assert await quick == (200, b"GET /quick 0 0")
        assert not held_b.done()
        assert (a.cx_active, b.cx_active, b.cx_total) == (0, 2, 2)
        app_b.release.set()
        assert (await held_b)[0] == 200
        assert budget.cx_active == 2
        await a.close()
        await b.close()
        assert budget.cx_active == 0


async def test_endpoint_without_connections_may_exceed_the_budget() -> None:
    # Envoy: an endpoint with no connection at all may open one over the limit, so its
    # pending requests cannot starve behind other endpoints' connections.
    async with upstream(Echo()) as a_srv, upstream(Echo()) as b_srv:
        budget = ConnectionBudget(max_connections=1, max_pending_requests=1)
        a = UpstreamPool("127.0.0.1", a_srv.port, budget)
        b = UpstreamPool("127.0.0.1", b_srv.port, budget)
        assert (await get(a))[0] == 200
        assert (await get(b))[0] == 200
        assert budget.cx_overflow == 1
        # When b's response is done, the budget is over its limit: the connection goes back.
        assert budget.cx_active == 1
        assert (a.cx_active, b.cx_active) == (1, 0)
        await a.close()


async def test_budget_limits_update_in_place_and_wake_pending_requests() -> None:
    app = Echo()
    app.release.clear()
    async with upstream(app) as srv:
        budget = ConnectionBudget(max_connections=1, max_pending_requests=5)
        pool = UpstreamPool("127.0.0.1", srv.port, budget)
        held = [asyncio.create_task(get(pool, "/hold"))]
        await wait_until(lambda: len(app.requests) == 1, "the first request upstream")
        held.append(asyncio.create_task(get(pool, "/hold")))
        await wait_until(lambda: budget.rq_pending_active == 1, "a pending request")
        budget.update(max_connections=4, max_pending_requests=5)
        await wait_until(lambda: len(app.requests) == 2, "the pending request upstream")
        assert budget.rq_pending_active == 0
        assert pool.cx_active == budget.cx_active == 2
        app.release.set()
        for t in held:
            assert (await t)[0] == 200
        # Lowering the limit closes connections as they are released.
        budget.update(max_connections=1, max_pending_requests=5)
        assert (await get(pool, "/x"))[0] == 200
        assert budget.cx_active <= 2
        await pool.close()
        assert budget.cx_active == 0


async def test_proxying_a_large_upload_end_to_end() -> None:
    """Client -> our server -> pool -> upstream, 16 MiB each way, never held whole."""
    app = Echo()
    async with upstream(app) as up:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", up.port, budget)
        seen_pending: list[int] = []

        async def proxy(req: Request, writer: ResponseWriter) -> None:
            length = req.header("content-length")
            headers = [("content-length", length)] if length else []
            resp = await pool.request(
                req.method, req.origin_form, headers, req.body, connect_timeout=WAIT
            )
            await writer.start(resp.status, resp.headers)
            async for chunk in resp:
                seen_pending.append(resp.pending_bytes)
                await writer.write(chunk)
            await writer.end()

        async with upstream(proxy) as px:
            reader, w = await asyncio.open_connection("127.0.0.1", px.port)
            size = 16 * MiB
            w.write(b"POST /count HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"p" * (1 << 20)
            for _ in range(size // len(block)):
                w.write(block)
                await w.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"HTTP/1.1 200 ")
            w.write(b"GET /big/%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
            got = 0
            async with asyncio.timeout(WAIT * 2):
                while got < size:
                    data = await reader.read(1 << 20)
                    assert data
                    got += len(data)
            w.close()
        assert app.requests[0].body.length == size
        assert max(seen_pending) <= HIGH_WATER + 256 * 1024
        await pool.close()


def test_pool_under_uvloop() -> None:
    async def scenario() -> tuple[int, int, list[int]]:
        async with upstream(Echo()) as srv:
            budget = ConnectionBudget(max_connections=4, max_pending_requests=100)
            pool = UpstreamPool("127.0.0.1", srv.port, budget)
            results = await asyncio.gather(*(get(pool, f"/{i}") for i in range(40)))
            await pool.close()
            return pool.cx_total, budget.cx_active, sorted({s for s, _ in results})

    cx_total, cx_active, statuses = uvloop.run(scenario())
    assert statuses == [200]
    assert cx_total <= 4
    assert cx_active == 0
