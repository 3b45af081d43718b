"""Authorization of a tcp service (Envoy's network RBAC filter): one decision per connection
by the peer's verified identity, on a STRICT tcp_proxy inbound listener with real certificates.
An allowed caller's bytes are relayed; another caller's connection is closed before anything
reaches the app, and both are counted under `tcp.<stat_prefix>.rbac.*`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.testing.certs import TestCA, spiffe
from tests.sidecar.helpers import Upstream, sidecar, stat
from tests.sidecar.tls.meshtls import (
    CALLEE,
    CALLER,
    callee_config,
    client_context,
    install,
    port_of,
)
from tests.sidecar.tls.test_inbound import echo_app
from tests.support import LOCALHOST, WAIT

OTHER = spiffe("other")


def with_policies(config: SidecarConfig, policies: Sequence[Mapping[str, Any]]) -> SidecarConfig:
    data = config.model_dump(mode="json")
    data["listeners"][0]["authorization"] = list(policies)
    return SidecarConfig.model_validate(data)


async def exchange(port: int, context: object) -> bytes:
    reader, writer = await asyncio.open_connection(LOCALHOST, port, ssl=context)
    try:
        writer.write(b"hello")
        with suppress(ConnectionResetError):
            return await asyncio.wait_for(reader.read(100), WAIT)
        return b""
    finally:
        writer.close()


async def test_a_tcp_service_admits_connections_by_the_callers_identity() -> None:
    ca = TestCA.create()
    app_server = await echo_app()
    try:
        app = Upstream("tcp-app", port=app_server.sockets[0].getsockname()[1])
        only_caller = [
            {
                "name": "caller-only",
                "action": "ALLOW",
                "rules": [{"principals": [CALLER.removeprefix("spiffe://")]}],
            }
        ]
        config = with_policies(callee_config(app, mtls="STRICT", tcp=True), only_caller)
        async with sidecar(config) as callee:
            install(callee, ca.issue(CALLEE))
            port = port_of(callee)
            allowed = await exchange(port, client_context(ca.issue(CALLER), ca))
            assert allowed == b"echo:hello"
            denied = await exchange(port, client_context(ca.issue(OTHER), ca))
            assert denied == b""
            assert stat(callee, "tcp.inbound|app.rbac.allowed") == 1
            assert stat(callee, "tcp.inbound|app.rbac.denied") == 1
            # The denied connection never reached the app: one relayed connection only.
            assert stat(callee, "cluster.inbound|app.upstream_cx_total") == 1

            # A DENY policy naming the caller wins over the ALLOW (a hot swap, next connection).
            deny = [
                *only_caller,
                {
                    "name": "no-caller",
                    "action": "DENY",
                    "rules": [{"principals": [CALLER.removeprefix("spiffe://")]}],
                },
            ]
            callee.apply(
                with_policies(
                    callee_config(app, mtls="STRICT", tcp=True, port=port, version=2), deny
                )
            )
            assert await exchange(port, client_context(ca.issue(CALLER), ca)) == b""
            assert stat(callee, "tcp.inbound|app.rbac.denied") == 2
    finally:
        app_server.close()
        await app_server.wait_closed()
