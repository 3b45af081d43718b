"""A push that makes a caller send TLS answers only once the plaintext requests it had under way
have their answers (DataPlane.settle, admin POST /config).

That answer is what lets the control plane push round 3 of a TLS turn-on (STRICT, and
authorization by identity) to the callees (meshdev/security/staging.py). Measured under load
before: a request connecting, or already sent, on the caller's plaintext pool as it was
retired reached the callee's sidecar tens of milliseconds later, on a busy machine, after the
callee had applied round 3: a plaintext connection accepted then was refused (STRICT: the
gateway answered `503 UC`), and a request read then on a connection accepted under PERMISSIVE
had no principal (403 from an `ALLOW from: {services: [caller]}`).

Here the callee is a stand-in that accepts connections but reads nothing until the test lets
it: a sidecar whose loop has not got to them yet. So the race is deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiohttp import ClientSession

from meshdev.common.sidecar_config import Fault, SidecarConfig
from meshdev.sidecar import dataplane
from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import client, get, listener_url, sidecar, stat
from tests.sidecar.tls.meshtls import caller_config, mesh, port_of
from tests.support import LOCALHOST, WAIT, wait_until

# Long enough that a push which does not wait has answered (it answers in milliseconds).
NOT_YET = 0.3


class StallingCallee:
    """Plaintext HTTP/1.1 that accepts connections and reads nothing until `release` is set,
    then answers 200 to each request."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> StallingCallee:
        self.server = await asyncio.start_server(self._serve, LOCALHOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.release.set()
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        await self.release.wait()
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def tls_on(callee_port: int) -> SidecarConfig:
    """The caller's round 2: its cluster to the callee sends TLS."""
    return caller_config(callee_port, version=2)


def plaintext(cfg: SidecarConfig, **cluster: Any) -> SidecarConfig:
    """`cfg` with its cluster to the callee plaintext (the caller before the turn-on)."""
    clusters = tuple(c.model_copy(update={"tls": None, **cluster}) for c in cfg.clusters)
    return cfg.model_copy(update={"version": 1, "clusters": clusters})


async def push(s: ClientSession, sc: Sidecar, cfg: SidecarConfig) -> int:
    url = f"http://{sc.config.admin.address}:{sc.admin_port}/config"
    body = cfg.model_dump_json()
    async with s.post(url, data=body, headers={"x-meshdev-token": "test-token"}) as resp:
        await resp.read()
        return resp.status


async def test_a_push_turning_tls_on_answers_once_plaintext_requests_under_way_are_answered() -> (
    None
):
    async with StallingCallee() as callee:
        target = tls_on(callee.port)
        async with sidecar(plaintext(target)) as caller, client() as s:
            call = asyncio.create_task(get(s, listener_url(caller), "/", host="callee"))
            # The request is under way in plaintext: connected, not yet read by the callee.
            await asyncio.wait_for(callee.connected.wait(), WAIT)
            answer = asyncio.create_task(push(s, caller, target))
            await asyncio.sleep(NOT_YET)
            # In force (new requests would go over TLS), but not answered: the control plane
            # must not make the callee STRICT yet.
            assert caller.config.version == 2
            assert not answer.done()
            callee.release.set()
            status, _, body = await asyncio.wait_for(call, WAIT)
            assert (status, body) == (200, b"ok")
            assert await asyncio.wait_for(answer, WAIT) == 200


async def test_a_request_the_callee_never_answers_holds_the_push_only_up_to_a_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dataplane, "SETTLE_LIMIT", 0.2)
    async with StallingCallee() as callee:
        target = tls_on(callee.port)
        async with sidecar(plaintext(target)) as caller, client() as s:
            call = asyncio.create_task(get(s, listener_url(caller), "/", host="callee"))
            await asyncio.wait_for(callee.connected.wait(), WAIT)
            assert await asyncio.wait_for(push(s, caller, target), WAIT) == 200
            assert not call.done()
            callee.release.set()
            status, _, _ = await asyncio.wait_for(call, WAIT)
            assert status == 200


async def test_a_push_that_leaves_tls_off_does_not_wait_for_requests_under_way() -> None:
    async with StallingCallee() as callee:
        target = tls_on(callee.port)
        before = plaintext(target)
        # The endpoint changes (a new pod), still plaintext: the old pool drains as ever, and
        # the push answers at once.
        moved = plaintext(target, endpoints=()).model_copy(update={"version": 2})
        async with sidecar(before) as caller, client() as s:
            call = asyncio.create_task(get(s, listener_url(caller), "/", host="callee"))
            await asyncio.wait_for(callee.connected.wait(), WAIT)
            assert await asyncio.wait_for(push(s, caller, moved), NOT_YET) == 200
            callee.release.set()
            status, _, _ = await asyncio.wait_for(call, WAIT)
            assert status == 200


async def test_a_request_that_read_the_plaintext_config_goes_over_tls_after() -> None:
    """A request still on its way to picking an endpoint when TLS is turned on (here a fault's
    delay; a retry's backoff alike) counts in no pool, so the push does not wait for it: it
    goes to the endpoint's new pool, in TLS, not to the retired plaintext one."""
    delay = {"delay": {"fixed": 0.5, "percent": 100}}
    async with mesh(mtls="PERMISSIVE") as m, client() as s:
        target = m.caller.config

        def delayed(cfg: SidecarConfig) -> SidecarConfig:
            vhosts = tuple(
                v.model_copy(
                    update={
                        "routes": tuple(
                            r.model_copy(update={"fault": Fault.model_validate(delay)})
                            for r in v.routes
                        )
                    }
                )
                for v in cfg.virtual_hosts
            )
            return cfg.model_copy(update={"virtual_hosts": vhosts})

        assert await push(s, m.caller, delayed(plaintext(target))) == 200
        call = asyncio.create_task(get(s, m.outbound, "/late", host="callee"))
        # Past the request's start (it runs on the plaintext config) but within its delay.
        await wait_until(
            lambda: stat(m.caller, "http.outbound.downstream_rq_total") == 1, "the request"
        )
        on = delayed(target).model_copy(update={"version": 3})
        assert await push(s, m.caller, on) == 200
        status, _, _ = await asyncio.wait_for(call, WAIT)
        assert status == 200
        assert m.app.seen_targets == ["/late"]
        # It crossed over mutual TLS (the callee takes plaintext too: PERMISSIVE).
        assert stat(m.caller, "cluster.callee.ssl.handshake") == 1
        assert stat(m.callee, f"listener.{LOCALHOST}_{port_of(m.callee)}.ssl.handshake") == 1


async def test_a_push_turning_tls_off_answers_once_tls_requests_under_way_are_answered() -> None:
    """The other way (a save that removes `security`, staging.py's winding_down): the callee
    stops taking TLS only after the push that makes the caller send plaintext has answered, so
    that answer waits for the TLS requests the caller had under way."""
    async with mesh(mtls="PERMISSIVE") as m, client() as s:
        on = m.caller.config
        call = asyncio.create_task(get(s, m.outbound, "/?hold=1", host="callee"))
        await wait_until(lambda: m.app.seen_targets == ["/?hold=1"], "the request at the app")
        off = plaintext(on).model_copy(update={"version": on.version + 1})
        answer = asyncio.create_task(push(s, m.caller, off))
        await asyncio.sleep(NOT_YET)
        assert m.caller.config.version == off.version
        assert not answer.done()
        m.app.release()
        status, _, _ = await asyncio.wait_for(call, WAIT)
        assert status == 200
        assert await asyncio.wait_for(answer, WAIT) == 200
        assert stat(m.caller, "cluster.callee.ssl.handshake") == 1
