"""Readiness of a tcp app behind a real sidecar's inbound tcp_proxy: the proxy accepts even
while its app does not, so the probe tells a relayed connection from one closed at once."""

from __future__ import annotations

import asyncio

import pytest

from meshdev.runtime.docker.ready import NotReady, Probe, wait_ready
from meshdev.runtime.readiness import tcp_relayed
from tests.sidecar.helpers import sidecar
from tests.sidecar.tcp.test_tcp_proxy import inbound_config
from tests.support import LOCALHOST, free_port


async def _no_exits() -> None:
    return None


async def test_a_tcp_app_is_ready_once_its_sidecar_relays_to_it() -> None:
    app_port = free_port()
    async with sidecar(inbound_config(app_port)) as sc:
        inbound = sc.listener_port("inbound")
        assert await tcp_relayed(LOCALHOST, inbound) == (
            False,
            "closed by the sidecar: its app does not accept connections yet",
        )
        admin = f"http://{LOCALHOST}:{sc.admin_port}"
        probe = Probe(admin, f"http://{LOCALHOST}:{inbound}", None, "tcp")
        with pytest.raises(NotReady) as caught:
            await wait_ready(probe, 0.3, _no_exits)
        assert caught.value.why == (
            "the app's port through the sidecar's inbound listener: closed by the sidecar: "
            "its app does not accept connections yet"
        )

        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read()
            w.close()

        app = await asyncio.start_server(silent, LOCALHOST, app_port)
        try:
            assert await tcp_relayed(LOCALHOST, inbound) == (True, "relayed")
            await wait_ready(probe, 5, _no_exits)
        finally:
            app.close()
            await app.wait_closed()


async def test_an_app_that_speaks_first_is_ready_at_once() -> None:
    async def greeter(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"5.7.0-mysql\x00")
        await r.read()
        w.close()

    app = await asyncio.start_server(greeter, LOCALHOST, 0)
    try:
        port = app.sockets[0].getsockname()[1]
        async with sidecar(inbound_config(port)) as sc:
            ok = await tcp_relayed(LOCALHOST, sc.listener_port("inbound"), settle=5)
            assert ok == (True, "relayed (the app spoke first)")
    finally:
        app.close()
        await app.wait_closed()


async def test_nothing_listening_is_not_ready() -> None:
    ok, why = await tcp_relayed(LOCALHOST, free_port())
    assert not ok
    assert "refused" in why.lower() or "connect" in why.lower()
