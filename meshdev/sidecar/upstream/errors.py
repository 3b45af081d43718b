"""What the upstream client raises (see the package doc)."""


class ConnectFailure(Exception):
    """The upstream could not be connected: refused, unreachable, or connect_timeout."""


class UpstreamReset(Exception):
    """The upstream connection closed or reset before the response was complete."""


class PendingOverflow(Exception):
    """The cluster's pending-request queue is full (Envoy's upstream_rq_pending_overflow)."""


class ResponseTooLarge(Exception):
    """read_all(limit) met a body longer than limit."""
