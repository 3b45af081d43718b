"""Exponential backoff with "full jitter" (AWS's name), the way Envoy spaces its retries.

The n-th delay since the last reset is drawn uniformly from [0, min(cap, base * 2^n)), so many
clients that failed together do not come back in lock-step. Two users, each with its own
numbers: the data plane between the tries of a request (Envoy's RetryBackOff: 25 ms base, cap
10x base, see envoy_defaults.py), and the dashboard reconnecting to a sidecar it lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """One sequence of delays. The data plane makes one per retried request and calls
    `next_delay` before each retry, so both stay a few operations."""

    __slots__ = ("_ceiling", "_half_cap", "_random", "base", "cap")

    def __init__(self, base: float, cap: float, rand: Callable[[], float] = random.random) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._random = rand
        self._ceiling = base
        # Doubling a ceiling below half the cap stays below the cap; above it the cap is next.
        # One comparison per delay instead of min(cap, base * 2 ** n).
        self._half_cap = cap / 2

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling up to the cap."""
        ceiling = self._ceiling
        self._ceiling = ceiling * 2 if ceiling < self._half_cap else self.cap
        return self._random() * ceiling

    def reset(self) -> None:
        """A success: the next failure starts from the base again."""
        self._ceiling = self.base
