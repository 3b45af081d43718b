"""The original_dst hand-off on real loopback sockets: a connection accepted by the outbound
listener goes to the listener of its original destination (a tcp service's virtual address, a
port's 0.0.0.0 HTTP listener), through unchanged to a destination that is no service, or stays
with the outbound listener when it was made to it directly (HTTP_PROXY).

The kernel's answer to SO_ORIGINAL_DST needs iptables in a network namespace of its own; that
path runs for real in tests/e2e/test_capture_docker.py. Here the one seam is the lookup: each
test connection's source port is mapped to the destination the kernel would report."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar import main as sidecar_main
from meshdev.sidecar.capture import passthrough
from meshdev.sidecar.capture.hosts import MARK
from meshdev.sidecar.capture.original_dst import Address, original_dst
from tests.sidecar.helpers import endpoint, sidecar, stat, upstreams
from tests.sidecar.tcp.test_tcp_proxy import App, echo
from tests.support import LOCALHOST, free_port

VIP_CACHE = "198.18.0.7"
VIP_BACKEND = "198.18.0.9"


@pytest.fixture
def redirected(monkeypatch: pytest.MonkeyPatch) -> dict[int, Address]:
    """Client source port -> the original destination the kernel reports for it."""
    table: dict[int, Address] = {}

    def lookup(transport: asyncio.BaseTransport) -> Address | None:
        peer = transport.get_extra_info("peername")
        if peer[1] in table:
            return table[peer[1]]
        return original_dst(transport)  # the real call: a connection not redirected

    monkeypatch.setattr(sidecar_main, "original_dst", lookup)
    monkeypatch.setattr(passthrough, "original_dst", lookup)
    return table


def _config(
    outbound_port: int,
    backend: list[dict[str, Any]],
    cache_port: int,
    *,
    addresses: dict[str, str] | None = None,
    hosts_file: str | None = None,
    version: int = 1,
) -> SidecarConfig:
    route = {
        "name": "all",
        "match": {"prefix": "/"},
        "clusters": [{"cluster": "backend", "weight": 1}],
    }
    return SidecarConfig.model_validate(
        {
            "version": version,
            "mesh": "test",
            "node": "caller-0",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "access_log": "off",
            "listeners": [
                {
                    "name": "outbound",
                    "kind": "outbound",
                    "address": LOCALHOST,
                    "port": outbound_port,
                    "use_original_dst": True,
                },
                {
                    "name": "outbound|6379|cache",
                    "kind": "outbound",
                    "address": VIP_CACHE,
                    "port": 6379,
                    "bind_to_port": False,
                    "tcp_proxy": {
                        "stat_prefix": "cache",
                        "clusters": [{"cluster": "cache", "weight": 1}],
                    },
                },
                {
                    "name": "0.0.0.0_80",
                    "kind": "outbound",
                    "address": "0.0.0.0",
                    "port": 80,
                    "bind_to_port": False,
                },
            ],
            "virtual_hosts": [{"name": "backend", "domains": ["backend"], "routes": [route]}],
            "clusters": [
                {"name": "backend", "endpoints": backend},
                {"name": "cache", "endpoints": [{"address": LOCALHOST, "port": cache_port}]},
            ],
            "service_addresses": addresses
            if addresses is not None
            else {"backend": VIP_BACKEND, "cache": VIP_CACHE},
            "hosts_file": hosts_file,
        }
    )


async def _open(
    port: int, table: dict[int, Address], dst: Address | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect from a known source port, first telling the table where it 'was going'."""
    sock = socket.socket()
    sock.bind((LOCALHOST, 0))
    if dst is not None:
        table[sock.getsockname()[1]] = dst
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (LOCALHOST, port))
    return await asyncio.open_connection(sock=sock)


async def _http_get(port: int, table: dict[int, Address], dst: Address | None) -> bytes:
    r, w = await _open(port, table, dst)
    w.write(b"GET /x HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n")
    data = await r.read()
    w.close()
    return data


async def _line_exchange(port: int, table: dict[int, Address], dst: Address) -> bytes:
    r, w = await _open(port, table, dst)
    w.write(b"ping\n")
    data = await asyncio.wait_for(r.readline(), 10)
    w.close()
    return data


async def test_captured_connections_go_to_their_destinations_listener(
    redirected: dict[int, Address],
) -> None:
    cache = await App(echo).start()
    outside = await App(echo).start()
    port = free_port()
    try:
        async with (
            upstreams("b1") as (b1,),
            sidecar(_config(port, [endpoint(b1)], cache.port)) as sc,
        ):
            # A tcp service's virtual address: its tcp_proxy listener relays it.
            assert await _line_exchange(port, redirected, (VIP_CACHE, 6379)) == b"ping\n"
            assert stat(sc, "tcp.cache.downstream_cx_total") == 1
            assert cache.connections == 1

            # An HTTP service's address on port 80: the 0.0.0.0_80 listener, routed by Host.
            answer = await _http_get(port, redirected, (VIP_BACKEND, 80))
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert stat(sc, "http.0.0.0.0_80.downstream_rq_total") == 1
            assert stat(sc, "cluster.backend.upstream_rq_total") == 1

            # Made to the outbound listener itself (HTTP_PROXY): served there.
            answer = await _http_get(port, redirected, None)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert stat(sc, "http.outbound.downstream_rq_total") == 1

            # No service lives there: relayed to where it was going, unchanged.
            assert await _line_exchange(port, redirected, (LOCALHOST, outside.port)) == b"ping\n"
            assert outside.connections == 1
            assert stat(sc, "cluster.PassthroughCluster.upstream_cx_total") == 1

            # Passed through to where nothing listens: the connect fails, the client is closed.
            dead = free_port()
            r, w = await _open(port, redirected, (LOCALHOST, dead))
            assert await asyncio.wait_for(r.read(), 10) == b""
            w.close()
            assert stat(sc, "cluster.PassthroughCluster.upstream_cx_connect_fail") == 1
            assert stat(sc, "tcp.cache.downstream_cx_total") == 1
    finally:
        await cache.stop()
        await outside.stop()


async def test_the_hosts_file_follows_the_services(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n172.19.0.3\tcaller-0\n")
    inode = hosts.stat().st_ino
    port = free_port()
    first = {"backend": VIP_BACKEND, "backend.test": VIP_BACKEND}
    cfg = _config(port, [], free_port(), addresses=first, hosts_file=str(hosts))
    async with sidecar(cfg) as sc:
        assert hosts.read_text().splitlines() == [
            "127.0.0.1\tlocalhost",
            "172.19.0.3\tcaller-0",
            f"{VIP_BACKEND}\tbackend backend.test\t{MARK}",
        ]
        more = {**first, "cache": VIP_CACHE}
        sc.apply(_config(port, [], free_port(), addresses=more, hosts_file=str(hosts), version=2))
        lines = hosts.read_text().splitlines()
        assert lines[2:] == [
            f"{VIP_BACKEND}\tbackend backend.test\t{MARK}",
            f"{VIP_CACHE}\tcache\t{MARK}",
        ]
        # Docker's lines stay, and the file is the same file (a bind mount cannot be renamed).
        assert lines[:2] == ["127.0.0.1\tlocalhost", "172.19.0.3\tcaller-0"]
        assert hosts.stat().st_ino == inode
        assert stat(sc, "capture.hosts_write_failure") == 0


async def test_an_unwritable_hosts_file_is_counted_not_fatal(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "hosts"
    port = free_port()
    cfg = _config(port, [], free_port(), hosts_file=str(missing))
    async with sidecar(cfg) as sc:
        # At start it is not yet the sidecar's (the capture step hands it over later).
        assert stat(sc, "capture.hosts_write_failure") == 0
        more = {"backend": VIP_BACKEND, "cache": VIP_CACHE, "new": "198.18.0.11"}
        sc.apply(_config(port, [], free_port(), addresses=more, hosts_file=str(missing), version=2))
        assert stat(sc, "capture.hosts_write_failure") == 1
        # Still serving: the swap happened.
        assert sc.config.version == 2
