"""Envoy's connection-level, byte, server and config-update stats, moved by a real sidecar:
bytes match what crossed the wire to the byte (raw sockets both sides), closes are told apart
(ours or the peer's, with a request in flight or not), resets and timeouts count where they
happen, and the listener, its connection manager and the cluster each count in their scope."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from meshdev.common.sidecar_config import Limits, SidecarConfig
from meshdev.common.stattags import TagExtractor
from meshdev.sidecar.main import Sidecar
from meshdev.sidecar.stats.formats import render_prometheus
from tests.sidecar.helpers import (
    client,
    get,
    listener_url,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.sidecar.promtool import promtool_check
from tests.support import LOCALHOST, wait_until

BODY = b"hello from the raw upstream\n"


class RawUpstream:
    """An HTTP/1.1 upstream on a raw socket that counts the bytes it reads and writes, and
    answers each request with BODY (keep-alive), or closes after it unannounced
    (`close_after`: a keep-alive answer, then the close)."""

    def __init__(self, close_after: bool = False) -> None:
        self.close_after = close_after
        self.read = 0
        self.written = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, LOCALHOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.read += len(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    self.read += len(await reader.readexactly(length))
                answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY
                writer.write(answer)
                self.written += len(answer)
                await writer.drain()
                if self.close_after:
                    break
        with contextlib.suppress(ConnectionError):
            writer.close()


@contextlib.asynccontextmanager
async def raw_upstream(close_after: bool = False) -> AsyncIterator[RawUpstream]:
    up = await RawUpstream(close_after).start()
    try:
        yield up
    finally:
        await up.stop()


def raw_config(up: RawUpstream, **limits: Any) -> SidecarConfig:
    ep = {"address": LOCALHOST, "port": up.port, "pod": "raw"}
    config = simple_config([], cluster={"endpoints": [ep]})
    return config.model_copy(update={"limits": Limits(**limits)}) if limits else config


def request(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nhost: backend\r\n" + extra + b"\r\n"


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def listener_scope(sc: Sidecar) -> str:
    lst = sc.config.listeners[0]
    return f"listener.{lst.address}_{lst.port}."


def stats_of(sc: Sidecar, prefix: str) -> dict[str, int]:
    store = sc.stats
    out = {c.name[len(prefix) :]: c.value for c in store.counters() if c.name.startswith(prefix)}
    out.update(
        {g.name[len(prefix) :]: g.value for g in store.gauges() if g.name.startswith(prefix)}
    )
    return out


async def settled(sc: Sidecar, name: str, value: int) -> None:
    await wait_until(lambda: stat(sc, name) == value, f"{name} == {value}")


async def test_bytes_both_ways_match_the_wire_and_a_client_close_is_remote() -> None:
    async with raw_upstream() as up, sidecar(raw_config(up)) as sc:
        lst = sc.config.listeners[0]
        reader, writer = await asyncio.open_connection(lst.address, lst.port)
        sent = received = 0
        for i in range(3):
            data = request(f"/{i}", b"x-pad: " + b"p" * (100 * i) + b"\r\n")
            writer.write(data)
            sent += len(data)
            received += len(await read_answer(reader))
        writer.close()
        await settled(sc, "http.outbound.downstream_cx_destroy", 1)

        http = stats_of(sc, "http.outbound.")
        assert http["downstream_cx_rx_bytes_total"] == sent
        assert http["downstream_cx_tx_bytes_total"] == received
        assert http["downstream_cx_total"] == 1
        assert http["downstream_cx_http1_total"] == 1
        assert http["downstream_cx_active"] == http["downstream_cx_http1_active"] == 0
        assert http["downstream_cx_destroy_remote"] == 1
        assert http["downstream_cx_destroy_local"] == 0
        assert http["downstream_cx_destroy_active_rq"] == 0
        assert http["downstream_rq_rx_reset"] == http["downstream_rq_tx_reset"] == 0
        assert http["downstream_rq_completed"] == 3
        assert http["downstream_rq_http1_total"] == 3

        listener = stats_of(sc, listener_scope(sc))
        assert listener["downstream_cx_total"] == listener["downstream_cx_destroy"] == 1
        assert listener["downstream_cx_active"] == 0
        assert listener["http.outbound.downstream_rq_2xx"] == 3
        assert listener["http.outbound.downstream_rq_completed"] == 3

        # Upstream: what the upstream read is what the sidecar wrote, and the other way.
        cluster = stats_of(sc, "cluster.backend.")
        assert cluster["upstream_cx_tx_bytes_total"] == up.read
        assert cluster["upstream_cx_rx_bytes_total"] == up.written
        assert cluster["upstream_cx_http1_total"] == cluster["upstream_cx_total"] == 1
        assert cluster["upstream_cx_destroy"] == 0
        assert cluster["upstream_rq_completed"] == 3
        assert cluster["external.upstream_rq_completed"] == 3
        assert cluster["external.upstream_rq_200"] == cluster["external.upstream_rq_2xx"] == 3


async def test_an_upstream_close_is_remote_and_ours_is_local() -> None:
    async with raw_upstream(close_after=True) as up, sidecar(raw_config(up)) as sc:
        async with client() as session:
            for _ in range(2):
                status, _, body = await get(session, listener_url(sc))
                assert (status, body) == (200, BODY)
                await settled(sc, "cluster.backend.upstream_cx_active", 0)
        await settled(sc, "cluster.backend.upstream_cx_destroy_remote", 2)
        cluster = stats_of(sc, "cluster.backend.")
        assert cluster["upstream_cx_destroy"] == 2
        assert cluster["upstream_cx_destroy_local"] == 0
        assert cluster["upstream_cx_destroy_with_active_rq"] == 0
        assert cluster["upstream_cx_rx_bytes_total"] == up.written
        assert cluster["upstream_cx_tx_bytes_total"] == up.read

    # Ours: the pool's idle connection closed as the sidecar stops.
    async with raw_upstream() as up:
        sc = Sidecar(raw_config(up), token="t")
        await sc.start()
        async with client() as session:
            assert (await get(session, listener_url(sc)))[0] == 200
        await sc.stop()
        sc.plane.sync_stats()
        assert stat(sc, "cluster.backend.upstream_cx_destroy_local") == 1
        assert stat(sc, "cluster.backend.upstream_cx_destroy_remote") == 0


async def test_a_client_leaving_mid_request_is_a_received_reset() -> None:
    async with upstreams("app") as (app,), sidecar(simple_config([app])) as sc:
        lst = sc.config.listeners[0]
        _, writer = await asyncio.open_connection(lst.address, lst.port)
        writer.write(request("/?hold=1"))
        await wait_until(lambda: app.active == 1, "the upstream holds the request")
        writer.close()
        await settled(sc, "http.outbound.downstream_rq_rx_reset", 1)
        http = stats_of(sc, "http.outbound.")
        assert http["downstream_cx_destroy_remote_active_rq"] == 1
        assert http["downstream_cx_destroy_active_rq"] == 1
        assert http["downstream_rq_tx_reset"] == 0
        assert http["downstream_rq_completed"] == 0
        # We gave up the upstream exchange: a reset we sent, and a connection we closed.
        await settled(sc, "cluster.backend.upstream_rq_tx_reset", 1)
        await settled(sc, "cluster.backend.upstream_cx_destroy_local_with_active_rq", 1)
        app.release()


async def test_an_upstream_reset_and_an_answer_cut_short() -> None:
    async with upstreams("app") as (app,), sidecar(simple_config([app])) as sc:
        async with client() as session:
            status, _, _ = await get(session, listener_url(sc), "/reset")
            assert status == 503
        assert stat(sc, "cluster.backend.upstream_rq_rx_reset") == 1
        assert stat(sc, "cluster.backend.external.upstream_rq_503") == 1
        await settled(sc, "cluster.backend.upstream_cx_destroy_remote_with_active_rq", 1)

    # An upstream that dies after the head: the client's answer is cut, a reset we send.
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly this")
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(half, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    ep = {"address": LOCALHOST, "port": port, "pod": "half"}
    try:
        async with sidecar(simple_config([], cluster={"endpoints": [ep]})) as sc:
            lst = sc.config.listeners[0]
            reader, writer = await asyncio.open_connection(lst.address, lst.port)
            writer.write(request())
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
            writer.close()
            await settled(sc, "http.outbound.downstream_rq_tx_reset", 1)
            assert stat(sc, "http.outbound.downstream_cx_destroy_local") == 1
            assert stat(sc, "http.outbound.downstream_rq_rx_reset") == 0
    finally:
        server.close()


async def test_timeouts_and_protocol_errors_count_where_they_happen() -> None:
    async with upstreams("app") as (app,):
        config = simple_config([app]).model_copy(
            update={"limits": Limits(idle_timeout=0.2, header_timeout=0.3)}
        )
        async with sidecar(config) as sc:
            lst = sc.config.listeners[0]
            # Idle after one request: closed by us.
            reader, writer = await asyncio.open_connection(lst.address, lst.port)
            writer.write(request())
            await read_answer(reader)
            assert await reader.read() == b""
            writer.close()
            await settled(sc, "http.outbound.downstream_cx_idle_timeout", 1)
            assert stat(sc, "http.outbound.downstream_cx_destroy_local") == 1
            # A head that never ends: 408.
            reader, writer = await asyncio.open_connection(lst.address, lst.port)
            writer.write(b"GET / HTTP/1.1\r\nhost: backend\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 408")
            writer.close()
            await settled(sc, "http.outbound.downstream_rq_header_timeout", 1)
            # Garbage: a protocol error.
            reader, writer = await asyncio.open_connection(lst.address, lst.port)
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 400")
            writer.close()
            await settled(sc, "http.outbound.downstream_cx_protocol_error", 1)
            assert stat(sc, "http.outbound.downstream_rq_timeout") == 0  # declared, as Envoy's


async def test_a_connect_timeout_counts_as_one_and_as_a_connect_failure() -> None:
    # A listener whose accept queue is full (never accepted): the kernel drops further SYNs,
    # so a connect waits until it times out.
    full = socket.socket()
    full.bind((LOCALHOST, 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect((LOCALHOST, port))
            fillers.append(s)
        await asyncio.sleep(0.1)
        ep = {"address": LOCALHOST, "port": port, "pod": "full"}
        config = simple_config([], cluster={"endpoints": [ep], "connect_timeout": 0.2})
        async with sidecar(config) as sc, client() as session:
            status, _, _ = await get(session, listener_url(sc))
            assert status == 503
            sc.plane.sync_stats()
            assert stat(sc, "cluster.backend.upstream_cx_connect_timeout") == 1
            assert stat(sc, "cluster.backend.upstream_cx_connect_fail") == 1
    finally:
        for s in fillers:
            s.close()
        full.close()


async def test_an_internal_request_is_charged_internal() -> None:
    async with upstreams("app") as (app,), sidecar(simple_config([app])) as sc:
        async with client() as session:
            base = listener_url(sc)
            assert (await get(session, base, headers={"x-envoy-internal": "true"}))[0] == 200
            assert (await get(session, base, "/?status=404"))[0] == 404
        cluster = stats_of(sc, "cluster.backend.")
        assert cluster["internal.upstream_rq_200"] == cluster["internal.upstream_rq_2xx"] == 1
        assert cluster["internal.upstream_rq_completed"] == 1
        assert cluster["external.upstream_rq_404"] == cluster["external.upstream_rq_4xx"] == 1
        assert cluster["external.upstream_rq_completed"] == 1
        assert cluster["upstream_rq_completed"] == 2
        assert "external.upstream_rq_200" not in cluster
        # Envoy's cluster stats a cluster that never meets them still shows, at 0.
        assert cluster["lb_healthy_panic"] == 0
        assert cluster["circuit_breakers.default.cx_pool_open"] == 0


async def test_http2_connections_count_their_bytes() -> None:
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import StreamEnded

    async with upstreams("app") as (app,), sidecar(simple_config([app])) as sc:
        lst = sc.config.listeners[0]
        reader, writer = await asyncio.open_connection(lst.address, lst.port)
        h2 = H2Connection(H2Configuration(client_side=True, header_encoding="latin-1"))
        sent = got = 0

        def flush() -> None:
            nonlocal sent
            data = h2.data_to_send()
            writer.write(data)
            sent += len(data)

        h2.initiate_connection()
        headers = [(":method", "GET"), (":path", "/"), (":scheme", "http")]
        h2.send_headers(1, [*headers, (":authority", "backend")], end_stream=True)
        flush()
        ended = False
        while not ended:
            data = await reader.read(65536)
            assert data
            got += len(data)
            ended = any(isinstance(e, StreamEnded) for e in h2.receive_data(data))
            flush()
        h2.close_connection()
        flush()
        # The sidecar answers our GOAWAY by closing: read what it sends until then.
        while data := await reader.read(65536):
            got += len(data)
        writer.close()
        await settled(sc, "http.outbound.downstream_cx_destroy", 1)
        http = stats_of(sc, "http.outbound.")
        assert http["downstream_cx_total"] == http["downstream_cx_http2_total"] == 1
        assert http["downstream_cx_http1_total"] == 0
        assert http["downstream_rq_http2_total"] == 1
        assert http["downstream_rq_completed"] == 1
        assert http["downstream_cx_rx_bytes_total"] == sent
        assert http["downstream_cx_tx_bytes_total"] == got


async def test_server_stats_and_config_updates() -> None:
    async with upstreams("app") as (app,), sidecar(simple_config([app])) as sc:
        server = stats_of(sc, "server.")
        assert server["live"] == 1 and server["state"] == 0
        assert server["concurrency"] == 1
        assert server["uptime"] >= 0
        assert 0 < server["memory_allocated"] <= server["memory_heap_size"]
        assert server["memory_physical_size"] >= server["memory_allocated"]
        lst = sc.config.listeners[0]
        reader, writer = await asyncio.open_connection(lst.address, lst.port)
        writer.write(request())
        await read_answer(reader)
        assert stat(sc, "server.total_connections") == 1
        writer.close()

        # The first config counts as the control plane's first update; a push as the next.
        cds = "cluster_manager.cds."
        assert stat(sc, cds + "update_attempt") == stat(sc, cds + "update_success") == 1
        admin = f"http://{LOCALHOST}:{sc.admin_port}"
        async with aiohttp.ClientSession() as session:
            body = sc.config.model_dump(mode="json")
            body["version"] = 2
            async with session.post(
                admin + "/config", data=json.dumps(body), headers={"x-meshdev-token": "test-token"}
            ) as resp:
                assert resp.status == 200
            async with session.post(
                admin + "/config", data=b"{}", headers={"x-meshdev-token": "test-token"}
            ) as resp:
                assert resp.status == 400
        for scope in (cds, "listener_manager.lds."):
            assert stat(sc, scope + "update_attempt") == 3
            assert stat(sc, scope + "update_success") == 2
            assert stat(sc, scope + "update_rejected") == 1
            assert stat(sc, scope + "update_failure") == 0
    sc.plane.draining = True
    assert stat(sc, "server.live") == 0
    assert stat(sc, "server.state") == 1


async def test_the_new_families_in_prometheus_text() -> None:
    async with upstreams("app") as (app,), sidecar(simple_config([app])) as sc:
        async with client() as session:
            assert (await get(session, listener_url(sc)))[0] == 200
        text = render_prometheus(sc.stats, TagExtractor.for_config(sc.config))
        await asyncio.to_thread(promtool_check, text)
    types = dict(ln.split()[2:4] for ln in text.splitlines() if ln.startswith("# TYPE "))
    expected: dict[str, str] = {
        "envoy_server_live": "gauge",
        "envoy_server_uptime": "gauge",
        "envoy_server_memory_allocated": "gauge",
        "envoy_server_memory_heap_size": "gauge",
        "envoy_server_concurrency": "gauge",
        "envoy_listener_downstream_cx_total": "counter",
        "envoy_listener_downstream_cx_active": "gauge",
        "envoy_listener_http_downstream_rq_xx": "counter",
        "envoy_http_downstream_cx_total": "counter",
        "envoy_http_downstream_cx_destroy": "counter",
        "envoy_http_downstream_cx_rx_bytes_total": "counter",
        "envoy_http_downstream_cx_tx_bytes_buffered": "gauge",
        "envoy_http_downstream_cx_idle_timeout": "counter",
        "envoy_http_downstream_rq_rx_reset": "counter",
        "envoy_http_downstream_rq_tx_reset": "counter",
        "envoy_http_downstream_rq_timeout": "counter",
        "envoy_cluster_upstream_cx_rx_bytes_total": "counter",
        "envoy_cluster_upstream_cx_destroy_remote": "counter",
        "envoy_cluster_upstream_cx_connect_timeout": "counter",
        "envoy_cluster_upstream_rq_completed": "counter",
        "envoy_cluster_external_upstream_rq": "counter",
        "envoy_cluster_external_upstream_rq_completed": "counter",
        "envoy_cluster_lb_healthy_panic": "counter",
        "envoy_cluster_circuit_breakers_default_cx_pool_open": "gauge",
        "envoy_cluster_manager_cds_update_attempt": "counter",
    }
    assert {k: types.get(k) for k in expected} == expected
    lst = sc.config.listeners[0]
    line = (
        'envoy_listener_http_downstream_rq_xx{envoy_response_code_class="2",'
        f'envoy_listener_address="{lst.address}_{lst.port}",'
        'envoy_http_conn_manager_prefix="outbound"} 1'
    )
    assert line in text


async def test_an_upgraded_streams_bytes_count_on_both_sides_as_it_closes() -> None:
    from aiohttp import ClientSession

    from tests.sidecar.proxy.test_websocket import connect, echo
    from tests.sidecar.proxy.wsapp import outbound_to, ws_app

    async with ws_app() as app, sidecar(outbound_to(app.port)) as sc, ClientSession() as s:
        async with connect(s, sc) as ws:
            assert await echo(ws, b"x" * 10_000) == b"x" * 10_000
        await settled(sc, "http.outbound.downstream_cx_destroy", 1)
        await settled(sc, "cluster.backend.upstream_cx_destroy", 1)
        # A stream's bytes are counted as each of its two connections closes, and the upgrade
        # ends (its handler returns) only once both have. The listener-wide destroy count
        # above is moved by any connection to the port, and the port comes from free_port():
        # a stray connection from another process closing first satisfies it before this
        # stream's client side has closed, its bytes not counted yet. Only this upgrade moves
        # the route's upgrade gauge: wait for it to drop.
        assert stat(sc, "vhost.backend.route.main.downstream_cx_upgrades_total") == 1
        await settled(sc, "vhost.backend.route.main.downstream_cx_upgrades_active", 0)
        http = stats_of(sc, "http.outbound.")
        cluster = stats_of(sc, "cluster.backend.")
        # The 10,000 bytes crossed each way (plus the handshake and frame headers): what the
        # client sent the sidecar wrote upstream, and what came back went to the client.
        assert http["downstream_cx_rx_bytes_total"] > 10_000, http
        assert http["downstream_cx_tx_bytes_total"] > 10_000, http
        assert cluster["upstream_cx_tx_bytes_total"] > 10_000, cluster
        assert cluster["upstream_cx_rx_bytes_total"] > 10_000, cluster
