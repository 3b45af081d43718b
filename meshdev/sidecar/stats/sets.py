"""The stat objects of one listener, route or cluster, fetched from the Store once.

The request path bumps `.value` on these; names are Envoy's. A status code's own counter
(`upstream_rq_503`) is created on its first use and then cached here, so stats survive config
swaps (the Store keeps them) while each set costs one dict look-up per status.
"""

from __future__ import annotations

from meshdev.common.histogram import Histogram
from meshdev.sidecar.stats.grpc import GrpcStats
from meshdev.sidecar.stats.store import Counter, Gauge, Store

# Response flag -> the Envoy stat it is counted under on a route (UT has its own already).
ROUTE_FLAG_STATS = {
    "UO": "upstream_rq_pending_overflow",
    "UH": "upstream_cx_none_healthy",
    "UF": "upstream_cx_connect_fail",
    "URX": "upstream_rq_retry_limit_exceeded",
    "RL": "http_local_rate_limit.rate_limited",
    "FI": "fault.aborts_injected",
    "DI": "fault.delays_injected",
}


class StatusCounters:
    """`<prefix>_2xx` style class counters plus `<prefix>_<code>` counters, lazily."""

    __slots__ = ("_classes", "_codes", "_prefix", "_store")

    def __init__(self, store: Store, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self._classes = [store.counter(f"{prefix}_{i}xx") for i in range(1, 6)]
        # status -> (its class counter or None, its own counter)
        self._codes: dict[int, tuple[Counter | None, Counter]] = {}

    def charge(self, status: int) -> None:
        pair = self._codes.get(status)
        if pair is None:
            pair = self._codes[status] = self._pair(status)
        klass, code = pair
        if klass is not None:
            klass.value += 1
        code.value += 1

    def _pair(self, status: int) -> tuple[Counter | None, Counter]:
        i = status // 100
        klass = self._classes[i - 1] if 1 <= i <= 5 else None
        return klass, self._store.counter(f"{self._prefix}_{status}")


class ListenerStatSet:
    __slots__ = (
        "aborts_injected",
        "delays_injected",
        "downstream",
        "downstream_cx_upgrades_active",
        "downstream_cx_upgrades_total",
        "downstream_rq_active",
        "downstream_rq_idle_timeout",
        "downstream_rq_time",
        "downstream_rq_total",
        "no_route",
        "rq_total",
    )

    def __init__(self, store: Store, listener: str) -> None:
        p = f"http.{listener}."
        self.downstream_rq_total: Counter = store.counter(p + "downstream_rq_total")
        self.downstream_rq_active: Gauge = store.gauge(p + "downstream_rq_active")
        self.downstream_rq_time: Histogram = store.histogram(p + "downstream_rq_time")
        self.downstream = StatusCounters(store, p + "downstream_rq")
        self.rq_total: Counter = store.counter(p + "rq_total")
        self.no_route: Counter = store.counter(p + "no_route")
        self.aborts_injected: Counter = store.counter(p + "fault.aborts_injected")
        self.delays_injected: Counter = store.counter(p + "fault.delays_injected")
        # Envoy's: upgrade requests the connection manager took (counted at their head, so
        # one refused later, say with a 429, counts too), and those not ended yet.
        self.downstream_cx_upgrades_total: Counter = store.counter(
            p + "downstream_cx_upgrades_total"
        )
        self.downstream_cx_upgrades_active: Gauge = store.gauge(p + "downstream_cx_upgrades_active")
        # Streams (upgraded ones, here) closed by the stream idle timeout.
        self.downstream_rq_idle_timeout: Counter = store.counter(p + "downstream_rq_idle_timeout")


class RbacStatSet:
    """Envoy's RBAC filter stats, `<scope>.rbac.{allowed,denied}`: an HTTP listener's scope is
    `http.<listener>`, a tcp_proxy's `tcp.<stat_prefix>`. Made only for listeners that have
    authorization policies, as Envoy has them only where the filter is configured."""

    __slots__ = ("allowed", "denied")

    def __init__(self, store: Store, scope: str) -> None:
        p = f"{scope}.rbac."
        self.allowed: Counter = store.counter(p + "allowed")
        self.denied: Counter = store.counter(p + "denied")


class RouteStatSet:
    """Envoy's per-route stats (`vhost.<v>.route.<r>.upstream_rq_*`), plus meshdev's
    `downstream_rq_*` per route so a dashboard also sees local answers (faults, 429s), and
    meshdev's `downstream_cx_upgrades_{total,active}` per route (the listener's upgrade
    stats, by route), made at a route's first upgrade request so other routes show none; and
    meshdev's `grpc.<grpc-status>` per route (the statuses its gRPC callers got, local answers
    included: Envoy's grpc_stats counts per cluster and method), made on first use."""

    __slots__ = (
        "_grpc",
        "_prefix",
        "_store",
        "_upgrades",
        "downstream",
        "downstream_rq_total",
        "flag_counters",
        "upstream",
        "upstream_rq_retry",
        "upstream_rq_time",
        "upstream_rq_timeout",
        "upstream_rq_total",
    )

    def __init__(self, store: Store, vhost: str, route: str) -> None:
        p = f"vhost.{vhost}.route.{route}."
        self._store = store
        self._prefix = p
        self._upgrades: tuple[Counter, Gauge] | None = None
        self._grpc: dict[str, Counter] = {}
        self.upstream_rq_total: Counter = store.counter(p + "upstream_rq_total")
        self.upstream = StatusCounters(store, p + "upstream_rq")
        self.upstream_rq_time: Histogram = store.histogram(p + "upstream_rq_time")
        self.upstream_rq_timeout: Counter = store.counter(p + "upstream_rq_timeout")
        self.upstream_rq_retry: Counter = store.counter(p + "upstream_rq_retry")
        self.downstream_rq_total: Counter = store.counter(p + "downstream_rq_total")
        self.downstream = StatusCounters(store, p + "downstream_rq")
        # Envoy counts these per cluster or listener only; per route (under the same names)
        # a dashboard can say which route's callers met a breaker, a fault or the rate limit.
        self.flag_counters: dict[str, Counter] = {
            flag: store.counter(p + name) for flag, name in ROUTE_FLAG_STATS.items()
        }

    def upgrade_began(self) -> None:
        """An upgrade request took this route (as the listener's upgrades count it)."""
        pair = self._upgrades
        if pair is None:
            store, p = self._store, self._prefix
            pair = self._upgrades = (
                store.counter(p + "downstream_cx_upgrades_total"),
                store.gauge(p + "downstream_cx_upgrades_active"),
            )
        pair[0].value += 1
        pair[1].value += 1

    def grpc_status(self, code: str) -> None:
        """A gRPC caller of this route got grpc-status `code` (as sent, e.g. "14")."""
        counter = self._grpc.get(code)
        if counter is None:
            if not code.isdigit() or len(self._grpc) > 17:
                return  # not a status gRPC defines: an upstream's garbage is not a stat
            counter = self._grpc[code] = self._store.counter(f"{self._prefix}grpc.{code}")
        counter.value += 1

    def upgrade_ended(self) -> None:
        """An upgrade request of this route ended: refused, answered, or its stream closed."""
        pair = self._upgrades
        if pair is not None:
            pair[1].value -= 1

    def count_flags(self, flags: str) -> None:
        """Charge an access-log record's response flags (`UO,URX`) to this route."""
        for flag in flags.split(","):
            counter = self.flag_counters.get(flag)
            if counter is not None:
                counter.value += 1


class ClusterStatSet:
    """A cluster's request stats. Connection and pending counts live as plain ints in the
    connection budget and pools (sidecar/upstream/); `ClusterState.sync_stats` copies them in."""

    __slots__ = (
        "cx_open",
        "grpc",
        "membership_healthy",
        "membership_total",
        "retry",
        "retry_or_shadow_abandoned",
        "rq_pending_open",
        "upstream",
        "upstream_cx_active",
        "upstream_cx_connect_fail",
        "upstream_cx_none_healthy",
        "upstream_cx_overflow",
        "upstream_cx_total",
        "upstream_rq_pending_active",
        "upstream_rq_pending_overflow",
        "upstream_rq_pending_total",
        "upstream_rq_per_try_timeout",
        "upstream_rq_retry",
        "upstream_rq_retry_limit_exceeded",
        "upstream_rq_retry_success",
        "upstream_rq_time",
        "upstream_rq_timeout",
        "upstream_rq_total",
    )

    def __init__(self, store: Store, cluster: str) -> None:
        p = f"cluster.{cluster}."
        self.upstream_rq_total: Counter = store.counter(p + "upstream_rq_total")
        self.upstream = StatusCounters(store, p + "upstream_rq")
        # Answers that were retried are charged here instead (Envoy's `retry.` scope).
        self.retry = StatusCounters(store, p + "retry.upstream_rq")
        self.upstream_rq_time: Histogram = store.histogram(p + "upstream_rq_time")
        self.upstream_rq_timeout: Counter = store.counter(p + "upstream_rq_timeout")
        self.upstream_rq_per_try_timeout: Counter = store.counter(p + "upstream_rq_per_try_timeout")
        self.upstream_rq_retry: Counter = store.counter(p + "upstream_rq_retry")
        self.upstream_rq_retry_success: Counter = store.counter(p + "upstream_rq_retry_success")
        self.upstream_rq_retry_limit_exceeded: Counter = store.counter(
            p + "upstream_rq_retry_limit_exceeded"
        )
        self.retry_or_shadow_abandoned: Counter = store.counter(p + "retry_or_shadow_abandoned")
        self.upstream_cx_none_healthy: Counter = store.counter(p + "upstream_cx_none_healthy")
        self.membership_healthy: Gauge = store.gauge(p + "membership_healthy")
        self.membership_total: Gauge = store.gauge(p + "membership_total")
        self.upstream_cx_total: Counter = store.counter(p + "upstream_cx_total")
        self.upstream_cx_active: Gauge = store.gauge(p + "upstream_cx_active")
        self.upstream_cx_overflow: Counter = store.counter(p + "upstream_cx_overflow")
        self.upstream_cx_connect_fail: Counter = store.counter(p + "upstream_cx_connect_fail")
        self.upstream_rq_pending_active: Gauge = store.gauge(p + "upstream_rq_pending_active")
        self.upstream_rq_pending_total: Counter = store.counter(p + "upstream_rq_pending_total")
        self.upstream_rq_pending_overflow: Counter = store.counter(
            p + "upstream_rq_pending_overflow"
        )
        self.cx_open: Gauge = store.gauge(p + "circuit_breakers.default.cx_open")
        self.rq_pending_open: Gauge = store.gauge(p + "circuit_breakers.default.rq_pending_open")
        # gRPC calls per method (no stat exists until a call was counted).
        self.grpc = GrpcStats(store, cluster)


class TcpStatSet:
    """Envoy's tcp_proxy stats, `tcp.<stat_prefix>.*`: one set per prefix, shared by every
    connection of the listeners that use it."""

    __slots__ = (
        "downstream_cx_no_route",
        "downstream_cx_rx_bytes_total",
        "downstream_cx_total",
        "downstream_cx_tx_bytes_total",
        "downstream_flow_control_paused_reading_total",
        "downstream_flow_control_resumed_reading_total",
        "idle_timeout",
        "upstream_flush_active",
        "upstream_flush_total",
    )

    def __init__(self, store: Store, stat_prefix: str) -> None:
        p = f"tcp.{stat_prefix}."
        self.downstream_cx_total: Counter = store.counter(p + "downstream_cx_total")
        self.downstream_cx_no_route: Counter = store.counter(p + "downstream_cx_no_route")
        self.downstream_cx_rx_bytes_total: Counter = store.counter(
            p + "downstream_cx_rx_bytes_total"
        )
        self.downstream_cx_tx_bytes_total: Counter = store.counter(
            p + "downstream_cx_tx_bytes_total"
        )
        self.downstream_flow_control_paused_reading_total: Counter = store.counter(
            p + "downstream_flow_control_paused_reading_total"
        )
        self.downstream_flow_control_resumed_reading_total: Counter = store.counter(
            p + "downstream_flow_control_resumed_reading_total"
        )
        self.idle_timeout: Counter = store.counter(p + "idle_timeout")
        # Connections whose client left while bytes for the upstream were still queued.
        self.upstream_flush_total: Counter = store.counter(p + "upstream_flush_total")
        self.upstream_flush_active: Gauge = store.gauge(p + "upstream_flush_active")


class TcpClusterStatSet:
    """The cluster stats that only relayed connections move (Envoy counts them for every
    connection; meshdev's HTTP client does not yet, so HTTP-only clusters show none of them).
    `upstream_cx_total`, `_active`, `_connect_fail`, `_overflow` and `_none_healthy` are the
    `ClusterStatSet`'s, shared with HTTP."""

    __slots__ = (
        "upstream_cx_connect_timeout",
        "upstream_cx_destroy",
        "upstream_cx_destroy_local",
        "upstream_cx_destroy_remote",
        "upstream_cx_rx_bytes_total",
        "upstream_cx_tx_bytes_total",
        "upstream_flow_control_paused_reading_total",
        "upstream_flow_control_resumed_reading_total",
    )

    def __init__(self, store: Store, cluster: str) -> None:
        p = f"cluster.{cluster}."
        self.upstream_cx_connect_timeout: Counter = store.counter(p + "upstream_cx_connect_timeout")
        self.upstream_cx_rx_bytes_total: Counter = store.counter(p + "upstream_cx_rx_bytes_total")
        self.upstream_cx_tx_bytes_total: Counter = store.counter(p + "upstream_cx_tx_bytes_total")
        self.upstream_cx_destroy: Counter = store.counter(p + "upstream_cx_destroy")
        self.upstream_cx_destroy_local: Counter = store.counter(p + "upstream_cx_destroy_local")
        self.upstream_cx_destroy_remote: Counter = store.counter(p + "upstream_cx_destroy_remote")
        self.upstream_flow_control_paused_reading_total: Counter = store.counter(
            p + "upstream_flow_control_paused_reading_total"
        )
        self.upstream_flow_control_resumed_reading_total: Counter = store.counter(
            p + "upstream_flow_control_resumed_reading_total"
        )
