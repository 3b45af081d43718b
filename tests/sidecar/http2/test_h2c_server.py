"""h2c with prior knowledge on a real sidecar's listeners: HTTP/2 streams take the same
pipeline as HTTP/1.1 requests (routing by :authority, retries, stats), multiplexed, with flow
control both ways; the same port still speaks HTTP/1.1."""

from __future__ import annotations

import asyncio
import shutil
import time

from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import (
    COUNTED,
    client,
    get,
    listener_url,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.sidecar.http2.h2client import H2Client
from tests.support import LOCALHOST, WAIT, wait_until

OUT = "http.outbound."


def port(sc: Sidecar, name: str = "outbound") -> int:
    return next(x.port for x in sc.config.listeners if x.name == name)


async def test_get_routed_by_authority_and_counted() -> None:
    async with upstreams("a") as ups, sidecar(simple_config(ups, vhost=COUNTED)) as sc:
        c = await H2Client.open(LOCALHOST, port(sc))
        try:
            a = await c.request("/items?x=1", authority="backend")
            assert a.status == 200
            assert a.headers["x-upstream"] == "a"
            assert a.headers["x-envoy-attempt-count"] == "1"
            assert b'"path": "/items?x=1"' in a.body
            # No route for another authority: the same 404 NR as HTTP/1.1.
            missing = await c.request("/", authority="nowhere")
            assert missing.status == 404
        finally:
            await c.close()
        assert ups[0].seen_headers[0]["host"] == "backend"
        assert stat(sc, OUT + "downstream_cx_http2_total") == 1
        assert stat(sc, OUT + "downstream_rq_2xx") == 1
        assert stat(sc, OUT + "no_route") == 1
        assert stat(sc, "cluster.backend.upstream_rq_200") == 1
        await wait_until(
            lambda: stat(sc, OUT + "downstream_cx_http2_active") == 0, "connection closed"
        )


async def test_streams_are_multiplexed_on_one_connection() -> None:
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        c = await H2Client.open(LOCALHOST, port(sc))
        try:
            t0 = time.monotonic()
            sids = [c.start("/slow?delay=0.5") for _ in range(20)]
            answers = [await c.answer(s) for s in sids]
            elapsed = time.monotonic() - t0
        finally:
            await c.close()
        assert [a.status for a in answers] == [200] * 20
        # Twenty half-second answers at once, not one after another.
        assert elapsed < 3.0
        assert stat(sc, OUT + "downstream_cx_http2_total") == 1
        assert ups[0].hits == 20


async def test_large_bodies_both_ways_under_flow_control() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: many times every window
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        c = await H2Client.open(LOCALHOST, port(sc))
        try:
            a = await c.request("/echo", method="POST", body=body)
            assert a.status == 200
            assert bytes(a.body) == body
            big = await c.request("/big?size=3000000")
            assert len(big.body) == 3_000_000
        finally:
            await c.close()
        assert ups[0].hits == 2


async def test_a_client_that_does_not_read_is_not_buffered_without_bound() -> None:
    """With the client's window closed, the sidecar holds what the window allows plus its
    own buffers, and the upstream is paused (back-pressure), not read to the end."""
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        c = await H2Client.open(LOCALHOST, port(sc))
        c.auto_ack = False
        try:
            sid = c.start("/big?size=50000000")
            await wait_until(lambda: len(c.answers[sid].body) >= 60000, "the first window")
            await asyncio.sleep(0.5)
            # The initial 64 KiB stream window, and not a byte more.
            assert len(c.answers[sid].body) <= 65535
            c.auto_ack = True
            c.conn.acknowledge_received_data(len(c.answers[sid].body), sid)
            c.flush()
            a = await asyncio.wait_for(c.answer(sid), 30)
            assert len(a.body) == 50_000_000
        finally:
            await c.close()
        assert ups[0].hits == 1


async def test_client_reset_cancels_the_request_upstream() -> None:
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        c = await H2Client.open(LOCALHOST, port(sc))
        try:
            sid = c.start("/held?hold=1")
            await wait_until(lambda: ups[0].active == 1, "request upstream")
            c.conn.reset_stream(sid)
            c.flush()
            await wait_until(lambda: ups[0].active == 0, "request cancelled upstream")
            # The connection goes on.
            a = await c.request("/after")
            assert a.status == 200
        finally:
            await c.close()
        assert stat(sc, "http2.rx_reset") == 1


async def test_http1_still_served_on_the_same_port() -> None:
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc, client() as session:
        status, _, _ = await get(session, listener_url(sc), "/one")
        assert status == 200
        c = await H2Client.open(LOCALHOST, port(sc))
        try:
            assert (await c.request("/two")).status == 200
        finally:
            await c.close()
        assert stat(sc, OUT + "downstream_rq_2xx") == 2
        assert stat(sc, OUT + "downstream_cx_http2_total") == 1


async def test_a_preface_split_over_reads_is_recognised() -> None:
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        reader, writer = await asyncio.open_connection(LOCALHOST, port(sc))
        try:
            writer.write(b"PRI * HTT")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"P/2.0\r\n\r\nSM\r\n\r\n")
            # The server's SETTINGS frame: type 0x4 on stream 0.
            head = await asyncio.wait_for(reader.readexactly(9), WAIT)
            assert head[3] == 0x4
        finally:
            writer.close()
            await writer.wait_closed()
        assert stat(sc, OUT + "downstream_cx_http2_total") == 1


async def test_curl_http2_prior_knowledge() -> None:
    # scripts/test.sh installs curl: a missing one is a broken setup, not a reason to skip.
    assert shutil.which("curl") is not None, "curl is required (scripts/test.sh installs it)"
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--http2-prior-knowledge",
            "-H",
            "Host: backend",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            listener_url(sc) + "/hello",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), WAIT)
        assert out.decode() == "2 200"
        assert stat(sc, OUT + "downstream_cx_http2_total") == 1


async def test_unread_bodies_give_their_window_back() -> None:
    """Bodies the pipeline never reads (a fault answers first), 2.5 MiB on one connection
    whose window is 1 MiB: what they left unread is acknowledged, so later streams flow."""
    route = {"fault": {"abort": {"status": 503, "percent": 100}}}
    async with upstreams("a") as ups, sidecar(simple_config(ups, route=route)) as sc:
        c = await H2Client.open(LOCALHOST, port(sc))
        try:
            for _ in range(10):
                a = await c.request("/upload", method="POST", body=b"z" * 256 * 1024)
                assert a.status == 503
        finally:
            await c.close()
        assert ups[0].hits == 0
