"""A frame budget: paint a new view only when the process can afford it.

Drawing a frame costs CPU in proportion to what changed; with every number of 20 routes
changing 4 times a second, painting every view would cost more than the dashboard's budget
(10% of one core) on a modest machine. The pacer spaces frames so that the CPU the process
spent since the last frame stays under `share` of the wall time in between: cheap frames go
out at the views' own rate, expensive ones (or a slow machine) get fewer frames, never fewer
than one a `max_wait`. Views that arrive meanwhile wait in the mailbox, where only the newest
is kept (events are never dropped). Keys are not paced: they are painted at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
# Waits shorter than this are not worth a timer, and Textual's one-shot timer never fires
# at all when its delay has passed before its task first looks at the clock.
MIN_WAIT = 0.005


class FramePacer:
    def __init__(
        self,
        share: float = 0.1,
        max_wait: float = 1.0,
        wall: Clock = time.monotonic,
        cpu: Clock = time.process_time,
    ) -> None:
        self.share = share
        self.max_wait = max_wait
        self._wall = wall
        self._cpu = cpu
        self._last: tuple[float, float] | None = None
        self.deferred = 0  # views that had to wait for the budget

    def delay(self) -> float:
        """Seconds to wait before painting the next view (0: paint now)."""
        if self._last is None:
            return 0.0
        wall0, cpu0 = self._last
        elapsed = self._wall() - wall0
        allowed = (self._cpu() - cpu0) / self.share
        wait = min(allowed, self.max_wait) - elapsed
        if wait < MIN_WAIT:
            return 0.0
        self.deferred += 1
        return wait

    def painted(self) -> None:
        """A frame starts now: its cost counts against the next one's start."""
        self._last = (self._wall(), self._cpu())
