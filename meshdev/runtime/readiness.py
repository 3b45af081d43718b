"""Probes both runtimes share: is a sidecar ready, does an app answer its health path."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp


async def http_ok(session: aiohttp.ClientSession, url: str, timeout: float = 1.0) -> bool:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            await resp.read()
            return 200 <= resp.status < 300
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def direct_session() -> aiohttp.ClientSession:
    # Probes go straight to loopback addresses; a user's HTTP_PROXY must not catch them.
    return aiohttp.ClientSession(trust_env=False)
