"""A redirected connection's original destination, and the hand-off to its listener.

iptables' REDIRECT rewrites a connection's destination to the sidecar's outbound port; the
kernel's connection tracking keeps the original, which SO_ORIGINAL_DST reads back (Envoy's
original_dst listener filter). A listener with `use_original_dst` gets an `OriginalDst`
protocol for each connection, which asks its router who serves that destination and hands the
transport over (`set_protocol`) before any byte has been read.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol, cast

# linux/netfilter_ipv4.h
SO_ORIGINAL_DST = 80

Address = tuple[str, int]


def original_dst(transport: asyncio.BaseTransport) -> Address | None:
    """Where the connection was going before it was redirected; for a connection that was
    not redirected, its own local address (or None where the kernel tracks no connections)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")


class Adopter(Protocol):
    """Takes over an accepted connection: makes its protocol the transport's."""

    def adopt(self, transport: asyncio.Transport) -> None: ...


class OriginalDst(asyncio.Protocol):
    """A use_original_dst listener's connection until it knows who serves it."""

    __slots__ = ("_route",)

    def __init__(self, route: Callable[[asyncio.Transport], Adopter]) -> None:
        self._route = route

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclasses, hence the cast.
        tcp = cast(asyncio.Transport, transport)
        # Called before the first read: the adopter sees every byte the client sends.
        self._route(tcp).adopt(tcp)
