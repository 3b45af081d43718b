"""Probes both runtimes share: is a sidecar ready, does an app answer its health path."""

from __future__ import annotations

import asyncio
import contextlib

from meshdev.runtime import loopback


async def http_ok(url: str, timeout: float = 1.0) -> bool:
    """A 2xx answer to GET url (straight to the address: no proxy from the environment)."""
    try:
        answer = await loopback.request("GET", url, timeout=timeout)
    except (OSError, TimeoutError):
        return False
    return 200 <= answer.status < 300


async def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
