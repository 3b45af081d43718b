"""Envoy's retry policy: which outcomes are retried, and how long to wait between tries.

`retry_on` as Envoy reads it (source/common/router/retry_state_impl.cc):
- `5xx`: any 5xx answer, and any failure without an answer (connect failure, reset,
  per-try timeout);
- `gateway-error`: a 502, 503 or 504 answer, and likewise any failure without an answer;
- `reset`: a failure without an answer (disconnect, reset, per-try timeout, connect failure);
- `connect-failure`: a failed or timed-out connect only;
- `retriable-4xx`: a 409 answer;
- `retriable-status-codes`: an answer whose status is in `retriable_status_codes`;
- `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable` (Envoy's
  x-envoy-retry-grpc-on): a gRPC answer whose head carries that grpc-status (trailers-only).
An answer carrying `x-envoy-overloaded` or `x-envoy-ratelimited` is never retried, and neither
is a local circuit-breaker overflow.

The wait is Envoy's "full jitter" (`meshdev.common.backoff.Backoff`, one per request): before
retry n (from 1) a uniform draw in [0, min(base * 2^(n-1), max)), from the policy's
`base_interval` and `max_interval` (Envoy's 25 ms and 10x that by default).
"""

from __future__ import annotations

import enum

from meshdev.common.sidecar_config import RetryPolicy


class Failure(enum.Enum):
    """A try that ended without an upstream answer."""

    CONNECT_FAILURE = "connect-failure"
    RESET = "reset"
    PER_TRY_TIMEOUT = "per-try-timeout"


GATEWAY_ERRORS = frozenset({502, 503, 504})
# Envoy's retry_on gRPC conditions and the grpc-status each retries.
GRPC_RETRY_ON = {
    "cancelled": 1,
    "deadline-exceeded": 4,
    "resource-exhausted": 8,
    "internal": 13,
    "unavailable": 14,
}


class RetryRules:
    """A compiled RetryPolicy."""

    __slots__ = (
        "base_interval",
        "grpc_codes",
        "max_interval",
        "num_retries",
        "on_5xx",
        "on_connect_failure",
        "on_gateway_error",
        "on_reset",
        "per_try_timeout",
        "status_codes",
    )

    def __init__(self, policy: RetryPolicy) -> None:
        kinds = set(policy.retry_on)
        self.num_retries = policy.attempts
        self.on_5xx = "5xx" in kinds
        self.on_gateway_error = "gateway-error" in kinds
        self.on_reset = "reset" in kinds
        self.on_connect_failure = "connect-failure" in kinds
        codes: set[int] = set()
        if "retriable-4xx" in kinds:
            codes.add(409)
        if "retriable-status-codes" in kinds:
            codes.update(policy.retriable_status_codes)
        self.status_codes = frozenset(codes)
        # As strings: compared with the grpc-status header as it comes.
        self.grpc_codes = frozenset(str(GRPC_RETRY_ON[k]) for k in kinds if k in GRPC_RETRY_ON)
        self.per_try_timeout = policy.per_try_timeout
        self.base_interval = policy.base_interval
        self.max_interval = max(policy.max_interval, policy.base_interval)

    def retry_status(self, status: int) -> bool:
        """Whether an answer with `status` is retried (the caller vetoes x-envoy-overloaded
        and x-envoy-ratelimited answers first)."""
        if status >= 500:
            if self.on_5xx:
                return True
            if self.on_gateway_error and status in GATEWAY_ERRORS:
                return True
        return status in self.status_codes

    def retry_grpc(self, headers: list[tuple[str, str]]) -> bool:
        """Whether a gRPC answer is retried for its grpc-status: only one in the head (a
        trailers-only answer, how a server refuses at once) can be, as in Envoy, since
        trailers come after the body has gone downstream."""
        codes = self.grpc_codes
        if not codes:
            return False
        for k, v in headers:
            if k == "grpc-status":
                return v in codes
        return False

    def retry_failure(self, failure: Failure) -> bool:
        if self.on_5xx or self.on_gateway_error or self.on_reset:
            return True
        return self.on_connect_failure and failure is Failure.CONNECT_FAILURE
