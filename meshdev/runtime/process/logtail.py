"""Reading log files the process runtime writes: the last lines, or follow as they grow."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

_CHUNK = 64 * 1024


def tail(path: Path, n: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _CHUNK))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return list(deque(lines, maxlen=n))


async def follow(path: Path, poll: float = 0.1) -> AsyncIterator[str]:
    """Every line of the file from its start, then new lines as they are written."""
    while not path.exists():
        await asyncio.sleep(poll)
    with path.open("rb") as f:
        pending = b""
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                await asyncio.sleep(poll)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode(errors="replace").rstrip("\r")
