"""A cluster's request and retry circuit breakers (Envoy's `requests` and `retries` resources).

`max_connections` and `max_pending_requests` live with the connection budget (the upstream client);
this keeps the two limits the router checks itself:
- `max_requests`: requests in flight on the cluster, charged per try. At the limit a new try
  fails at once; Envoy counts that as `upstream_rq_pending_overflow` (its connection pool does
  the check), answers 503 with `x-envoy-overloaded: true` and flags `UO`.
- `max_retries`: retries in their backoff at once. Over the limit the retry is not made
  (`upstream_rq_retry_overflow`) and the last upstream answer goes back flagged `UO`.
The `circuit_breakers.default.*_open` gauges read 1 while a resource is at its limit.
"""

from __future__ import annotations

from meshdev.common.sidecar_config import CircuitBreaker
from meshdev.sidecar.stats.store import Store


class Breaker:
    __slots__ = (
        "max_requests",
        "max_retries",
        "retry_active",
        "retry_open",
        "retry_overflow",
        "rq_active",
        "rq_open",
        "rq_overflow",
    )

    def __init__(self, store: Store, cluster: str, limits: CircuitBreaker) -> None:
        p = f"cluster.{cluster}."
        self.rq_active = store.gauge(p + "upstream_rq_active")
        self.retry_active = store.gauge(p + "upstream_rq_retry_active")
        self.rq_open = store.gauge(p + "circuit_breakers.default.rq_open")
        self.retry_open = store.gauge(p + "circuit_breakers.default.rq_retry_open")
        self.rq_overflow = store.counter(p + "upstream_rq_pending_overflow")
        self.retry_overflow = store.counter(p + "upstream_rq_retry_overflow")
        self.max_requests = limits.max_requests
        self.max_retries = limits.max_retries
        self._refresh()

    def update(self, limits: CircuitBreaker) -> None:
        self.max_requests = limits.max_requests
        self.max_retries = limits.max_retries
        self._refresh()

    def _refresh(self) -> None:
        self.rq_open.value = 1 if self.rq_active.value >= self.max_requests else 0
        self.retry_open.value = 1 if self.retry_active.value >= self.max_retries else 0

    def try_request(self) -> bool:
        active = self.rq_active
        if active.value >= self.max_requests:
            self.rq_overflow.value += 1
            return False
        active.value += 1
        if active.value >= self.max_requests:
            self.rq_open.value = 1
        return True

    def end_request(self) -> None:
        active = self.rq_active
        active.value -= 1
        if active.value < self.max_requests:
            self.rq_open.value = 0

    def try_retry(self) -> bool:
        active = self.retry_active
        if active.value >= self.max_retries:
            self.retry_overflow.value += 1
            return False
        active.value += 1
        if active.value >= self.max_retries:
            self.retry_open.value = 1
        return True

    def end_retry(self) -> None:
        active = self.retry_active
        active.value -= 1
        if active.value < self.max_retries:
            self.retry_open.value = 0
