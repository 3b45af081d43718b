"""Inbound mutual TLS: STRICT takes TLS only, PERMISSIVE both (told by the first bytes),
DISABLE plaintext only; the decrypted stream runs the same HTTP/1.1 + h2c engine, and the
peer's verified identity is readable on the transport that engine sees."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded

from meshdev.common.sidecar_config import Limits
from meshdev.sidecar.http import Request, ResponseWriter, start_server
from meshdev.sidecar.http2 import Http2StatSet, enable_h2c
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.tls.identity import WorkloadIdentity
from meshdev.sidecar.tls.inbound import InboundTls
from meshdev.sidecar.tls.peer import peer_principal
from meshdev.sidecar.tls.stats import ListenerTlsStats
from meshdev.testing.certs import TestCA, spiffe
from tests.sidecar.helpers import Upstream, sidecar, stat, upstreams
from tests.sidecar.tls.meshtls import (
    CALLEE,
    CALLER,
    callee_config,
    client_context,
    install,
    port_of,
    read_response,
    tls_request,
)
from tests.support import LOCALHOST, WAIT, wait_until

GET = b"GET /hello HTTP/1.1\r\nhost: callee\r\nconnection: close\r\n\r\n"


def ssl_stat(port: int, name: str) -> str:
    return f"listener.{LOCALHOST}_{port}.{name}"


async def plaintext_answer(port: int, request: bytes = GET) -> bytes:
    """What a plaintext HTTP client gets: the answer, or b"" when the connection is closed
    (or reset) without one."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_strict_serves_mesh_clients_over_tls_and_refuses_plaintext() -> None:
    ca = TestCA.create()
    async with upstreams("app") as (app,), sidecar(callee_config(app, mtls="STRICT")) as callee:
        install(callee, ca.issue(CALLEE))
        port = port_of(callee)
        mesh_client = client_context(ca.issue(CALLER), ca)
        answer = await tls_request(port, mesh_client, GET)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert app.seen_targets == ["/hello"]
        assert await plaintext_answer(port) == b""
        assert app.hits == 1
        # Refused as Envoy counts it: a failed TLS connection, and no plaintext filter chain.
        await wait_until(
            lambda: stat(callee, ssl_stat(port, "no_filter_chain_match")) == 1, "count"
        )
        assert stat(callee, ssl_stat(port, "ssl.connection_error")) == 1
        assert stat(callee, ssl_stat(port, "ssl.handshake")) == 1
        # And it goes on serving.
        assert (await tls_request(port, mesh_client, GET)).startswith(b"HTTP/1.1 200")
        assert stat(callee, ssl_stat(port, "ssl.handshake")) == 2


async def test_permissive_serves_tls_and_plaintext_on_one_port() -> None:
    ca = TestCA.create()
    async with upstreams("app") as (app,), sidecar(callee_config(app, mtls="PERMISSIVE")) as callee:
        install(callee, ca.issue(CALLEE))
        port = port_of(callee)
        assert (await plaintext_answer(port)).startswith(b"HTTP/1.1 200")
        tls = await tls_request(port, client_context(ca.issue(CALLER), ca), GET)
        assert tls.startswith(b"HTTP/1.1 200")
        assert app.hits == 2
        assert stat(callee, ssl_stat(port, "ssl.handshake")) == 1
        assert stat(callee, ssl_stat(port, "ssl.connection_error")) == 0
        # Plaintext that is not HTTP still reaches the HTTP engine, which refuses it.
        assert (await plaintext_answer(port, b"\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")


async def test_disable_serves_plaintext_and_counts_no_tls() -> None:
    ca = TestCA.create()
    async with upstreams("app") as (app,), sidecar(callee_config(app, mtls="DISABLE")) as callee:
        install(callee, ca.issue(CALLEE))
        port = port_of(callee)
        assert (await plaintext_answer(port)).startswith(b"HTTP/1.1 200")
        # A ClientHello is no HTTP request: the engine answers 400, the TLS client fails.
        try:
            answer = await tls_request(port, client_context(ca.issue(CALLER), ca), GET)
        except (ssl.SSLError, OSError):
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
        # The listener counts its two connections, and no TLS (`ssl.*`, no_filter_chain_match).
        counters = {c.name: c.value for c in callee.stats.counters()}
        listener = {k: v for k, v in counters.items() if k.startswith("listener.")}
        assert not [k for k in listener if ".ssl." in k or k.endswith("no_filter_chain_match")]
        assert sum(v for k, v in listener.items() if k.endswith(".downstream_cx_total")) == 2


async def test_a_swap_to_strict_applies_to_new_connections_on_the_same_socket() -> None:
    ca = TestCA.create()
    async with upstreams("app") as (app,):
        first = callee_config(app, mtls="DISABLE")
        port = first.listeners[0].port
        async with sidecar(first) as callee:
            install(callee, ca.issue(CALLEE))
            # A keep-alive plaintext connection made before the swap...
            reader, writer = await asyncio.open_connection(LOCALHOST, port)
            keep = b"GET /kept HTTP/1.1\r\nhost: callee\r\n\r\n"
            writer.write(keep)
            head, _ = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200")
            callee.apply(callee_config(app, mtls="STRICT", port=port, version=2))
            assert port_of(callee) == port
            # ...new plaintext is refused, TLS taken...
            assert await plaintext_answer(port) == b""
            tls = await tls_request(port, client_context(ca.issue(CALLER), ca), GET)
            assert tls.startswith(b"HTTP/1.1 200")
            # ...and the connection already open goes on as it began.
            writer.write(keep)
            head, _ = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200")
            writer.close()
            assert app.seen_targets == ["/kept", "/hello", "/kept"]


@asynccontextmanager
async def identity_server(ca: TestCA) -> AsyncIterator[tuple[int, Store]]:
    """The HTTP engine (HTTP/1.1 and h2c) behind an inbound TLS front, answering each request
    with the principal `peer_principal` reads on the transport the engine handed over."""
    identity = WorkloadIdentity()
    identity.install(ca.issue(CALLEE), CALLEE)
    store = Store()

    async def handler(request: Request, writer: ResponseWriter) -> None:
        owner = getattr(writer, "_h2", None) or writer._conn
        principal = peer_principal(owner._transport) or "-"
        body = f"{request.version} {principal}".encode()
        await writer.start(200, [("content-length", str(len(body)))])
        await writer.write(body)
        await writer.end()

    front = InboundTls(
        identity,
        lambda: ListenerTlsStats(store, LOCALHOST, 1),
        lambda: "PERMISSIVE",
        lambda: server,
    )
    server = await start_server(handler, LOCALHOST, 0, Limits(), front.protocol)
    enable_h2c(server, lambda: Http2StatSet(store, "test"))
    try:
        yield server.port, store
    finally:
        front.close()
        await server.close(1.0)


async def test_the_http_engine_sees_the_peers_identity_on_http1_and_plain_has_none() -> None:
    ca = TestCA.create()
    async with identity_server(ca) as (port, _):
        answer = await tls_request(port, client_context(ca.issue(CALLER), ca), GET)
        assert answer.endswith(b"1.1 cluster.local/ns/test/sa/caller"), answer
        other = await tls_request(port, client_context(ca.issue(spiffe("other")), ca), GET)
        assert other.endswith(b"1.1 cluster.local/ns/test/sa/other"), other
        assert (await plaintext_answer(port)).endswith(b"1.1 -")


async def h2_get(port: int, context: ssl.SSLContext, path: str = "/") -> tuple[str, bytes]:
    """One HTTP/2 request over TLS (ALPN h2): the ALPN the server chose, and the body."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port, ssl=context)
    ssl_object = writer.get_extra_info("ssl_object")
    chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    conn = H2Connection(H2Configuration(client_side=True, header_encoding="latin-1"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [(":method", "GET"), (":path", path), (":scheme", "https"), (":authority", "callee")],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    body = bytearray()
    status = ""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), WAIT)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, ResponseReceived):
                    headers: Any = event.headers
                    status = str(dict(headers).get(":status", ""))
                elif isinstance(event, DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, StreamEnded):
                    assert status == "200", status
                    return str(chosen), bytes(body)
            writer.write(conn.data_to_send())
    finally:
        writer.close()


async def test_http2_over_tls_by_alpn_reaches_the_same_engine_with_the_identity() -> None:
    ca = TestCA.create()
    async with identity_server(ca) as (port, _):
        context = client_context(ca.issue(CALLER), ca, alpn=("h2", "http/1.1"))
        chosen, body = await h2_get(port, context)
        assert chosen == "h2"
        assert body == b"2 cluster.local/ns/test/sa/caller"


async def test_http2_over_tls_through_the_sidecar_to_the_app() -> None:
    ca = TestCA.create()
    async with upstreams("app") as (app,), sidecar(callee_config(app, mtls="STRICT")) as callee:
        install(callee, ca.issue(CALLEE))
        context = client_context(ca.issue(CALLER), ca, alpn=("h2",))
        chosen, body = await h2_get(port_of(callee), context, "/over-h2")
        assert chosen == "h2"
        assert b'"upstream": "app"' in body
        assert app.seen_targets == ["/over-h2"]


async def echo_app() -> asyncio.Server:
    """A TCP app that echoes what it gets as it comes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(b"echo:" + data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, LOCALHOST, 0)


async def test_a_tcp_proxy_inbound_listener_relays_the_decrypted_bytes() -> None:
    ca = TestCA.create()
    app_server = await echo_app()
    try:
        app = Upstream("tcp-app", port=app_server.sockets[0].getsockname()[1])
        async with sidecar(callee_config(app, mtls="STRICT", tcp=True)) as callee:
            install(callee, ca.issue(CALLEE))
            port = port_of(callee)
            context = client_context(ca.issue(CALLER), ca)
            reader, writer = await asyncio.open_connection(LOCALHOST, port, ssl=context)
            writer.write(b"over tls")
            assert await asyncio.wait_for(reader.readexactly(13), WAIT) == b"echo:over tls"
            writer.close()
            # Plaintext to a STRICT tcp_proxy listener is refused before any relaying.
            assert await plaintext_answer(port, b"plain") == b""
            assert stat(callee, ssl_stat(port, "ssl.handshake")) == 1
            assert stat(callee, ssl_stat(port, "no_filter_chain_match")) == 1
            assert stat(callee, "tcp.inbound|app.downstream_cx_total") == 1
    finally:
        app_server.close()
        await app_server.wait_closed()


async def test_permissive_hands_a_silent_client_over_as_plaintext_for_server_first_apps() -> None:
    # A server-first protocol (MySQL, SMTP): the client waits for the app's greeting, so its
    # first bytes never come; at the deadline it goes on as plaintext, as Istio's PERMISSIVE.
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    app_server = await asyncio.start_server(greet, LOCALHOST, 0)
    try:
        app = Upstream("greeter", port=app_server.sockets[0].getsockname()[1])
        config = callee_config(app, mtls="PERMISSIVE", tcp=True, handshake_timeout=0.2)
        async with sidecar(config) as callee:
            install(callee, TestCA.create().issue(CALLEE))
            reader, writer = await asyncio.open_connection(LOCALHOST, port_of(callee))
            assert await asyncio.wait_for(reader.readline(), WAIT) == b"220 hello\r\n"
            writer.close()
        # STRICT closes the same client instead.
        config = callee_config(app, mtls="STRICT", tcp=True, handshake_timeout=0.2)
        async with sidecar(config) as callee:
            install(callee, TestCA.create().issue(CALLEE))
            reader, writer = await asyncio.open_connection(LOCALHOST, port_of(callee))
            with suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()
    finally:
        app_server.close()
        await app_server.wait_closed()
