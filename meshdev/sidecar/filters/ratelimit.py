"""Local rate limit: a token bucket per route (Envoy's local_ratelimit filter).

The bucket holds up to `burst` tokens and refills continuously at `requests_per_second`
(Envoy refills in steps of `tokens_per_fill` each `fill_interval`; a continuous refill is the
limit of small steps and needs no timer). A request takes one token or is answered 429 with
`x-envoy-ratelimited: true`, flag `RL`, and `http_local_rate_limit.rate_limited` counts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from meshdev.common.sidecar_config import RateLimit


class TokenBucket:
    __slots__ = ("_clock", "_last", "_rate", "_tokens", "burst", "limits")

    def __init__(self, limits: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.burst = float(limits.burst)
        self._rate = limits.requests_per_second
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def try_take(self) -> bool:
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self._rate
        tokens = min(tokens, self.burst)
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    @property
    def tokens(self) -> float:
        now = self._clock()
        return min(self.burst, self._tokens + (now - self._last) * self._rate)
