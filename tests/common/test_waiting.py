"""common/waiting.py: a wait with a deadline that never swallows a cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshdev.common.waiting import wait_set


async def test_a_cancellation_as_the_event_is_set_goes_through() -> None:
    # The race asyncio.wait_for loses on Python 3.11: the event is set and the waiter is
    # cancelled in the same turn of the loop, before the waiter runs again.
    for _ in range(50):
        event = asyncio.Event()
        waiter = asyncio.create_task(wait_set(event, 10))
        await asyncio.sleep(0)  # it waits now
        event.set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_it_answers_whether_the_event_came_before_the_deadline() -> None:
    event = asyncio.Event()
    started = time.monotonic()
    assert await wait_set(event, 0.05) is False
    assert time.monotonic() - started >= 0.04
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 10) is True
    assert await wait_set(event, -1) is True  # set already: no wait, whatever the deadline
    assert await wait_set(asyncio.Event(), -1) is False
