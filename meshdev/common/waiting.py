"""Waiting for an event with a deadline, without ever losing a cancellation.

`asyncio.wait_for` on Python 3.11 swallows a cancellation that arrives just as what it waits for
completes: it returns the result instead of raising CancelledError, and the task goes on as if
never cancelled. A loop around it (a stream's cadence, a watcher's) then never ends, and
whoever cancelled it and awaits it waits forever: a dashboard test hung that way in CI, once in
a few dozen runs under load. `asyncio.timeout` counts cancellations (Task.uncancel) and lets an
outside one through, so loops wait with it.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, `timeout` seconds at most (0 or less: no wait); whether it
    is set. A cancellation of the caller always propagates."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    return event.is_set()
