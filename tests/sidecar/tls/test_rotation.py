"""Certificate rotation: a new POST /certs is used by new handshakes at once, connections
already open keep theirs, and requests flowing through two sidecars meanwhile never fail."""

from __future__ import annotations

import asyncio
import itertools

from cryptography import x509

from meshdev.common.workload_certs import WorkloadCerts
from meshdev.testing.certs import TestCA
from tests.sidecar.helpers import client, get, sidecar, stat, upstreams
from tests.sidecar.tls.meshtls import (
    CALLEE,
    CALLER,
    callee_config,
    client_context,
    install,
    mesh,
    port_of,
    read_response,
)
from tests.support import LOCALHOST, wait_until

ROUNDS = 5
BURST = "/burst?hold=1"


def serial(certs: WorkloadCerts) -> int:
    return x509.load_pem_x509_certificate(certs.cert_chain.encode()).serial_number


async def test_requests_never_fail_while_both_sides_rotate_under_load() -> None:
    async with mesh() as m, client() as s:
        failures: list[object] = []
        done = 0

        async def one(path: str) -> None:
            nonlocal done
            try:
                status, _, _ = await get(s, m.outbound, path, host="callee")
            except Exception as exc:  # a failed request of any kind fails the test
                failures.append(exc)
                return
            done += 1
            if status != 200:
                failures.append(status)

        stop = asyncio.Event()

        async def steady() -> None:
            # Requests in flight across every rotation.
            while not stop.is_set():
                await one("/steady")

        background = [asyncio.ensure_future(steady()) for _ in range(2)]
        handshakes = [stat(m.caller, "cluster.callee.ssl.handshake")]
        try:
            for round_ in range(ROUNDS):
                install(m.callee, m.ca.issue(CALLEE))
                install(m.caller, m.ca.issue(CALLER))
                # A wider burst each round, held at the app until all of it is there at once:
                # the pool must open new connections, which handshake with the certificates
                # just installed, beside the ones made before.
                width = 4 * (round_ + 1)
                m.app._release = asyncio.Event()  # a fresh gate (release() opens it for good)
                arrived = m.app.seen_targets.count(BURST) + width
                burst = asyncio.gather(*(one(BURST) for _ in range(width)))

                def held(total: int = arrived) -> bool:
                    return m.app.seen_targets.count(BURST) == total

                await wait_until(held, "the whole burst held at the app")
                m.app.release()
                await burst
                handshakes.append(stat(m.caller, "cluster.callee.ssl.handshake"))
        finally:
            stop.set()
            await asyncio.gather(*background)
        assert failures == []
        assert done >= sum(4 * (r + 1) for r in range(ROUNDS))
        # New connections were made after every rotation, and every handshake succeeded.
        assert all(b > a for a, b in itertools.pairwise(handshakes)), handshakes
        inbound = f"listener.{LOCALHOST}_{port_of(m.callee)}.ssl."
        assert stat(m.callee, inbound + "handshake") == handshakes[-1]
        for name in ("connection_error", "fail_verify_error", "fail_verify_san"):
            assert stat(m.caller, f"cluster.callee.ssl.{name}") == 0
            assert stat(m.callee, inbound + name) == 0


async def test_open_connections_keep_their_certificate_and_new_ones_get_the_new_one() -> None:
    ca = TestCA.create()
    async with upstreams("app") as (app,), sidecar(callee_config(app)) as callee:
        old, new = ca.issue(CALLEE), ca.issue(CALLEE)
        install(callee, old)
        port = port_of(callee)
        context = client_context(ca.issue(CALLER), ca)
        request = b"GET /kept HTTP/1.1\r\nhost: callee\r\n\r\n"

        reader, writer = await asyncio.open_connection(LOCALHOST, port, ssl=context)
        writer.write(request)
        await read_response(reader)
        install(callee, new)
        fresh_reader, fresh_writer = await asyncio.open_connection(LOCALHOST, port, ssl=context)

        def seen(w: asyncio.StreamWriter) -> int:
            der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der).serial_number

        assert seen(writer) == serial(old)
        assert seen(fresh_writer) == serial(new)
        # The old connection still serves requests after the rotation.
        writer.write(request)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200")
        for w in (writer, fresh_writer):
            w.close()
        del fresh_reader
        assert app.seen_targets == ["/kept", "/kept"]
