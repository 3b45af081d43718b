"""A sidecar's stats without a proxy: record requests, get real /stats/stream documents.

Requests are counted under the stat names the data plane uses (Envoy's) in a real sidecar
`Store`, and snapshots come from the sidecar's own `StreamCursor`, so what tests, the
benchmark and `FakeSource` demos feed the aggregation has exactly the stream's shape. So are
the security's: the RBAC filter's decisions and the TLS handshakes of sidecar/tls/stats.py,
and `certs_answer` is a GET /certs answer in Envoy's shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from meshdev.common.breaker_view import BreakerView
from meshdev.common.sidecar_config import INBOUND_PORT, SidecarConfig, parse_config
from meshdev.sidecar.admin.views import HostView
from meshdev.sidecar.stats.sets import ClusterStatSet, ListenerStatSet, RouteStatSet
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.stats.stream import ConfigIdentity, StreamCursor

# Flags answered by the sidecar itself, before any upstream try.
_NO_TRY = frozenset({"UO", "UH", "FI", "RL"})
# Counters the data plane creates with each route and cluster (sidecar/stats/sets.py), at zero.
_ROUTE_STATS = ("upstream_rq_total", "upstream_rq_timeout", "upstream_rq_retry")
_CLUSTER_STATS = (
    "upstream_rq_total",
    "upstream_rq_timeout",
    "upstream_rq_retry",
    "upstream_rq_retry_limit_exceeded",
    "upstream_cx_none_healthy",
    "upstream_cx_overflow",
    "upstream_cx_connect_fail",
    "upstream_rq_pending_overflow",
    "upstream_rq_retry_overflow",
)


def sidecar_config(
    node: str,
    routes: Mapping[str, Mapping[str, Mapping[str, int]]],
    endpoints: Mapping[str, Sequence[tuple[str, int, str]]] | None = None,
    *,
    version: int = 1,
    faults: Iterable[tuple[str, str]] = (),
    rate_limited: Iterable[tuple[str, str]] = (),
    service: str | None = None,
    spiffe_id: str | None = None,
    tls: Iterable[str] = (),
    inbound: str | None = None,
    inbound_mtls: str = "DISABLE",
) -> SidecarConfig:
    """An outbound sidecar: `routes[vhost][route] = {cluster: weight}`, `endpoints[cluster] =
    [(address, port, pod)]`; `faults` / `rate_limited` name (vhost, route) pairs.

    Security, as plan.render makes it: `service` and `spiffe_id` are the pod's, `tls` names
    the clusters it calls with mutual TLS (each accepting its service's SPIFFE ID), and
    `inbound` is the address of an inbound listener (port 15006, to `inbound|8080`) in
    `inbound_mtls` mode."""
    faulty, limited = set(faults), set(rate_limited)
    endpoints = endpoints or {}
    names = {c for rs in routes.values() for targets in rs.values() for c in targets}
    names |= set(endpoints)
    secured = set(tls)
    listeners: list[dict[str, Any]] = [
        {"name": "outbound", "kind": "outbound", "address": "127.0.0.1", "port": 15001}
    ]
    own: list[dict[str, Any]] = []
    if inbound is not None:
        listeners.append(
            {
                "name": "inbound",
                "kind": "inbound",
                "address": inbound,
                "port": INBOUND_PORT,
                "cluster": "inbound|8080",
                "mtls": inbound_mtls,
            }
        )
        own.append({"name": "inbound|8080", "endpoints": [{"address": inbound, "port": 8080}]})
    doc: dict[str, Any] = {
        "version": version,
        "mesh": "synthetic",
        "node": node,
        "service": service,
        "spiffe_id": spiffe_id,
        "listeners": listeners,
        "virtual_hosts": [
            {
                "name": vhost,
                "domains": [vhost],
                "routes": [
                    {
                        "name": route,
                        "match": {"prefix": f"/{route}"},
                        "clusters": [{"cluster": c, "weight": w} for c, w in targets.items()],
                        **(
                            {"fault": {"abort": {"status": 503, "percent": 5}}}
                            if (vhost, route) in faulty
                            else {}
                        ),
                        **(
                            {"rate_limit": {"requests_per_second": 10, "burst": 10}}
                            if (vhost, route) in limited
                            else {}
                        ),
                    }
                    for route, targets in rs.items()
                ],
            }
            for vhost, rs in routes.items()
        ],
        "clusters": [
            *own,
            *(
                {
                    "name": c,
                    "endpoints": [
                        {"address": a, "port": p, "pod": pod} for a, p, pod in endpoints.get(c, ())
                    ],
                    **(
                        {"tls": {"spiffe_ids": [synthetic_spiffe_id(c.split(".", 1)[0])]}}
                        if c in secured
                        else {}
                    ),
                }
                for c in sorted(names)
            ),
        ],
    }
    return parse_config(doc)


def synthetic_spiffe_id(service: str) -> str:
    """The identity of a service of `sidecar_config`'s mesh (`synthetic`)."""
    return f"spiffe://cluster.local/ns/synthetic/sa/{service}"


def certs_answer(
    spiffe_id: str, *, valid_from: float, expires: float, ca: bool = True
) -> dict[str, object]:
    """A GET /certs answer in Envoy's shape (admin.v3.Certificates) for a workload certificate
    naming `spiffe_id`, valid between two POSIX times."""

    def stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    leaf = {
        "path": "<inline>",
        "serial_number": "1f",
        "subject_alt_names": [{"uri": spiffe_id}],
        # proto3 JSON writes a uint64 as a string; whole days left, as Envoy counts them.
        "days_until_expiration": str(max(0, int((expires - time.time()) // 86400))),
        "valid_from": stamp(valid_from),
        "expiration_time": stamp(expires),
    }
    root = {
        "path": "<inline>",
        "serial_number": "1",
        "subject_alt_names": [],
        "days_until_expiration": "3650",
        "valid_from": stamp(valid_from),
        "expiration_time": stamp(valid_from + 3650 * 86400),
    }
    return {"certificates": [{"ca_cert": [root] if ca else [], "cert_chain": [leaf]}]}


class SyntheticSidecar:
    """A `ControlSurface` over a real Store, with one stream cursor of its own."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        listener: str = "outbound",
        name_filter: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = Store()
        self.listener = listener
        self.host_views: list[HostView] = []
        self.breaker_views: list[BreakerView] = []
        self._runtime: dict[str, str] = {}
        # `name_filter`: the stream's `?filter=`, e.g. what the dashboard's client asks for.
        self._cursor = StreamCursor(
            self,
            ConfigIdentity(),
            re.compile(name_filter) if name_filter is not None else None,
            wall_clock=wall_clock,
            monotonic=clock,
        )

    # -- ControlSurface -------------------------------------------------------------------

    @property
    def config(self) -> SidecarConfig:
        return self._config

    @property
    def stats(self) -> Store:
        return self._store

    def apply(self, config: SidecarConfig) -> None:
        self._config = config

    async def settle(self) -> None:
        pass

    def hosts(self) -> list[HostView]:
        return list(self.host_views)

    def breakers(self) -> list[BreakerView]:
        return list(self.breaker_views)

    def runtime(self) -> dict[str, str]:
        return dict(self._runtime)

    def set_runtime(self, values: dict[str, str]) -> None:
        self._runtime.update(values)

    def declare_stats(self) -> None:
        """Make the stats a real sidecar makes when it compiles its config (sidecar/compiler.py):
        every listener's, route's (the inbound one's too) and cluster's set, at zero. Without
        this a route's stats appear with its first request, and a stream document is only as
        big as the traffic so far; a real sidecar's shows every route and cluster of its
        config from the start."""
        s, config = self._store, self._config
        for lst in config.listeners:
            ListenerStatSet(s, lst.name, lst.address, lst.port)
            if lst.kind == "inbound":
                RouteStatSet(s, "inbound", lst.name)
        for v in config.virtual_hosts:
            for r in v.routes:
                RouteStatSet(s, v.name, r.name)
        for c in config.clusters:
            ClusterStatSet(s, c.name)

    # -- traffic ---------------------------------------------------------------------------

    def request(
        self,
        vhost: str,
        route: str,
        cluster: str,
        status: int,
        latency_ms: float,
        *,
        flags: Iterable[str] = (),
        retries: int = 0,
        count: int = 1,
    ) -> None:
        """Count `count` requests of a route, answered `status` after `latency_ms`, the way
        the data plane counts them (sidecar/proxy/): every request on the route's downstream side,
        upstream tries on the route's and cluster's upstream side, local answers where the
        data plane counts them, and each flag on its counter."""
        s = self._store
        flags = frozenset(flags)
        rp, cp = f"vhost.{vhost}.route.{route}.", f"cluster.{cluster}."
        for stat in _ROUTE_STATS:
            s.counter(rp + stat)
        for stat in _CLUSTER_STATS:
            s.counter(cp + stat)
        self._status(rp + "downstream_rq", status, count)
        s.counter(rp + "downstream_rq_total").inc(count)
        if "RL" in flags:
            s.counter("http_local_rate_limit.rate_limited").inc(count)
        if "DI" in flags:
            s.counter(f"http.{self.listener}.fault.delays_injected").inc(count)
        if "FI" in flags:
            s.counter(f"http.{self.listener}.fault.aborts_injected").inc(count)
        if "UH" in flags:
            s.counter(cp + "upstream_cx_none_healthy").inc(count)
        if "UO" in flags:
            s.counter(cp + "upstream_rq_pending_overflow").inc(count)
            self._status(cp + "upstream_rq", 503, count)
        if flags & _NO_TRY:
            return
        tries = (1 + retries) * count
        for p in (rp, cp):
            s.counter(p + "upstream_rq_total").inc(tries)
            if retries:
                s.counter(p + "upstream_rq_retry").inc(retries * count)
        if "URX" in flags:
            s.counter(cp + "upstream_rq_retry_limit_exceeded").inc(count)
        if "UT" in flags:
            s.counter(rp + "upstream_rq_timeout").inc(count)
            s.counter(cp + "upstream_rq_timeout").inc(count)
            self._status(cp + "upstream_rq", 504, count)
            return
        if "UF" in flags:
            s.counter(cp + "upstream_cx_connect_fail").inc(count)
            self._status(cp + "upstream_rq", 503, count)
            return
        for p in (rp, cp):
            self._status(p + "upstream_rq", status, count)
            h = s.histogram(p + "upstream_rq_time")
            for _ in range(count):
                h.record(latency_ms)

    def _status(self, prefix: str, status: int, count: int) -> None:
        for klass in range(1, 6):
            self._store.counter(f"{prefix}_{klass}xx")
        self._store.counter(f"{prefix}_{status // 100}xx").inc(count)
        self._store.counter(f"{prefix}_{status}").inc(count)

    def inbound(self, status: int, count: int = 1) -> None:
        """Requests the sidecar's own app got (its inbound listener's route)."""
        self._status("vhost.inbound.route.inbound.downstream_rq", status, count)
        self._store.counter("vhost.inbound.route.inbound.downstream_rq_total").inc(count)

    def upgrades(self, vhost: str, route: str, *, opened: int, closed: int = 0) -> None:
        """Upgrade requests of a route (`opened`) and upgraded streams that ended (`closed`),
        counted as the data plane counts them: per route and on the listener."""
        for p in (f"vhost.{vhost}.route.{route}.", f"http.{self.listener}."):
            self._store.counter(p + "downstream_cx_upgrades_total").inc(opened)
            self._store.gauge(p + "downstream_cx_upgrades_active").inc(opened - closed)

    def no_route(self, count: int = 1) -> None:
        self._store.counter(f"http.{self.listener}.no_route").inc(count)

    # -- security (docs/security.md) -----------------------------------------------------------

    def rbac(self, *, allowed: int = 0, denied: int = 0, listener: str = "inbound") -> None:
        """Requests the inbound listener's RBAC filter let through or refused (Envoy makes
        these stats only on a listener with policies: the first call makes them)."""
        self._store.counter(f"http.{listener}.rbac.allowed").inc(allowed)
        self._store.counter(f"http.{listener}.rbac.denied").inc(denied)
        if denied:
            self.inbound(403, denied)

    def inbound_tls(
        self,
        address: str,
        port: int = INBOUND_PORT,
        *,
        handshake: int = 0,
        connection_error: int = 0,
        fail_verify_error: int = 0,
        fail_verify_san: int = 0,
        fail_verify_no_cert: int = 0,
        no_filter_chain_match: int = 0,
    ) -> None:
        """Handshakes on an inbound listener, counted under sidecar/tls/stats.py's names (its
        whole set is made at the first TLS connection, as there)."""
        p = f"listener.{f'[{address}]' if ':' in address else address}_{port}."
        s = self._store
        s.counter(p + "ssl.handshake").inc(handshake)
        s.counter(p + "ssl.session_reused")
        s.counter(p + "ssl.connection_error").inc(connection_error)
        s.counter(p + "ssl.fail_verify_error").inc(fail_verify_error)
        s.counter(p + "ssl.fail_verify_san").inc(fail_verify_san)
        s.counter(p + "ssl.fail_verify_no_cert").inc(fail_verify_no_cert)
        s.counter(p + "ssl.no_certificate")
        s.counter(p + "no_filter_chain_match").inc(no_filter_chain_match)

    def upstream_tls(
        self,
        cluster: str,
        *,
        handshake: int = 0,
        connection_error: int = 0,
        fail_verify_error: int = 0,
        fail_verify_san: int = 0,
    ) -> None:
        """Handshakes to a cluster's endpoints; a failed one is also the connect failure (UF)
        it is to the pool (sidecar/tls/upstream.py), answered 503."""
        p = f"cluster.{cluster}."
        s = self._store
        s.counter(p + "ssl.handshake").inc(handshake)
        s.counter(p + "ssl.session_reused")
        s.counter(p + "ssl.connection_error").inc(connection_error)
        s.counter(p + "ssl.fail_verify_error").inc(fail_verify_error)
        s.counter(p + "ssl.fail_verify_san").inc(fail_verify_san)
        failed = connection_error + fail_verify_error + fail_verify_san
        if failed:
            s.counter(p + "upstream_cx_connect_fail").inc(failed)

    def snapshot(self) -> dict[str, object]:
        """The next /stats/stream document (covering the time since the previous one)."""
        return self._cursor.next_snapshot()
