"""A cluster's circuit breaker as the admin API reports it: the one shape both sides share.

The sidecar fills it from its live breakers and sends its fields, in this order, as each
`breakers[]` entry of /stats/stream; the dashboard's telemetry reads those entries (and Envoy's
`/clusters?format=json`) back into it. It lives below both so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A cluster's circuit breaker: limits, what is in use now, and which limits are open."""

    cluster: str
    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int
    cx_active: int
    rq_pending_active: int
    rq_active: int
    rq_retry_active: int
    cx_open: bool
    rq_pending_open: bool
    rq_open: bool
    rq_retry_open: bool
