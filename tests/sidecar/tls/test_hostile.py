"""Hostile and broken peers at a STRICT inbound listener: each is refused and counted under
Envoy's stat, and none crashes or stalls the sidecar: a mesh client is served meanwhile and
after. (A server naming the wrong SPIFFE ID, the upstream side, is in test_upstream.py.)"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from meshdev.common.workload_certs import TRUST_DOMAIN
from meshdev.sidecar.main import Sidecar
from meshdev.testing.certs import TestCA, expired, tls_context
from tests.sidecar.helpers import Upstream, sidecar, stat, upstreams
from tests.sidecar.tls.meshtls import (
    CALLEE,
    CALLER,
    callee_config,
    client_context,
    install,
    port_of,
    refused,
    tls_request,
)
from tests.support import LOCALHOST, WAIT, wait_until

GET = b"GET /ok HTTP/1.1\r\nhost: callee\r\nconnection: close\r\n\r\n"
# Short, so that a stalled handshake is freed within the test; long for a loopback handshake.
HANDSHAKE_TIMEOUT = 0.5


@dataclass
class Strict:
    ca: TestCA
    app: Upstream
    callee: Sidecar

    @property
    def port(self) -> int:
        return port_of(self.callee)

    def stat(self, name: str) -> int:
        return stat(self.callee, f"listener.{LOCALHOST}_{self.port}.{name}")

    async def served(self) -> None:
        """A mesh client still gets its answer."""
        answer = await tls_request(self.port, client_context(self.ca.issue(CALLER), self.ca), GET)
        assert answer.startswith(b"HTTP/1.1 200"), answer


@asynccontextmanager
async def strict() -> AsyncIterator[Strict]:
    ca = TestCA.create()
    async with upstreams("app") as (app,):
        config = callee_config(app, mtls="STRICT", handshake_timeout=HANDSHAKE_TIMEOUT)
        async with sidecar(config) as callee:
            install(callee, ca.issue(CALLEE))
            yield Strict(ca, app, callee)


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a plain TCP connection, read until the sidecar closes it."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    try:
        writer.write(data)
        await writer.drain()
        got = bytearray()
        while chunk := await asyncio.wait_for(reader.read(65536), WAIT):
            got += chunk
        return bytes(got)
    except ConnectionResetError:
        return b"<reset>"
    finally:
        writer.close()


def client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight of a TLS client with `context`, made in memory."""
    out = ssl.MemoryBIO()
    obj = context.wrap_bio(ssl.MemoryBIO(), out, server_side=False)
    with suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


async def test_plaintext_to_a_strict_port_is_closed_unanswered_and_counted() -> None:
    async with strict() as s:
        answers = await asyncio.gather(*(raw_exchange(s.port, GET) for _ in range(20)))
        assert set(answers) <= {b"", b"<reset>"}
        await s.served()
        assert s.stat("ssl.connection_error") == 20
        assert s.stat("no_filter_chain_match") == 20
        assert s.app.hits == 1


async def test_a_client_certificate_from_another_ca_is_refused() -> None:
    async with strict() as s:
        stranger = TestCA.create("a stranger's CA").issue(CALLER)
        assert await refused(s.port, client_context(stranger, s.ca))
        await wait_until(lambda: s.stat("ssl.fail_verify_error") == 1, "fail_verify_error")
        await s.served()
        assert s.app.hits == 1


async def test_an_expired_client_certificate_is_refused() -> None:
    async with strict() as s:
        assert await refused(s.port, client_context(expired(s.ca, CALLER), s.ca))
        await wait_until(lambda: s.stat("ssl.fail_verify_error") == 1, "fail_verify_error")
        await s.served()
        assert s.app.hits == 1


async def test_a_client_with_no_certificate_is_refused() -> None:
    async with strict() as s:
        assert await refused(s.port, client_context(None, s.ca))
        await wait_until(lambda: s.stat("ssl.fail_verify_no_cert") == 1, "fail_verify_no_cert")
        await s.served()
        assert s.stat("ssl.no_certificate") == 0
        assert s.app.hits == 1


async def test_a_certificate_of_another_trust_domain_is_refused() -> None:
    async with strict() as s:
        outsider = s.ca.issue("spiffe://elsewhere.example/ns/test/sa/caller")
        assert not outsider.cert_chain.count(TRUST_DOMAIN)
        assert await refused(s.port, client_context(outsider, s.ca))
        await wait_until(lambda: s.stat("ssl.fail_verify_san") == 1, "fail_verify_san")
        await s.served()
        assert s.app.hits == 1


async def test_a_client_that_stops_mid_handshake_is_freed_by_the_timeout() -> None:
    async with strict() as s:
        hello = client_hello(client_context(s.ca.issue(CALLER), s.ca))
        stalled = [asyncio.ensure_future(raw_exchange(s.port, hello)) for _ in range(5)]
        # Served while they hang on.
        await s.served()
        answers = await asyncio.gather(*stalled)
        # Each got the server's flight, then the connection was cut at the deadline.
        assert all(a == b"<reset>" or a.startswith(b"\x16\x03") for a in answers), answers
        assert s.stat("ssl.connection_error") == 5
        assert s.stat("ssl.handshake") == 1
        await s.served()


async def test_a_client_that_says_nothing_is_freed_by_the_timeout() -> None:
    async with strict() as s:
        assert await raw_exchange(s.port, b"") in (b"", b"<reset>")
        assert s.stat("ssl.connection_error") == 1
        await s.served()


async def test_garbage_instead_of_a_client_hello_is_refused() -> None:
    async with strict() as s:
        # A TLS record header (so it is taken as TLS), then no ClientHello at all.
        garbage = b"\x16\x03\x01\x00\x20" + bytes(range(32)) + b"\xff" * 64
        answers = await asyncio.gather(*(raw_exchange(s.port, garbage) for _ in range(5)))
        # At most a TLS alert, never an HTTP answer.
        assert all(not a.startswith(b"HTTP") for a in answers)
        await wait_until(lambda: s.stat("ssl.connection_error") == 5, "connection_error")
        await s.served()
        assert s.app.hits == 1


async def test_a_tls_client_that_does_not_trust_the_sidecar_leaves_it_serving() -> None:
    async with strict() as s:
        # The client refuses the sidecar's certificate: the sidecar sees an alert.
        distrustful = tls_context(s.ca.issue(CALLER), trust=TestCA.create("other").pem)
        assert await refused(s.port, distrustful)
        await wait_until(lambda: s.stat("ssl.connection_error") == 1, "connection_error")
        await s.served()
