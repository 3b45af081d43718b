"""One endpoint of a cluster, kept across config swaps while the endpoint stays."""

from __future__ import annotations

from meshdev.sidecar.upstream import UpstreamPool
from meshdev.sidecar.upstream.outlier import HostHealth


class Host(HostHealth):
    """An endpoint's pool, outlier state and request counts (the balancers' `LbHost`)."""

    __slots__ = (
        "_seen_connect_fail",
        "_seen_cx_total",
        "address",
        "cluster",
        "key",
        "pod",
        "pool",
        "port",
        "removed",
        "rq_active",
        "rq_error",
        "rq_success",
        "rq_total",
        "successor",
        "tcp_cx_active",
    )

    def __init__(self, cluster: str, address: str, port: int, pod: str, pool: UpstreamPool) -> None:
        super().__init__()
        self.cluster = cluster
        self.address = address
        self.port = port
        self.pod = pod
        self.key = f"{address}:{port}"
        self.pool = pool
        self.rq_active = 0
        self.rq_total = 0
        self.rq_success = 0
        self.rq_error = 0
        self.removed = False
        # Set when a swap replaced its pool by one of another TLS for the same endpoint: the
        # host the requests of older configs that still pick this one are sent to.
        self.successor: Host | None = None
        # Relayed (tcp_proxy) connections open to it; they take no pool connection. Each also
        # counts as a request (rq_active, rq_total), as Envoy's TCP pool counts its streams,
        # so least_request balances connections.
        self.tcp_cx_active = 0
        # The pool's counts last copied into the Store (ClusterState.sync_stats adds deltas).
        self._seen_cx_total = 0
        self._seen_connect_fail = 0
