"""WebSocket through real sidecars, with Envoy's semantics as Istio configures it: a real
aiohttp WebSocket app, aiohttp's WebSocket client, one sidecar (outbound) or two (outbound ->
inbound) on loopback.

The upgrade request is an ordinary request until its 101 (routes, rate limit, breakers and
retries apply); after it the route timeout no longer runs, the stream idle timeout does, and
the stats count it on the listener and per route.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import uvloop
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType, WSServerHandshakeError

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.http import RawEnd
from meshdev.sidecar.http.connection import ClientConnection
from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import (
    histogram_count,
    listener_url,
    log_lines,
    sidecar,
    stat,
)
from tests.sidecar.proxy.wsapp import WsApp, inbound_to, outbound_to, ws_app
from tests.support import LOCALHOST, WAIT, wait_until

MiB = 1024 * 1024
OUT = "http.outbound."
ROUTE = "vhost.backend.route.main."


@asynccontextmanager
async def connect(
    session: ClientSession, sc: Sidecar, path: str = "/ws", listener: str = "outbound"
) -> AsyncIterator[ClientWebSocketResponse]:
    async with session.ws_connect(
        listener_url(sc, listener) + path, headers={"Host": "backend"}, max_msg_size=0
    ) as ws:
        yield ws


async def echo(ws: ClientWebSocketResponse, data: str | bytes) -> str | bytes:
    if isinstance(data, str):
        await ws.send_str(data)
    else:
        await ws.send_bytes(data)
    msg = await asyncio.wait_for(ws.receive(), WAIT)
    assert msg.type in (WSMsgType.TEXT, WSMsgType.BINARY), msg
    got: str | bytes = msg.data
    return got


@asynccontextmanager
async def two_hops(
    app: WsApp,
    *,
    route: dict[str, object] | None = None,
    access_log: Path | None = None,
) -> AsyncIterator[tuple[Sidecar, Sidecar]]:
    """The caller's outbound sidecar -> the callee's inbound sidecar -> the app."""
    inner_cfg = inbound_to(app.port)
    inner_port = next(lst.port for lst in inner_cfg.listeners if lst.name == "inbound")
    outer_cfg = outbound_to(
        inner_port, route=route, access_log=str(access_log) if access_log else "off"
    )
    async with sidecar(inner_cfg) as inner, sidecar(outer_cfg) as outer:
        yield outer, inner


async def test_text_and_binary_echo_through_one_sidecar_and_its_stats() -> None:
    async with ws_app() as app, sidecar(outbound_to(app.port)) as sc, ClientSession() as s:
        async with connect(s, sc) as ws:
            assert await echo(ws, "hello") == "hello"
            assert await echo(ws, b"\x00\xff" * 100) == b"\x00\xff" * 100
            assert stat(sc, OUT + "downstream_cx_upgrades_total") == 1
            assert stat(sc, OUT + "downstream_cx_upgrades_active") == 1
            assert stat(sc, ROUTE + "downstream_cx_upgrades_total") == 1
            assert stat(sc, ROUTE + "downstream_cx_upgrades_active") == 1
            # The stream holds its own upstream connection, and its request stays active.
            assert stat(sc, "cluster.backend.upstream_cx_active") == 1
            assert stat(sc, OUT + "downstream_rq_active") == 1
        await wait_until(lambda: app.ended == ["client closed"], "the app saw the close")
        await ended(sc)
        assert stat(sc, ROUTE + "downstream_cx_upgrades_active") == 0
        assert stat(sc, OUT + "downstream_cx_upgrades_total") == 1
        assert stat(sc, OUT + "downstream_rq_101") == 1
        assert stat(sc, "cluster.backend.upstream_rq_101") == 1
        assert stat(sc, "cluster.backend.upstream_cx_total") == 1
        await wait_until(
            lambda: stat(sc, "cluster.backend.upstream_cx_active") == 0, "the upstream closed"
        )
        # Timed to the 101: a handshake, not the stream's life.
        assert histogram_count(sc, ROUTE + "upstream_rq_time") == 1
        # The upgrade headers reached the app; the sidecar's own headers too.
        seen = app.seen_headers[0]
        assert seen["upgrade"].lower() == "websocket"
        assert "upgrade" in seen["connection"].lower()
        assert "sec-websocket-key" in seen and "x-request-id" in seen


async def test_two_hops_carry_text_binary_and_a_large_message(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    big = bytes(range(256)) * (8 * MiB // 256)
    async with ws_app() as app, two_hops(app, access_log=log) as (outer, inner):
        async with ClientSession() as s, connect(s, outer) as ws:
            assert await echo(ws, "über") == "über"
            assert await echo(ws, b"\x01\x02\x03") == b"\x01\x02\x03"
            assert await echo(ws, big) == big
            for sc, listener in ((outer, "http.outbound."), (inner, "http.inbound.")):
                assert stat(sc, listener + "downstream_cx_upgrades_total") == 1
                assert stat(sc, listener + "downstream_cx_upgrades_active") == 1
            assert stat(inner, "vhost.inbound.route.inbound.downstream_cx_upgrades_active") == 1
            assert stat(outer, "cluster.backend.upstream_cx_active") == 1
            assert stat(inner, "cluster.inbound|8080.upstream_cx_active") == 1
        await ended(outer)
        await ended(inner, "http.inbound.")
    # Logged once the stream ended (the sidecars have stopped and flushed): a 101 with the
    # bytes sent to the client over the whole stream.
    [line] = log_lines(log)
    assert line[4] == "101" and line[5] == "-"
    assert int(line[6]) > len(big)
    assert line[9] == "main"


def test_two_hops_under_uvloop() -> None:
    big = b"u" * (4 * MiB)

    async def scenario() -> None:
        async with ws_app() as app, two_hops(app) as (outer, inner):
            async with ClientSession() as s, connect(s, outer) as ws:
                assert await echo(ws, "uv") == "uv"
                assert await echo(ws, big) == big
            await ended(outer)
            await ended(inner, "http.inbound.")

    uvloop.run(scenario())


async def test_back_pressure_holds_a_fast_sender_while_the_app_reads_nothing() -> None:
    count, size = 320, 64 * 1024  # 20 MiB in all, far more than the buffers on the way
    payload = b"m" * size
    async with (
        ws_app() as app,
        sidecar(outbound_to(app.port)) as sc,
        ClientSession() as s,
        connect(s, sc, "/ws/stall") as ws,
    ):
        sent = 0
        echoed = 0

        async def send_all() -> None:
            nonlocal sent
            for _ in range(count):
                await ws.send_bytes(payload)
                sent += 1

        async def receive_all() -> None:
            nonlocal echoed
            while echoed < count * size:
                msg = await ws.receive()
                assert msg.type == WSMsgType.BINARY, msg
                echoed += len(msg.data)

        sender = asyncio.create_task(send_all())
        receiver = asyncio.create_task(receive_all())
        # The sender stalls: nothing is read at the app, and the sidecar reads no faster.
        last = -1
        while sent != last:
            last = sent
            await asyncio.sleep(0.3)
        assert sent < count
        # What the sidecar itself holds stays near its transports' high-water marks, while
        # the sender has pushed several MiB into the pipe.
        assert buffered_in(sc) < 1 * MiB
        assert sent * size > 2 * MiB
        app.release()
        await asyncio.wait_for(asyncio.gather(sender, receiver), WAIT * 3)
        assert echoed == count * size


async def ended(sc: Sidecar, listener: str = OUT) -> None:
    """Wait until the sidecar has no upgraded stream left."""
    await wait_until(
        lambda: stat(sc, listener + "downstream_cx_upgrades_active") == 0,
        f"the end of {sc.config.node}'s streams",
    )


def buffered_in(sc: Sidecar) -> int:
    """Bytes waiting in the sidecar's own write buffers on its upgraded streams."""
    total = 0
    for server, _ in sc._servers.values():
        for conn in server._conns:
            if not isinstance(conn, ClientConnection):
                continue  # an HTTP/2 connection: no upgrades there
            end = conn._transport.get_protocol()
            if isinstance(end, RawEnd):
                total += end.transport.get_write_buffer_size()
                if end._peer is not None:
                    total += end._peer.transport.get_write_buffer_size()
    return total


async def test_the_route_timeout_covers_the_handshake_only() -> None:
    async with ws_app() as app:
        cfg = outbound_to(app.port, route={"timeout": 0.2})
        async with sidecar(cfg) as sc, ClientSession() as s, connect(s, sc) as ws:
            started = time.monotonic()
            assert await echo(ws, "first") == "first"
            await asyncio.sleep(0.5)
            assert await echo(ws, "after the route timeout") == "after the route timeout"
            assert time.monotonic() - started > 0.4
            assert stat(sc, "cluster.backend.upstream_rq_timeout") == 0
            assert stat(sc, ROUTE + "upstream_rq_timeout") == 0


async def test_the_idle_timeout_closes_both_sides(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with ws_app() as app:
        cfg = outbound_to(app.port, cluster={"stream_idle_timeout": 0.3}, access_log=str(log))
        async with sidecar(cfg) as sc, ClientSession() as s:
            async with connect(s, sc) as ws:
                # Traffic keeps it open past the idle timeout...
                for _ in range(4):
                    await asyncio.sleep(0.15)
                    assert await echo(ws, "tick") == "tick"
                # ...silence closes it.
                quiet = time.monotonic()
                msg = await asyncio.wait_for(ws.receive(), WAIT)
                waited = time.monotonic() - quiet
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), msg
            assert 0.25 < waited < 3.0
            await wait_until(lambda: app.ended == ["dropped"], "the app's side closed too")
            assert stat(sc, OUT + "downstream_rq_idle_timeout") == 1
            assert stat(sc, OUT + "downstream_cx_upgrades_active") == 0
    [line] = log_lines(log)
    assert (line[4], line[5]) == ("101", "SI")


async def test_a_refused_handshake_is_relayed_as_an_ordinary_response() -> None:
    async with ws_app() as app, sidecar(outbound_to(app.port)) as sc:
        reader, writer = await asyncio.open_connection(LOCALHOST, sc.listener_port("outbound"))
        writer.write(
            b"GET /deny HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = await asyncio.wait_for(reader.read(), WAIT)  # to the close
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 ")
        # As Envoy does: an upgrade that got no 101 closes the connection after its answer.
        assert b"connection: close" in head.lower()
        assert body == b"no sockets for you"
        assert stat(sc, OUT + "downstream_rq_403") == 1
        assert stat(sc, OUT + "downstream_cx_upgrades_total") == 1
        assert stat(sc, OUT + "downstream_cx_upgrades_active") == 0
        # The upstream connection of a refused upgrade is not pooled.
        await wait_until(
            lambda: stat(sc, "cluster.backend.upstream_cx_active") == 0, "its connection closed"
        )


async def test_a_rate_limited_upgrade_is_refused_and_counted() -> None:
    limit = {"rate_limit": {"requests_per_second": 0.001, "burst": 1}}
    async with ws_app() as app, sidecar(outbound_to(app.port, route=limit)) as sc:
        async with ClientSession() as s, connect(s, sc) as ws:
            with pytest.raises(WSServerHandshakeError) as refused:
                await s.ws_connect(listener_url(sc) + "/ws", headers={"Host": "backend"})
            assert refused.value.status == 429
            assert refused.value.headers is not None
            assert refused.value.headers.get("x-envoy-ratelimited") == "true"
            assert await echo(ws, "still here") == "still here"
            assert stat(sc, OUT + "downstream_cx_upgrades_total") == 2
            assert stat(sc, OUT + "downstream_cx_upgrades_active") == 1
            assert stat(sc, ROUTE + "downstream_cx_upgrades_total") == 2
            assert stat(sc, ROUTE + "downstream_cx_upgrades_active") == 1
            assert stat(sc, ROUTE + "downstream_rq_429") == 1
            assert stat(sc, ROUTE + "http_local_rate_limit.rate_limited") == 1
        assert app.accepted == 1


async def test_an_open_stream_holds_its_request_slot_of_the_breaker() -> None:
    breaker = {"circuit_breaker": {"max_requests": 1}}
    async with ws_app() as app, sidecar(outbound_to(app.port, cluster=breaker)) as sc:
        async with ClientSession() as s, connect(s, sc) as ws:
            assert await echo(ws, "one") == "one"
            with pytest.raises(WSServerHandshakeError) as refused:
                await s.ws_connect(listener_url(sc) + "/ws", headers={"Host": "backend"})
            assert refused.value.status == 503
            assert refused.value.headers is not None
            assert refused.value.headers.get("x-envoy-overloaded") == "true"
        # Once the stream ended, its slot is free again.
        await ended(sc)
        async with ClientSession() as s, connect(s, sc) as ws:
            assert await echo(ws, "two") == "two"


async def test_a_failed_handshake_is_retried_before_any_101() -> None:
    retries = {"retries": {"attempts": 1, "retry_on": ["5xx"]}}
    async with ws_app() as app, sidecar(outbound_to(app.port, route=retries)) as sc:
        async with ClientSession() as s, connect(s, sc, "/flaky") as ws:
            assert await echo(ws, "second try") == "second try"
        assert stat(sc, "cluster.backend.upstream_rq_retry") == 1
        assert stat(sc, "cluster.backend.retry.upstream_rq_503") == 1


async def test_the_app_closing_first_ends_the_stream_after_its_last_frames() -> None:
    async with ws_app() as app, sidecar(outbound_to(app.port)) as sc:
        async with ClientSession() as s, connect(s, sc, "/ws/bye") as ws:
            msg = await asyncio.wait_for(ws.receive(), WAIT)
            assert (msg.type, msg.data) == (WSMsgType.TEXT, "bye")
            msg = await asyncio.wait_for(ws.receive(), WAIT)
            assert msg.type == WSMsgType.CLOSE
        await ended(sc)
        assert app.ended == ["app closed"]


async def test_a_frame_right_after_either_head_crosses(tmp_path: Path) -> None:
    """Bytes the client sends with its upgrade request, and bytes the upstream sends with its
    101, arrive after the switch; a side that closes still delivers what it sent."""
    got_early = asyncio.Event()
    seen: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\nHELLO"
        )
        early = await reader.readexactly(5)
        seen.append(early)
        got_early.set()
        writer.write(b"x" * MiB)  # and close at once: the sidecar must deliver all of it
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with sidecar(outbound_to(port)) as sc:
            reader, writer = await asyncio.open_connection(LOCALHOST, sc.listener_port("outbound"))
            writer.write(
                b"GET /raw HTTP/1.1\r\nHost: backend\r\nUpgrade: WebSocket\r\n"
                b"Connection: keep-alive, Upgrade\r\n\r\nEARLY"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
            assert b"\r\nupgrade: websocket\r\n" in head.lower()
            assert b"\r\nconnection: upgrade\r\n" in head.lower()
            assert await asyncio.wait_for(reader.readexactly(5), WAIT) == b"HELLO"
            await asyncio.wait_for(got_early.wait(), WAIT)
            rest = await asyncio.wait_for(reader.read(), WAIT)  # to the close
            assert rest == b"x" * MiB
            writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert seen[1] == b"EARLY"
    upstream_head = seen[0].lower()
    assert b"\r\nupgrade: websocket\r\n" in upstream_head
    assert b"\r\nconnection: upgrade\r\n" in upstream_head


async def test_h2c_is_not_upgraded_and_the_connection_goes_on() -> None:
    """Istio configures websocket only: an h2c upgrade is an ordinary request, its upgrade
    headers stripped, its body read, and the next request on the connection is served."""

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            lines = head.decode("latin-1").lower().split("\r\n")
            length = next((int(x[15:]) for x in lines if x.startswith("content-length:")), 0)
            body = await reader.readexactly(length)
            if "transfer-encoding: chunked" in lines:
                while size := int(await reader.readuntil(b"\r\n"), 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            text = f"{lines[0]}|{len(body)}|{'upgrade:' in head.decode().lower()}"
            text += f"|{'http2-settings' in head.decode().lower()}"
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(text)}\r\n\r\n{text}".encode())
        writer.close()

    server = await asyncio.start_server(upstream, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    h2c = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n"
    try:
        async with sidecar(outbound_to(port)) as sc:
            reader, writer = await asyncio.open_connection(LOCALHOST, sc.listener_port("outbound"))
            writer.write(
                b"GET /a HTTP/1.1\r\nHost: backend\r\n" + h2c + b"\r\n"
                b"POST /b HTTP/1.1\r\nHost: backend\r\n" + h2c + b"Content-Length: 5\r\n\r\nhello"
                b"POST /c HTTP/1.1\r\nHost: backend\r\n" + h2c + b"Transfer-Encoding: chunked\r\n"
                b"\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                b"GET /d HTTP/1.1\r\nHost: backend\r\n\r\n"
            )
            answers = []
            for _ in range(4):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                assert head.startswith(b"HTTP/1.1 200 ")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answers.append((await reader.readexactly(length)).decode())
            writer.close()
            assert stat(sc, OUT + "downstream_cx_upgrades_total") == 0
            # A route's upgrade stats appear with its first upgrade request, not before.
            assert not [c.name for c in sc.stats.counters() if "route.main.downstream_cx" in c.name]
    finally:
        server.close()
        await server.wait_closed()
    assert answers == [
        "get /a http/1.1|0|False|False",
        "post /b http/1.1|5|False|False",
        "post /c http/1.1|5|False|False",
        "get /d http/1.1|0|False|False",
    ]


async def test_a_config_swap_leaves_an_open_stream_alone() -> None:
    async with ws_app() as app, sidecar(outbound_to(app.port)) as sc, ClientSession() as s:
        async with connect(s, sc) as ws:
            assert await echo(ws, "before") == "before"
            new = SidecarConfig.model_validate(
                {**sc.config.model_dump(), "version": 2, "virtual_hosts": [], "clusters": []}
            )
            sc.apply(new)
            assert await echo(ws, "after") == "after"
        await ended(sc)
