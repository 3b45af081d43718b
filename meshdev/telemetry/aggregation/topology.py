"""What a sidecar's config says about its stats: which clusters each route sends to, which
routes inject faults or rate-limit, which clusters are the sidecar's own (inbound) app.

Stats alone cannot say that a `cluster.backend.v1.upstream_rq_timeout` belongs to route
`backend/items`, nor that `http.outbound.fault.aborts_injected` came from a route with an abort:
the route table does. It is read from `/config_dump`, meshdev's shape or Envoy's (route stats
in Envoy are named by the route's `stat_prefix`), leniently: a field this version does not
know is ignored rather than rejected, since the dashboard may watch a newer sidecar.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

RouteKey = tuple[str, str]  # (virtual host, route)


@dataclass(frozen=True, slots=True)
class RouteInfo:
    vhost: str
    route: str
    clusters: tuple[tuple[str, float], ...]  # (cluster, share of the route's traffic)
    abort: bool = False
    delay: bool = False
    rate_limit: bool = False

    @property
    def key(self) -> RouteKey:
        return self.vhost, self.route


@dataclass(frozen=True, slots=True)
class InboundListener:
    """A pod's inbound listener: where its TLS stats are (`listener.<address>_<port>.`), its
    HTTP stats' prefix (`http.<name>.`, the RBAC filter's), and its mTLS mode."""

    name: str
    address: str
    port: int
    mtls: str | None = None

    @property
    def stat_prefixes(self) -> tuple[str, ...]:
        """Envoy's listener scope, `listener.<address>_<port>.`. An IPv6 address is bracketed,
        and Envoy makes its colons `_` (`[__]_15006`), which a sidecar may not: both are
        tried."""
        if ":" not in self.address:
            return (f"listener.{self.address}_{self.port}.",)
        raw = f"listener.[{self.address}]_{self.port}."
        return (raw.replace(":", "_"), raw)


@dataclass(frozen=True, slots=True)
class Topology:
    routes: tuple[RouteInfo, ...] = ()
    clusters: tuple[str, ...] = ()
    # Clusters that reach this sidecar's own app (inbound listeners): not shared upstreams.
    local_clusters: frozenset[str] = frozenset()
    http_prefixes: tuple[str, ...] = ()
    # Clusters its tcp_proxy listeners relay connections to: they show connections and bytes,
    # not requests.
    tcp_clusters: frozenset[str] = frozenset()
    # Security (meshdev's config only): the pod's service as a caller (the gateway's is
    # `ingress`, its service account), the identity its certificate must name, the clusters
    # it calls with mutual TLS, and its inbound listener (stat prefix, address, port, mode).
    service: str | None = None
    spiffe_id: str | None = None
    tls_clusters: frozenset[str] = frozenset()
    inbound: InboundListener | None = None
    # Derived look-ups, built once by `make`.
    by_cluster: dict[str, tuple[tuple[RouteKey, float], ...]] = field(default_factory=dict)
    by_feature: dict[str, tuple[RouteKey, ...]] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        routes: Iterable[RouteInfo],
        clusters: Iterable[str] = (),
        local_clusters: Iterable[str] = (),
        http_prefixes: Iterable[str] = (),
        tcp_clusters: Iterable[str] = (),
        *,
        service: str | None = None,
        spiffe_id: str | None = None,
        tls_clusters: Iterable[str] = (),
        inbound: InboundListener | None = None,
    ) -> Topology:
        routes = tuple(routes)
        by_cluster: dict[str, list[tuple[RouteKey, float]]] = {}
        for r in routes:
            for c, share in r.clusters:
                by_cluster.setdefault(c, []).append((r.key, share))
        features = {
            "FI": tuple(r.key for r in routes if r.abort),
            "DI": tuple(r.key for r in routes if r.delay),
            "RL": tuple(r.key for r in routes if r.rate_limit),
        }
        return cls(
            routes=routes,
            clusters=tuple(dict.fromkeys([*clusters, *by_cluster])),
            local_clusters=frozenset(local_clusters),
            http_prefixes=tuple(http_prefixes),
            tcp_clusters=frozenset(tcp_clusters),
            service=service,
            spiffe_id=spiffe_id,
            tls_clusters=frozenset(tls_clusters),
            inbound=inbound,
            by_cluster={c: tuple(v) for c, v in by_cluster.items()},
            by_feature=features,
        )


def _shares(pairs: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    total = sum(w for _, w in pairs)
    if total <= 0:
        return tuple((c, 1.0 / len(pairs)) for c, _ in pairs) if pairs else ()
    return tuple((c, w / total) for c, w in pairs)


def _dicts(obj: object) -> list[dict[str, Any]]:
    return [x for x in obj if isinstance(x, dict)] if isinstance(obj, list) else []


def _weight(obj: object) -> float:
    if isinstance(obj, dict):  # Envoy's UInt32Value may come as {"value": n}
        obj = obj.get("value")
    try:
        return float(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 1.0


def from_config_dump(doc: object) -> Topology | None:
    """The topology in a `/config_dump` answer, or None if it has neither known shape."""
    if not isinstance(doc, dict):
        return None
    config = doc.get("config")
    if isinstance(config, dict) and "virtual_hosts" in config:
        return _meshdev(config)
    if isinstance(doc.get("configs"), list):
        return _envoy(doc["configs"])
    return None


def _meshdev(config: dict[str, Any]) -> Topology:
    routes: list[RouteInfo] = []
    for vh in _dicts(config.get("virtual_hosts")):
        vname = vh.get("name")
        if not isinstance(vname, str):
            continue
        for r in _dicts(vh.get("routes")):
            if not isinstance(r.get("name"), str):
                continue
            targets = [
                (c["cluster"], _weight(c.get("weight", 1)))
                for c in _dicts(r.get("clusters"))
                if isinstance(c.get("cluster"), str)
            ]
            fault = r.get("fault")
            if not isinstance(fault, dict):
                fault = {}
            routes.append(
                RouteInfo(
                    vname,
                    r["name"],
                    _shares(targets),
                    abort=bool(fault.get("abort")),
                    delay=bool(fault.get("delay")),
                    rate_limit=bool(r.get("rate_limit")),
                )
            )
    listeners = _dicts(config.get("listeners"))
    clusters = _dicts(config.get("clusters"))
    return Topology.make(
        routes,
        clusters=[c["name"] for c in clusters if isinstance(c.get("name"), str)],
        local_clusters=[
            lst["cluster"]
            for lst in listeners
            if lst.get("kind") == "inbound" and isinstance(lst.get("cluster"), str)
        ],
        http_prefixes=[
            p
            for lst in listeners
            if not lst.get("tcp_proxy")
            for p in (lst.get("name"), lst.get("kind"))
            if isinstance(p, str)
        ],
        tcp_clusters=[
            c["cluster"]
            for lst in listeners
            if isinstance(lst.get("tcp_proxy"), dict)
            for c in _dicts(lst["tcp_proxy"].get("clusters"))
            if isinstance(c.get("cluster"), str)
        ],
        service=_caller(config, listeners),
        spiffe_id=config.get("spiffe_id") if isinstance(config.get("spiffe_id"), str) else None,
        tls_clusters=[
            c["name"] for c in clusters if isinstance(c.get("name"), str) and c.get("tls")
        ],
        inbound=_inbound(listeners),
    )


# The gateway's service account (docs/security.md): what authorization calls it.
INGRESS_SERVICE = "ingress"


def _caller(config: dict[str, Any], listeners: list[dict[str, Any]]) -> str | None:
    service = config.get("service")
    if isinstance(service, str) and service:
        return service
    if any(lst.get("kind") == "ingress" for lst in listeners):
        return INGRESS_SERVICE
    return None


def _inbound(listeners: list[dict[str, Any]]) -> InboundListener | None:
    for lst in listeners:
        name, address, port = lst.get("name"), lst.get("address"), lst.get("port")
        if (
            lst.get("kind") == "inbound"
            and isinstance(name, str)
            and isinstance(address, str)
            and isinstance(port, int)
        ):
            mtls = lst.get("mtls")
            return InboundListener(name, address, port, mtls if isinstance(mtls, str) else None)
    return None


def _envoy(configs: list[Any]) -> Topology:
    routes: list[RouteInfo] = []
    clusters: list[str] = []
    tcp: list[str] = []
    tls: list[str] = []
    for cfg in _dicts(configs):
        kind = str(cfg.get("@type", ""))
        if kind.endswith("RoutesConfigDump"):
            for holder in (
                *_dicts(cfg.get("static_route_configs")),
                *_dicts(cfg.get("dynamic_route_configs")),
            ):
                rc = holder.get("route_config")
                if isinstance(rc, dict):
                    routes += _envoy_routes(rc)
        elif kind.endswith("ClustersConfigDump"):
            for holder in (
                *_dicts(cfg.get("static_clusters")),
                *_dicts(cfg.get("dynamic_active_clusters")),
            ):
                c = holder.get("cluster")
                if isinstance(c, dict) and isinstance(c.get("name"), str):
                    clusters.append(c["name"])
                    socket = c.get("transport_socket")
                    if isinstance(socket, dict) and "tls" in str(socket.get("name", "")):
                        tls.append(c["name"])
        elif kind.endswith("ListenersConfigDump"):
            tcp += _envoy_tcp_clusters(cfg)
    return Topology.make(routes, clusters=clusters, tcp_clusters=tcp, tls_clusters=tls)


def _envoy_tcp_clusters(dump: dict[str, Any]) -> list[str]:
    """The clusters Envoy's tcp_proxy filters relay to, in a ListenersConfigDump."""
    listeners = [h.get("listener") for h in _dicts(dump.get("static_listeners"))]
    for holder in _dicts(dump.get("dynamic_listeners")):
        state = holder.get("active_state")
        if isinstance(state, dict):
            listeners.append(state.get("listener"))
    out: list[str] = []
    for lst in listeners:
        if not isinstance(lst, dict):
            continue
        for chain in _dicts(lst.get("filter_chains")):
            for f in _dicts(chain.get("filters")):
                typed = f.get("typed_config")
                if not isinstance(typed, dict) or not str(typed.get("@type", "")).endswith(
                    "tcp_proxy.v3.TcpProxy"
                ):
                    continue
                if isinstance(typed.get("cluster"), str):
                    out.append(typed["cluster"])
                wc = typed.get("weighted_clusters")
                for c in _dicts(wc.get("clusters") if isinstance(wc, dict) else None):
                    if isinstance(c.get("name"), str):
                        out.append(c["name"])
    return out


def _envoy_routes(rc: dict[str, Any]) -> list[RouteInfo]:
    out: list[RouteInfo] = []
    for vh in _dicts(rc.get("virtual_hosts")):
        vname = vh.get("name")
        if not isinstance(vname, str):
            continue
        for r in _dicts(vh.get("routes")):
            action = r.get("route")
            if not isinstance(action, dict):
                continue
            # Envoy names a route's stats by its stat_prefix (and keeps none without one).
            name = action.get("stat_prefix") or r.get("stat_prefix") or r.get("name")
            if not isinstance(name, str) or not name:
                continue
            if isinstance(action.get("cluster"), str):
                targets = [(action["cluster"], 1.0)]
            else:
                wc = action.get("weighted_clusters")
                targets = [
                    (c["name"], _weight(c.get("weight", 1)))
                    for c in _dicts(wc.get("clusters") if isinstance(wc, dict) else None)
                    if isinstance(c.get("name"), str)
                ]
            filters = r.get("typed_per_filter_config")
            names = " ".join(filters) if isinstance(filters, dict) else ""
            out.append(
                RouteInfo(
                    vname,
                    name,
                    _shares(targets),
                    abort="fault" in names,
                    delay="fault" in names,
                    rate_limit="local_ratelimit" in names,
                )
            )
    return out
