"""Request timeouts without a timer per request.

A route timeout and a per-try timeout per request, each as its own `loop.call_at` handle,
cost more than the rest of the request pipeline together (a uvloop timer is a libuv handle
that is opened, started, stopped and closed). Instead every deadline joins one set, and one
sweep every TICK seconds cancels the tasks whose deadline has passed. A deadline therefore
fires up to TICK late; arming and disarming one is a set insertion and removal.

A fired deadline cancels its task; the handler sees CancelledError, checks `fired` to tell a
timeout from the client leaving, and calls `absorb()` when it handles the timeout itself.
"""

from __future__ import annotations

import asyncio
from typing import Final

TICK: Final = 0.005


class Deadline:
    __slots__ = ("fired", "task", "when")

    def __init__(self, task: asyncio.Task[object], when: float) -> None:
        self.task = task
        self.when = when
        self.fired = False

    def absorb(self) -> None:
        """The timeout has been handled: the task is no longer being cancelled by it."""
        self.task.uncancel()


class Deadlines:
    """The live deadlines of one event loop, swept every TICK seconds while there are any."""

    def __init__(self, tick: float = TICK) -> None:
        self._tick = tick
        self._live: set[Deadline] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeping = False

    def arm(self, task: asyncio.Task[object], when: float) -> Deadline:
        d = Deadline(task, when)
        self._live.add(d)
        if not self._sweeping:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._sweeping = True
            loop.call_at(loop.time() + self._tick, self._sweep)
        return d

    def disarm(self, d: Deadline) -> None:
        self._live.discard(d)

    def __len__(self) -> int:
        return len(self._live)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        live = self._live
        due = [d for d in live if d.when <= now]
        if due:
            cancelled: set[asyncio.Task[object]] = set()
            for d in due:
                live.discard(d)
                d.fired = True
                # Two deadlines of one task due together (route and per-try) cancel it once.
                if d.task not in cancelled:
                    cancelled.add(d.task)
                    d.task.cancel()
        if live:
            loop.call_at(now + self._tick, self._sweep)
        else:
            self._sweeping = False
