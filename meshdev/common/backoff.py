"""Reconnect delays: exponential with "full jitter" (AWS's name), as Envoy's own retries.

Full jitter draws each delay uniformly from [0, min(cap, base * 2^n)), so many dashboards (or
many sidecars' clients) that lost the same server do not come back in lock-step.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    __slots__ = ("_attempt", "_random", "base", "cap")

    def __init__(
        self, base: float = 0.1, cap: float = 5.0, rand: Callable[[], float] = random.random
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._random = rand
        self._attempt = 0

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling up to the cap."""
        ceiling = min(self.cap, self.base * 2.0 ** min(self._attempt, 32))
        self._attempt += 1
        return self._random() * ceiling

    def reset(self) -> None:
        """A success: the next failure starts from the base again."""
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt
