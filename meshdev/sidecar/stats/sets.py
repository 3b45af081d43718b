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


def listener_prefix(address: str, port: int) -> str:
    """Envoy's listener stat scope: the address with `:` made `_` (`[::]:80` -> `[__]_80`)."""
    host = f"[{address}]" if ":" in address else address
    return f"listener.{host}_{port}."


class StatusCounters:
    """`<prefix>_2xx` style class counters plus `<prefix>_<code>` counters, lazily; and with
    each status, the counters named in `every` (`..._completed`), the class and code counters
    of the prefixes in `also` (Envoy's `external.upstream_rq`), and the class counters of those
    in `classes` (a listener's `listener.<a>.http.<p>.downstream_rq`), made at first use.
    A status costs one dict look-up; its counters are then bumped in turn."""

    __slots__ = ("_also", "_classes", "_codes", "_every", "_more_classes", "_prefix", "_store")

    def __init__(
        self,
        store: Store,
        prefix: str,
        *,
        every: tuple[str, ...] = (),
        also: tuple[str, ...] = (),
        classes: tuple[str, ...] = (),
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._classes = [store.counter(f"{prefix}_{i}xx") for i in range(1, 6)]
        self._every = every
        self._also = also
        self._more_classes = classes
        # status -> the counters it bumps
        self._codes: dict[int, tuple[Counter, ...]] = {}

    def charge(self, status: int) -> None:
        bumps = self._codes.get(status)
        if bumps is None:
            bumps = self._codes[status] = self._bumps(status)
        for counter in bumps:
            counter.value += 1

    def _bumps(self, status: int) -> tuple[Counter, ...]:
        store = self._store
        i = status // 100
        known = 1 <= i <= 5
        out = [self._classes[i - 1]] if known else []
        out.append(store.counter(f"{self._prefix}_{status}"))
        out += (store.counter(name) for name in self._every)
        for prefix in self._also:
            if known:
                out.append(store.counter(f"{prefix}_{i}xx"))
            out.append(store.counter(f"{prefix}_{status}"))
        if known:
            out += (store.counter(f"{prefix}_{i}xx") for prefix in self._more_classes)
        return tuple(out)


class ListenerStatSet:
    """An HTTP listener's request stats: its connection manager's (`http.<listener>.`), and
    the answers per listener address as well (`listener.<a>.http.<listener>.downstream_rq_2xx`
    and `_completed`, Envoy's CONN_MAN_LISTENER_STATS)."""

    __slots__ = (
        "aborts_injected",
        "delays_injected",
        "downstream",
        "downstream_cx_upgrades_active",
        "downstream_cx_upgrades_total",
        "downstream_rq_active",
        "downstream_rq_http1_total",
        "downstream_rq_http2_total",
        "downstream_rq_idle_timeout",
        "downstream_rq_time",
        "downstream_rq_total",
        "no_route",
        "rq_total",
        "tracing_not_traceable",
        "tracing_random_sampling",
    )

    def __init__(self, store: Store, listener: str, address: str = "", port: int = 0) -> None:
        p = f"http.{listener}."
        self.downstream_rq_total: Counter = store.counter(p + "downstream_rq_total")
        self.downstream_rq_active: Gauge = store.gauge(p + "downstream_rq_active")
        self.downstream_rq_time: Histogram = store.histogram(p + "downstream_rq_time")
        self.downstream_rq_http1_total: Counter = store.counter(p + "downstream_rq_http1_total")
        self.downstream_rq_http2_total: Counter = store.counter(p + "downstream_rq_http2_total")
        # An answer to a request: `downstream_rq_completed` (aborted requests have none) and,
        # per listener address, its class and completion again.
        lp = (listener_prefix(address, port) + p) if address else ""
        self.downstream = StatusCounters(
            store,
            p + "downstream_rq",
            every=(
                p + "downstream_rq_completed",
                *((lp + "downstream_rq_completed",) if lp else ()),
            ),
            classes=(lp + "downstream_rq",) if lp else (),
        )
        if lp:
            for i in range(1, 6):
                store.counter(f"{lp}downstream_rq_{i}xx")
            store.counter(lp + "downstream_rq_completed")
        store.counter(p + "downstream_rq_completed")
        # Envoy's request_timeout (off by default, as meshdev has none): declared, never moved.
        store.counter(p + "downstream_rq_timeout")
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
        # Envoy's connection manager's tracing decisions (docs/tracing.md): traced, or not
        # (with tracing off, neither moves). Its forced and client-asked traces come from
        # x-envoy-force-trace and x-client-trace-id, which meshdev does not read: declared.
        self.tracing_random_sampling: Counter = store.counter(p + "tracing.random_sampling")
        self.tracing_not_traceable: Counter = store.counter(p + "tracing.not_traceable")
        for never in ("service_forced", "client_enabled", "health_check"):
            store.counter(f"{p}tracing.{never}")


class DownstreamStatSet:
    """The connection stats of one HTTP listener (`sidecar.http.tally.ConnTally`): the
    listener's own at its address (`listener.<a>.downstream_cx_total`, `_destroy`, `_active`)
    and its connection manager's (`http.<listener>.downstream_cx_*`, the bytes both ways,
    destroys local/remote and with requests in flight, timeouts and errors, and the requests
    reset either way). `downstream_cx_rx_bytes_buffered` / `_tx_bytes_buffered` are set when
    stats are read (`buffered`). HTTP/2 connections count `downstream_cx_http2_*` in
    `stats.http2.Http2StatSet`."""

    __slots__ = (
        "_active",
        "_cx_total",
        "_destroy",
        "_destroy_active_rq",
        "_destroy_local",
        "_destroy_local_active_rq",
        "_destroy_remote",
        "_destroy_remote_active_rq",
        "_http1_active",
        "_http1_total",
        "_listener_active",
        "_listener_destroy",
        "_listener_total",
        "drain_close",
        "header_timeout",
        "idle_timeout",
        "protocol_error",
        "rq_rx_reset",
        "rq_tx_reset",
        "rx_buffered",
        "rx_bytes",
        "tx_buffered",
        "tx_bytes",
    )

    def __init__(self, store: Store, listener: str, address: str, port: int) -> None:
        lp = listener_prefix(address, port)
        self._listener_total: Counter = store.counter(lp + "downstream_cx_total")
        self._listener_destroy: Counter = store.counter(lp + "downstream_cx_destroy")
        self._listener_active: Gauge = store.gauge(lp + "downstream_cx_active")
        p = f"http.{listener}.downstream_"
        c = store.counter
        self._cx_total: Counter = c(p + "cx_total")
        self._active: Gauge = store.gauge(p + "cx_active")
        self._destroy: Counter = c(p + "cx_destroy")
        self._destroy_local: Counter = c(p + "cx_destroy_local")
        self._destroy_remote: Counter = c(p + "cx_destroy_remote")
        self._destroy_active_rq: Counter = c(p + "cx_destroy_active_rq")
        self._destroy_local_active_rq: Counter = c(p + "cx_destroy_local_active_rq")
        self._destroy_remote_active_rq: Counter = c(p + "cx_destroy_remote_active_rq")
        self._http1_total: Counter = c(p + "cx_http1_total")
        self._http1_active: Gauge = store.gauge(p + "cx_http1_active")
        self.rx_bytes: Counter = c(p + "cx_rx_bytes_total")
        self.tx_bytes: Counter = c(p + "cx_tx_bytes_total")
        self.rx_buffered: Gauge = store.gauge(p + "cx_rx_bytes_buffered")
        self.tx_buffered: Gauge = store.gauge(p + "cx_tx_bytes_buffered")
        self.idle_timeout: Counter = c(p + "cx_idle_timeout")
        self.protocol_error: Counter = c(p + "cx_protocol_error")
        self.drain_close: Counter = c(p + "cx_drain_close")
        self.header_timeout: Counter = c(p + "rq_header_timeout")
        self.rq_rx_reset: Counter = c(p + "rq_rx_reset")
        self.rq_tx_reset: Counter = c(p + "rq_tx_reset")

    def opened(self) -> None:
        self._listener_total.value += 1
        self._listener_active.value += 1
        self._cx_total.value += 1
        self._active.value += 1

    def http1(self) -> None:
        self._http1_total.value += 1
        self._http1_active.value += 1

    def closed(self, *, local: bool, active_rq: bool, http1: bool) -> None:
        self._listener_destroy.value += 1
        self._listener_active.value -= 1
        self._destroy.value += 1
        self._active.value -= 1
        if http1:
            self._http1_active.value -= 1
        if local:
            self._destroy_local.value += 1
        else:
            self._destroy_remote.value += 1
        if active_rq:
            self._destroy_active_rq.value += 1
            if local:
                self._destroy_local_active_rq.value += 1
            else:
                self._destroy_remote_active_rq.value += 1


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
    """A cluster's request stats. Connection and pending counts, bytes and closes live as
    plain ints in the connection budget and pools (sidecar/upstream/); `ClusterState.
    sync_stats` copies them in.

    An answer is charged as Envoy's router charges it: `upstream_rq_<code>`, `_<class>xx` and
    `upstream_rq_completed`, and again under the request's category, `internal.` for a
    request that carried `x-envoy-internal: true`, else `external.` (`upstream_internal` /
    `upstream`). `lb_healthy_panic` is counted by the balancer (upstream/balancer.py);
    `circuit_breakers.default.cx_pool_open` stays 0 (no limit on connection pools), as Envoy
    shows it for a cluster that never meets it."""

    __slots__ = (
        "cx_open",
        "cx_pool_open",
        "grpc",
        "lb_healthy_panic",
        "membership_healthy",
        "membership_total",
        "retry",
        "retry_or_shadow_abandoned",
        "rq_pending_open",
        "upstream",
        "upstream_cx_active",
        "upstream_cx_connect_fail",
        "upstream_cx_connect_timeout",
        "upstream_cx_destroy",
        "upstream_cx_destroy_local",
        "upstream_cx_destroy_local_with_active_rq",
        "upstream_cx_destroy_remote",
        "upstream_cx_destroy_remote_with_active_rq",
        "upstream_cx_destroy_with_active_rq",
        "upstream_cx_http1_total",
        "upstream_cx_none_healthy",
        "upstream_cx_overflow",
        "upstream_cx_rx_bytes_buffered",
        "upstream_cx_rx_bytes_total",
        "upstream_cx_total",
        "upstream_cx_tx_bytes_buffered",
        "upstream_cx_tx_bytes_total",
        "upstream_internal",
        "upstream_rq_pending_active",
        "upstream_rq_pending_overflow",
        "upstream_rq_pending_total",
        "upstream_rq_per_try_timeout",
        "upstream_rq_retry",
        "upstream_rq_retry_limit_exceeded",
        "upstream_rq_retry_success",
        "upstream_rq_rx_reset",
        "upstream_rq_time",
        "upstream_rq_timeout",
        "upstream_rq_total",
        "upstream_rq_tx_reset",
    )

    def __init__(self, store: Store, cluster: str) -> None:
        p = f"cluster.{cluster}."
        self.upstream_rq_total: Counter = store.counter(p + "upstream_rq_total")
        store.counter(p + "upstream_rq_completed")
        self.upstream = self._answers(store, p, "external.")
        self.upstream_internal = self._answers(store, p, "internal.")
        # Requests whose upstream connection was reset under them, and those we reset (a
        # timeout or the client's leaving ended the exchange).
        self.upstream_rq_rx_reset: Counter = store.counter(p + "upstream_rq_rx_reset")
        self.upstream_rq_tx_reset: Counter = store.counter(p + "upstream_rq_tx_reset")
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
        self.cx_pool_open: Gauge = store.gauge(p + "circuit_breakers.default.cx_pool_open")
        self.rq_pending_open: Gauge = store.gauge(p + "circuit_breakers.default.rq_pending_open")
        self.lb_healthy_panic: Counter = store.counter(p + "lb_healthy_panic")
        # The connections' traffic and ends, HTTP's and relayed (tcp_proxy) ones alike.
        self.upstream_cx_http1_total: Counter = store.counter(p + "upstream_cx_http1_total")
        self.upstream_cx_connect_timeout: Counter = store.counter(p + "upstream_cx_connect_timeout")
        self.upstream_cx_rx_bytes_total: Counter = store.counter(p + "upstream_cx_rx_bytes_total")
        self.upstream_cx_tx_bytes_total: Counter = store.counter(p + "upstream_cx_tx_bytes_total")
        self.upstream_cx_rx_bytes_buffered: Gauge = store.gauge(p + "upstream_cx_rx_bytes_buffered")
        self.upstream_cx_tx_bytes_buffered: Gauge = store.gauge(p + "upstream_cx_tx_bytes_buffered")
        self.upstream_cx_destroy: Counter = store.counter(p + "upstream_cx_destroy")
        self.upstream_cx_destroy_local: Counter = store.counter(p + "upstream_cx_destroy_local")
        self.upstream_cx_destroy_remote: Counter = store.counter(p + "upstream_cx_destroy_remote")
        self.upstream_cx_destroy_with_active_rq: Counter = store.counter(
            p + "upstream_cx_destroy_with_active_rq"
        )
        self.upstream_cx_destroy_local_with_active_rq: Counter = store.counter(
            p + "upstream_cx_destroy_local_with_active_rq"
        )
        self.upstream_cx_destroy_remote_with_active_rq: Counter = store.counter(
            p + "upstream_cx_destroy_remote_with_active_rq"
        )
        # gRPC calls per method (no stat exists until a call was counted).
        self.grpc = GrpcStats(store, cluster)

    @staticmethod
    def _answers(store: Store, p: str, category: str) -> StatusCounters:
        return StatusCounters(
            store,
            p + "upstream_rq",
            every=(p + "upstream_rq_completed", p + category + "upstream_rq_completed"),
            also=(p + category + "upstream_rq",),
        )


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
    """The cluster stats a relayed connection moves. The flow control ones are only a relayed
    connection's; the others are the `ClusterStatSet`'s counters (the Store's same objects),
    which HTTP connections move too."""

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
