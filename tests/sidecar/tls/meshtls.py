"""Two-sidecar meshes with mutual TLS between them, on loopback with real certificates.

A `callee` sidecar serves an app (a tests.sidecar.helpers.Upstream) on an inbound listener
whose mtls mode a test picks; a `caller` sidecar reaches it through its outbound listener and
a cluster with `tls`. Certificates come from a `TestCA` (meshdev/testing/certs.py) and are
installed as the admin API's POST /certs does (`Sidecar.install_certs`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.common.workload_certs import WorkloadCerts
from meshdev.sidecar.main import Sidecar
from meshdev.testing.certs import TestCA, spiffe, tls_context
from tests.sidecar.helpers import Upstream, endpoint, sidecar
from tests.support import LOCALHOST, WAIT, free_port

CALLER = spiffe("caller")
CALLEE = spiffe("callee")
# A handshake never takes this long on loopback; hostile tests shorten it to be freed soon.
HANDSHAKE_TIMEOUT = 10.0


def callee_config(
    app: Upstream,
    *,
    mtls: str = "STRICT",
    port: int | None = None,
    tcp: bool = False,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    version: int = 1,
    spiffe_id: str | None = CALLEE,
) -> SidecarConfig:
    """An inbound listener (HTTP, or tcp_proxy with `tcp`) in front of `app`."""
    listener: dict[str, Any] = {
        "name": "inbound",
        "kind": "inbound",
        "address": LOCALHOST,
        "port": port or free_port(),
        "cluster": "inbound|app",
        "mtls": mtls,
    }
    if tcp:
        listener["tcp_proxy"] = {
            "stat_prefix": "inbound|app",
            "clusters": [{"cluster": "inbound|app", "weight": 1}],
        }
    return SidecarConfig.model_validate(
        {
            "version": version,
            "mesh": "test",
            "node": "callee-0",
            "service": "callee",
            "spiffe_id": spiffe_id,
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": [listener],
            "clusters": [{"name": "inbound|app", "endpoints": [endpoint(app)]}],
            "limits": {"tls_handshake_timeout": handshake_timeout},
            "access_log": "off",
        }
    )


def caller_config(
    callee_port: int,
    *,
    spiffe_ids: tuple[str, ...] = (CALLEE,),
    cluster: dict[str, Any] | None = None,
    tcp_port: int | None = None,
    version: int = 1,
) -> SidecarConfig:
    """An outbound listener routing Host `callee` to the callee's inbound listener over mutual
    TLS (a tcp_proxy listener at `tcp_port` relays to it too, when given)."""
    c: dict[str, Any] = {
        "name": "callee",
        "endpoints": [{"address": LOCALHOST, "port": callee_port, "pod": "callee-0"}],
        "tls": {"spiffe_ids": list(spiffe_ids)},
    }
    c.update(cluster or {})
    listeners: list[dict[str, Any]] = [
        {"name": "outbound", "kind": "outbound", "address": LOCALHOST, "port": free_port()}
    ]
    if tcp_port is not None:
        listeners.append(
            {
                "name": "callee-tcp",
                "kind": "outbound",
                "address": LOCALHOST,
                "port": tcp_port,
                "tcp_proxy": {
                    "stat_prefix": "callee-tcp",
                    "clusters": [{"cluster": "callee", "weight": 1}],
                },
            }
        )
    return SidecarConfig.model_validate(
        {
            "version": version,
            "mesh": "test",
            "node": "caller-0",
            "service": "caller",
            "spiffe_id": CALLER,
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": listeners,
            "virtual_hosts": [
                {
                    "name": "callee",
                    "domains": ["callee"],
                    "routes": [{"name": "all", "clusters": [{"cluster": "callee", "weight": 1}]}],
                }
            ],
            "clusters": [c],
            "access_log": "off",
        }
    )


def install(sc: Sidecar, certs: WorkloadCerts) -> None:
    """What POST /certs does; fails the test if the sidecar refuses them."""
    reasons = sc.install_certs(certs)
    assert reasons == [], reasons


def port_of(sc: Sidecar, name: str = "inbound") -> int:
    return sc.listener_port(name)


@dataclass
class Mesh:
    ca: TestCA
    app: Upstream
    callee: Sidecar
    caller: Sidecar

    @property
    def outbound(self) -> str:
        return f"http://{LOCALHOST}:{self.caller.listener_port('outbound')}"


@asynccontextmanager
async def mesh(
    *, mtls: str = "STRICT", cluster: dict[str, Any] | None = None, certs: bool = True
) -> AsyncIterator[Mesh]:
    """An app behind a callee sidecar, called through a caller sidecar over mutual TLS."""
    ca = TestCA.create()
    app = await Upstream("app").start()
    try:
        async with sidecar(callee_config(app, mtls=mtls)) as callee:
            caller_cfg = caller_config(port_of(callee), cluster=cluster)
            async with sidecar(caller_cfg) as caller:
                if certs:
                    install(callee, ca.issue(CALLEE))
                    install(caller, ca.issue(CALLER))
                yield Mesh(ca, app, callee, caller)
    finally:
        await app.stop()


async def tls_request(
    port: int,
    context: ssl.SSLContext,
    request: bytes = b"GET / HTTP/1.1\r\nhost: callee\r\nconnection: close\r\n\r\n",
) -> bytes:
    """One HTTP/1.1 exchange over TLS with a plain ssl client; the whole answer (b"" when the
    connection was closed without one)."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port, ssl=context)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        with suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def refused(port: int, context: ssl.SSLContext, request: bytes = b"") -> bool:
    """Whether a TLS client with `context` gets no answer: the handshake fails, or the
    connection closes before any answer to `request` (TLS 1.3 clients learn of a refused
    certificate only when they read)."""
    try:
        answer = await tls_request(port, context, request or b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return True
    return answer == b""


def client_context(
    certs: WorkloadCerts | None, trust: TestCA, *, alpn: tuple[str, ...] = ()
) -> ssl.SSLContext:
    """A client's context: presenting `certs` (None: no certificate), trusting `trust`'s root
    (the mesh's CA, for a client that means to reach the sidecar)."""
    return tls_context(certs, alpn=alpn, trust=trust.pem)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 answer with a content-length: its head and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await asyncio.wait_for(reader.readexactly(length), WAIT)
