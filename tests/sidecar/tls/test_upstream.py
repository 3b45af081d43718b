"""Upstream mutual TLS: a cluster with `tls` reaches its endpoints only over TLS and only when
they prove an accepted SPIFFE ID; anything else is a connect failure (503 UF, outlier
detection). HTTP/1.1 pools, HTTP/2 pools and tcp_proxy sessions alike."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from meshdev.common.sidecar_config import UpstreamTls
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.tls.identity import WorkloadIdentity
from meshdev.sidecar.tls.stats import ClusterTlsStats
from meshdev.sidecar.tls.upstream import TlsConnectError, TlsOrigin
from meshdev.testing.certs import TestCA, spiffe
from tests.sidecar.helpers import Upstream, client, get, sidecar, stat
from tests.sidecar.proxy.wsapp import ws_app
from tests.sidecar.tls.meshtls import (
    CALLEE,
    CALLER,
    callee_config,
    caller_config,
    install,
    mesh,
    port_of,
)
from tests.support import LOCALHOST, WAIT, free_port, wait_until

CONNECT_FAILURE = b"reset reason: connection failure"


def in_listener(port: int, name: str) -> str:
    return f"listener.{LOCALHOST}_{port}.{name}"


async def test_requests_cross_two_sidecars_over_one_pooled_tls_connection() -> None:
    async with mesh() as m, client() as s:
        for i in range(5):
            status, headers, _ = await get(s, m.outbound, f"/n{i}", host="callee")
            assert (status, headers["x-upstream"]) == (200, "app")
        assert m.app.seen_targets == [f"/n{i}" for i in range(5)]
        # One handshake each side: the pool keeps the connection, handshakes stay off requests.
        assert stat(m.caller, "cluster.callee.ssl.handshake") == 1
        assert stat(m.callee, in_listener(port_of(m.callee), "ssl.handshake")) == 1


async def test_a_large_body_streams_both_ways_through_two_tls_hops() -> None:
    body = bytes(range(256)) * (3 * 4096)  # 3 MiB, past every flow-control mark
    async with mesh() as m, client() as s:
        status, _, echoed = await get(
            s, m.outbound, "/echo", host="callee", method="POST", data=io.BytesIO(body)
        )
        assert status == 200
        assert echoed == body


async def test_an_endpoint_with_another_spiffe_id_is_a_connect_failure_for_outlier_detection() -> (
    None
):
    cluster: dict[str, Any] = {
        "tls": {"spiffe_ids": [spiffe("not-the-callee")]},
        "outlier_detection": {"consecutive_5xx": 2},
    }
    async with mesh(cluster=cluster) as m, client() as s:
        for _ in range(2):
            status, _, body = await get(s, m.outbound, "/", host="callee")
            assert status == 503
            assert CONNECT_FAILURE in body
        assert m.app.hits == 0
        caller = m.caller
        assert stat(caller, "cluster.callee.ssl.fail_verify_san") == 2
        assert stat(caller, "cluster.callee.ssl.handshake") == 0
        assert stat(caller, "cluster.callee.upstream_cx_connect_fail") == 2
        # Two connect failures in a row: the endpoint is ejected, as for refused connects.
        assert stat(caller, "cluster.callee.outlier_detection.ejections_enforced_total") == 1
        status, _, _ = await get(s, m.outbound, "/", host="callee")
        assert status == 503


async def test_no_certificate_yet_is_a_connect_failure() -> None:
    async with mesh(certs=False) as m, client() as s:
        install(m.callee, m.ca.issue(CALLEE))
        status, _, body = await get(s, m.outbound, "/", host="callee")
        assert status == 503
        assert CONNECT_FAILURE in body
        assert stat(m.caller, "cluster.callee.upstream_cx_connect_fail") == 1
        # Once it comes, the same cluster works.
        install(m.caller, m.ca.issue(CALLER))
        status, _, _ = await get(s, m.outbound, "/", host="callee")
        assert status == 200


async def test_an_endpoint_certified_by_another_ca_fails_verification() -> None:
    async with mesh(certs=False) as m, client() as s:
        install(m.callee, TestCA.create("a stranger's CA").issue(CALLEE))
        install(m.caller, m.ca.issue(CALLER))
        status, _, body = await get(s, m.outbound, "/", host="callee")
        assert status == 503 and CONNECT_FAILURE in body
        assert stat(m.caller, "cluster.callee.ssl.fail_verify_error") == 1
        assert m.app.hits == 0


async def test_an_http2_cluster_speaks_h2_over_tls() -> None:
    async with mesh(cluster={"http2": True}) as m, client() as s:
        for path in ("/a", "/b"):
            status, headers, _ = await get(s, m.outbound, path, host="callee")
            assert (status, headers["x-upstream"]) == (200, "app")
        assert stat(m.caller, "cluster.callee.upstream_cx_http2_total") == 1
        assert stat(m.caller, "cluster.callee.ssl.handshake") == 1
        # The callee's engine took it as HTTP/2 (ALPN h2, then the preface).
        await wait_until(
            lambda: stat(m.callee, "http.inbound.downstream_cx_http2_total") == 1, "h2 counted"
        )


async def test_the_next_connection_to_an_endpoint_resumes_its_tls_session() -> None:
    ca = TestCA.create()
    app = await Upstream("app").start()
    try:
        async with sidecar(callee_config(app)) as callee:
            install(callee, ca.issue(CALLEE))
            identity = WorkloadIdentity()
            identity.install(ca.issue(CALLER), CALLER)
            store = Store()
            origin = TlsOrigin(
                identity, UpstreamTls(spiffe_ids=(CALLEE,)), ClusterTlsStats(store, "c"), None
            )
            loop = asyncio.get_running_loop()
            port = port_of(callee)
            reused = []
            for _ in range(3):
                transport, _ = await origin.connect(loop, asyncio.Protocol, LOCALHOST, port)
                reused.append(transport.get_extra_info("ssl_object").session_reused)
                # Let the callee's session ticket arrive (it follows the handshake).
                await asyncio.sleep(0.05)
                transport.close()
            assert reused[1:] == [True, True]
            listener = in_listener(port, "ssl.session_reused")
            await wait_until(lambda: stat(callee, listener) >= 2, "the callee counts resumptions")
            # A rotation starts afresh: a session belongs to the certificate that made it.
            identity.install(ca.issue(CALLER), CALLER)
            transport, _ = await origin.connect(loop, asyncio.Protocol, LOCALHOST, port)
            assert transport.get_extra_info("ssl_object").session_reused is False
            transport.close()
    finally:
        await app.stop()


async def test_a_refused_tls_origin_raises_an_oserror_the_pools_take_as_connect_failure() -> None:
    identity = WorkloadIdentity()
    origin = TlsOrigin(
        identity, UpstreamTls(spiffe_ids=(CALLEE,)), ClusterTlsStats(Store(), "c"), None
    )
    loop = asyncio.get_running_loop()
    with pytest.raises(OSError, match="no workload certificate yet") as caught:
        await origin.connect(loop, asyncio.Protocol, LOCALHOST, free_port())
    assert isinstance(caught.value, TlsConnectError)


async def half_closing_app() -> asyncio.Server:
    """A TCP app that answers only once its client has finished sending (a half-close)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(b"got:" + data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, LOCALHOST, 0)


async def test_tcp_proxy_sessions_go_over_tls_and_carry_a_half_close() -> None:
    ca = TestCA.create()
    app_server = await half_closing_app()
    try:
        app = Upstream("tcp-app", port=app_server.sockets[0].getsockname()[1])
        async with sidecar(callee_config(app, tcp=True)) as callee:
            tcp_port = free_port()
            async with sidecar(caller_config(port_of(callee), tcp_port=tcp_port)) as caller:
                install(callee, ca.issue(CALLEE))
                install(caller, ca.issue(CALLER))
                reader, writer = await asyncio.open_connection(LOCALHOST, tcp_port)
                writer.write(b"ping over two tls hops")
                # The FIN goes on as TLS's close_notify between the sidecars, then as a FIN.
                writer.write_eof()
                answer = await asyncio.wait_for(reader.read(), WAIT)
                writer.close()
                assert answer == b"got:ping over two tls hops"
                assert stat(caller, "cluster.callee.ssl.handshake") == 1
                assert stat(callee, in_listener(port_of(callee), "ssl.handshake")) == 1
    finally:
        app_server.close()
        await app_server.wait_closed()


async def test_a_websocket_crosses_two_tls_hops_both_ways() -> None:
    ca = TestCA.create()
    async with ws_app() as ws_server:
        app = Upstream("ws", port=ws_server.port)
        async with sidecar(callee_config(app)) as callee:
            to_callee = caller_config(port_of(callee))
            async with sidecar(to_callee) as caller:
                install(callee, ca.issue(CALLEE))
                install(caller, ca.issue(CALLER))
                url = f"http://{LOCALHOST}:{caller.listener_port('outbound')}/ws"
                big = bytes(range(256)) * 8192  # 2 MiB: through both TLS layers' flow control
                async with (
                    client() as s,
                    s.ws_connect(url, headers={"Host": "callee"}, max_msg_size=0) as ws,
                ):
                    for message in ("hello", big):
                        if isinstance(message, str):
                            await ws.send_str(message)
                        else:
                            await ws.send_bytes(message)
                        answer = await asyncio.wait_for(ws.receive(), WAIT)
                        assert answer.data == message
                assert ws_server.accepted == 1
                assert stat(caller, "cluster.callee.ssl.handshake") == 1
