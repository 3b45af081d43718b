"""The upstream client's upgrades: a 101 hands the connection over as a raw stream (with any
bytes that came with it), anything else is an ordinary response, and either way the
connection never goes back to the pool. Raw upstream servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from meshdev.sidecar.upstream import (
    ConnectionBudget,
    UpgradedResponse,
    UpstreamPool,
    UpstreamReset,
)
from tests.support import WAIT, wait_until

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
UPGRADE = [("upgrade", "websocket"), ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


@contextlib.asynccontextmanager
async def raw_upstream(handler: RawHandler) -> AsyncIterator[int]:
    """A server running `handler` per connection; its handlers are ended with it."""
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


async def test_a_101_hands_over_the_connection_with_what_came_after_its_head() -> None:
    heads: list[bytes] = []

    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(SWITCHED + b"FRAME")
        await reader.read()  # until the client closes

    async with raw_upstream(switch) as port:
        budget = ConnectionBudget()
        pool = UpstreamPool("127.0.0.1", port, budget)
        resp = await pool.upgrade("GET", "/ws", UPGRADE, connect_timeout=WAIT)
        assert isinstance(resp, UpgradedResponse) and resp.status == 101
        tunnel = resp.tunnel
        assert tunnel is not None and not tunnel.closed
        assert tunnel.received == len(b"FRAME")
        assert resp.complete and await resp.read_all(10) == b""
        # The handshake is over; the stream keeps its connection counted in the budget.
        assert (pool.rq_active, pool.cx_active, budget.cx_active, pool.cx_idle) == (0, 1, 1, 0)
        head = heads[0].lower()
        assert b"\r\nupgrade: websocket\r\n" in head and b"\r\nconnection: upgrade\r\n" in head
        tunnel.transport.close()
        await wait_until(lambda: budget.cx_active == 0, "the budget back")
        assert (pool.cx_active, pool.cx_idle, pool.cx_total) == (0, 0, 1)


async def test_a_refused_upgrade_is_an_ordinary_response_and_its_connection_closes() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno")
        await reader.read()

    async with raw_upstream(refuse) as port:
        pool = UpstreamPool("127.0.0.1", port, ConnectionBudget())
        resp = await pool.upgrade("GET", "/ws", UPGRADE, connect_timeout=WAIT)
        assert not isinstance(resp, UpgradedResponse)
        assert resp.status == 403 and await resp.read_all(10) == b"no"
        # Kept alive by the upstream, yet not pooled: an upgrade's connection is its own.
        await wait_until(lambda: pool.cx_active == 0, "the connection closed")
        assert pool.cx_idle == 0


async def test_an_upgrade_never_takes_an_idle_connection() -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"upgrade: websocket" in head.lower():
                writer.write(SWITCHED)
                await reader.read()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

    async with raw_upstream(answer) as port:
        pool = UpstreamPool("127.0.0.1", port, ConnectionBudget())
        plain = await pool.request("GET", "/", [], None, connect_timeout=WAIT)
        assert plain.status == 200 and pool.cx_idle == 1
        resp = await pool.upgrade("GET", "/ws", UPGRADE, connect_timeout=WAIT)
        assert isinstance(resp, UpgradedResponse) and resp.tunnel is not None
        assert (connections, pool.cx_idle, pool.cx_active) == (2, 1, 2)
        resp.tunnel.transport.abort()
        await pool.close()


async def test_a_101_nobody_asked_for_resets_the_request() -> None:
    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SWITCHED + b"junk")
        await reader.read()

    async with raw_upstream(switch) as port:
        pool = UpstreamPool("127.0.0.1", port, ConnectionBudget())
        with pytest.raises(UpstreamReset):
            await pool.request("GET", "/", [], None, connect_timeout=WAIT)
        await wait_until(lambda: pool.cx_active == 0, "the connection closed")
        assert pool.rq_active == 0


async def test_a_101_without_an_upgrade_header_cannot_be_switched() -> None:
    async def switch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        await reader.read()

    async with raw_upstream(switch) as port:
        pool = UpstreamPool("127.0.0.1", port, ConnectionBudget())
        with pytest.raises(UpstreamReset):
            await pool.upgrade("GET", "/ws", UPGRADE, connect_timeout=WAIT)
        await wait_until(lambda: pool.cx_active == 0, "the connection closed")
        assert pool.rq_active == 0


async def test_cancelled_while_waiting_for_the_101_closes_the_connection() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with raw_upstream(silent) as port:
        pool = UpstreamPool("127.0.0.1", port, ConnectionBudget())
        task = asyncio.create_task(pool.upgrade("GET", "/ws", UPGRADE, connect_timeout=WAIT))
        await wait_until(lambda: pool.cx_total == 1, "connected")
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: pool.cx_active == 0, "the connection closed")
        assert (pool.rq_active, pool.cx_idle) == (0, 0)
