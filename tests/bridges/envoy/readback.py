"""A bootstrap read back, from Envoy's parsed protos, as the SidecarConfig it says.

`read` walks the Bootstrap message (what Envoy itself would read, not the dicts we wrote) and
rebuilds each part meshdev's config has: clusters, listeners, virtual hosts with their routes,
limits. `expected` puts plan.render's SidecarConfig in the same shape, leaving out only what
an Envoy bootstrap has no place for (the template's max_header_line and max_admin_body, the
spiffe_id, which it holds only inside certificate matchers) and settling what Envoy says in
another place (a cluster's stream idle timeout and ring-hash header, on the routes to it).
The round-trip tests compare the two, field by field.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from envoy.type.v3 import percent_pb2  # type: ignore[import-untyped]

from meshdev.bridges.envoy.bootstrap import ADMIN_VIEW
from meshdev.bridges.envoy.routes import METADATA_KEY
from meshdev.common import sidecar_config as sc
from tests.bridges.envoy.envoy_protos import unpack

Doc = dict[str, Any]
# Envoy's generated messages have no type stubs: their fields are read dynamically.
Msg = Any
_SCALE = {"HUNDRED": 1, "TEN_THOUSAND": 100, "MILLION": 10_000}


def seconds(d: Msg) -> float:
    nanos: int = d.seconds * 10**9 + d.nanos
    return nanos / 1e9


def percent(fp: Msg) -> float:
    name = percent_pb2.FractionalPercent.DenominatorType.Name(fp.denominator)
    return float(fp.numerator) / _SCALE[name]


def rate(x: float) -> float:
    """A refill rate to 7 significant digits: a fill interval is whole nanoseconds, and one
    of 50 ms or more is exact to 1e-8."""
    return float(f"{x:.7g}")


# -- matches ---------------------------------------------------------------------------------


def header(h: Msg) -> sc.HeaderMatch:
    kind = h.WhichOneof("header_match_specifier")
    fields: Doc = {"name": h.name, "invert": h.invert_match}
    if kind == "present_match":
        fields["present"] = h.present_match
    else:
        assert kind == "string_match", kind
        sm = h.string_match
        pattern = sm.WhichOneof("match_pattern")
        assert pattern in ("exact", "prefix", "safe_regex"), pattern
        fields[pattern.removeprefix("safe_")] = (
            sm.safe_regex.regex if pattern == "safe_regex" else getattr(sm, pattern)
        )
    return sc.HeaderMatch.model_validate(fields)


def _methods(h: sc.HeaderMatch) -> tuple[str, ...]:
    if h.exact is not None:
        return (h.exact,)
    assert h.regex is not None
    return tuple(m.replace("\\", "") for m in h.regex.split("|"))


def match(m: Msg) -> tuple[sc.RouteMatch, list[sc.HeaderMatch]]:
    """A route's match; also its :path header conditions (the gateway's flattening)."""
    kind = m.WhichOneof("path_specifier")
    fields: Doc = {}
    if kind == "prefix":
        fields["prefix"] = m.prefix
    elif kind == "path":
        fields["path"] = m.path
    else:
        assert kind == "safe_regex", kind
        fields["regex"] = m.safe_regex.regex
    headers = [header(h) for h in m.headers]
    fields["methods"] = tuple(x for h in headers if h.name == ":method" for x in _methods(h))
    fields["headers"] = tuple(h for h in headers if not h.name.startswith(":"))
    return sc.RouteMatch.model_validate(fields), [h for h in headers if h.name == ":path"]


# -- routes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteFact:
    """What one route says of the clusters it picks: Envoy keeps a cluster's stream idle
    timeout and ring-hash header on the routes to it."""

    clusters: tuple[str, ...]
    idle_timeout: float | None
    hash_headers: tuple[str, ...]
    timeout: float
    max_stream_duration: float | None
    grpc_timeout_max: float | None


class RouteFacts:
    def __init__(self) -> None:
        self.routes: list[RouteFact] = []


def _clusters(action: Msg) -> list[sc.WeightedCluster]:
    if action.WhichOneof("cluster_specifier") == "cluster":
        return [sc.WeightedCluster(cluster=action.cluster, weight=1)]
    return [
        sc.WeightedCluster(cluster=c.name, weight=c.weight.value)
        for c in action.weighted_clusters.clusters
    ]


def route(r: Msg, facts: RouteFacts) -> sc.Route:
    action = r.route
    clusters = _clusters(action)
    timeout = seconds(action.timeout)
    facts.routes.append(
        RouteFact(
            tuple(c.cluster for c in clusters),
            seconds(action.idle_timeout) if action.HasField("idle_timeout") else None,
            tuple(hp.header.header_name for hp in action.hash_policy),
            timeout,
            seconds(action.max_stream_duration.max_stream_duration)
            if action.HasField("max_stream_duration")
            else None,
            seconds(action.max_stream_duration.grpc_timeout_header_max)
            if action.HasField("max_stream_duration")
            else None,
        )
    )
    fields: Doc = {
        "name": r.name,
        "match": match(r.match)[0],
        "clusters": clusters,
        "timeout": timeout,
    }
    assert r.stat_prefix, "every route names its stats"
    if action.HasField("retry_policy"):
        rp = action.retry_policy
        fields["retries"] = sc.RetryPolicy(
            attempts=rp.num_retries.value,
            retry_on=tuple(rp.retry_on.split(",")) if rp.retry_on else (),
            retriable_status_codes=tuple(rp.retriable_status_codes),
            per_try_timeout=seconds(rp.per_try_timeout) if rp.HasField("per_try_timeout") else None,
            base_interval=seconds(rp.retry_back_off.base_interval),
            max_interval=seconds(rp.retry_back_off.max_interval),
        )
    per_filter = r.typed_per_filter_config
    if "envoy.filters.http.fault" in per_filter:
        f = unpack(per_filter["envoy.filters.http.fault"])
        fault: Doc = {}
        if f.HasField("abort"):
            kind = f.abort.WhichOneof("error_type")
            fault["abort"] = {
                "percent": percent(f.abort.percentage),
                "status": f.abort.http_status if kind == "http_status" else 503,
                "grpc_status": f.abort.grpc_status if kind == "grpc_status" else None,
            }
        if f.HasField("delay"):
            fault["delay"] = {
                "fixed": seconds(f.delay.fixed_delay),
                "percent": percent(f.delay.percentage),
            }
        fields["fault"] = sc.Fault.model_validate(fault)
    if "envoy.filters.http.local_ratelimit" in per_filter:
        rl = unpack(per_filter["envoy.filters.http.local_ratelimit"])
        bucket = rl.token_bucket
        assert rl.filter_enabled.default_value.numerator == 100
        assert rl.filter_enforced.default_value.numerator == 100
        fields["rate_limit"] = sc.RateLimit(
            requests_per_second=rate(bucket.tokens_per_fill.value / seconds(bucket.fill_interval)),
            burst=bucket.max_tokens,
        )
    return sc.Route.model_validate(fields)


# -- listeners -------------------------------------------------------------------------------


def _network_filter(lst: Msg) -> Msg:
    filters = lst.filter_chains[0].filters
    assert len(filters) == 1
    return unpack(filters[0].typed_config)


def _mtls(lst: Msg) -> str:
    chains = list(lst.filter_chains)
    secure = [c for c in chains if c.HasField("transport_socket")]
    if not secure:
        return "DISABLE"
    tls = unpack(secure[0].transport_socket.typed_config)
    assert tls.require_client_certificate.value
    return "STRICT" if len(chains) == 1 else "PERMISSIVE"


def _principal(p: Msg) -> tuple[list[str], list[str]]:
    """(principals, not_principals) of a rule's principal, in meshdev's patterns."""
    kind = p.WhichOneof("identifier")
    if kind == "any":
        return [], []
    if kind == "and_ids":
        out: tuple[list[str], list[str]] = ([], [])
        for part in p.and_ids.ids:
            yes, no = _principal(part)
            out[0].extend(yes)
            out[1].extend(no)
        return out
    if kind == "not_id":
        return [], _principal(p.not_id)[0]
    if kind == "or_ids":
        return [x for i in p.or_ids.ids for x in _principal(i)[0]], []
    assert kind == "authenticated", kind
    if not p.authenticated.HasField("principal_name"):
        return ["*"], []
    sm = p.authenticated.principal_name
    pattern = sm.WhichOneof("match_pattern")
    value: str = getattr(sm, pattern)
    if pattern == "suffix":
        return ["*" + value], []
    value = value.removeprefix("spiffe://")
    return [value + "*" if pattern == "prefix" else value], []


def _permission(p: Msg, into: Doc, negated: bool = False, top: bool = True) -> None:
    """Collect a permission's methods and paths (and their negations) into `into`."""
    kind = p.WhichOneof("rule")
    if kind in ("and_rules", "or_rules"):
        for part in getattr(p, kind).rules:
            _permission(part, into, negated, top=False)
    elif kind == "not_rule":
        _permission(p.not_rule, into, True, top=False)
    elif kind == "header":
        into["not_methods" if negated else "methods"].append(p.header.string_match.exact)
    elif kind == "url_path":
        sm = p.url_path.path
        pattern = sm.WhichOneof("match_pattern")
        value = getattr(sm, pattern)
        text = {"prefix": value + "*", "suffix": "*" + value}.get(pattern, value)
        into["not_paths" if negated else "paths"].append(text)
    else:
        assert kind == "any", kind
        # Below the top, `any` can only be Istio's `*` path.
        if not top:
            into["not_paths" if negated else "paths"].append("*")


def _authorization(hcm: Msg) -> list[Doc]:
    out: list[Doc] = []
    for f in hcm.http_filters:
        if f.name != "envoy.filters.http.rbac":
            continue
        rbac = unpack(f.typed_config)
        action = "DENY" if rbac.rules.action == 1 else "ALLOW"
        for name in sorted(rbac.rules.policies):
            policy = rbac.rules.policies[name]
            assert len(policy.permissions) == len(policy.principals) == 1
            rule: Doc = {"methods": [], "not_methods": [], "paths": [], "not_paths": []}
            _permission(policy.permissions[0], rule)
            principals, not_principals = _principal(policy.principals[0])
            rule["principals"] = principals
            rule["not_principals"] = not_principals
            out.append({"name": name, "action": action, "rule": rule})
    return out


def listener(lst: Msg, facts: RouteFacts) -> tuple[Doc, list[Msg], Msg | None]:
    """A listener as meshdev's config has it; also its route config's routes (HTTP) and its
    HTTP connection manager."""
    direction = {0: "ingress", 1: "inbound", 2: "outbound"}[lst.traffic_direction]
    out: Doc = {
        "name": lst.name,
        "kind": direction,
        "address": lst.address.socket_address.address,
        "port": lst.address.socket_address.port_value,
        "bind_to_port": lst.bind_to_port.value if lst.HasField("bind_to_port") else True,
        "use_original_dst": lst.use_original_dst.value,
        "mtls": _mtls(lst),
    }
    network = _network_filter(lst)
    if network.DESCRIPTOR.name == "TcpProxy":
        if network.WhichOneof("cluster_specifier") == "cluster":
            clusters = [{"cluster": network.cluster, "weight": 1}]
        else:
            clusters = [
                {"cluster": c.name, "weight": c.weight} for c in network.weighted_clusters.clusters
            ]
        out["tcp_proxy"] = {
            "stat_prefix": network.stat_prefix,
            "clusters": clusters,
            "idle_timeout": seconds(network.idle_timeout),
        }
        if direction == "inbound":
            out["cluster"] = clusters[0]["cluster"]
        return out, [], None
    assert network.DESCRIPTOR.name == "HttpConnectionManager"
    vhosts = list(network.route_config.virtual_hosts)
    out["authorization"] = _authorization(network)
    routes = [r for v in vhosts for r in v.routes]
    if direction == "inbound":
        assert len(routes) == 1
        out["cluster"] = _clusters(routes[0].route)[0].cluster
        route(routes[0], facts)
    return out, routes, network


def ingress_routes(routes: list[Msg]) -> tuple[list[Doc], dict[str, list[Msg]]]:
    """The gateway's own routes (name, its match, the service) and, per gateway route, the
    flattened routes it holds, from the routes' meshdev metadata."""
    order: list[str] = []
    info: dict[str, Doc] = {}
    held: defaultdict[str, list[Msg]] = defaultdict(list)
    for r in routes:
        meta = dict(r.metadata.filter_metadata[METADATA_KEY].fields)
        name = meta["ingress_route"].string_value
        if name not in info:
            order.append(name)
            info[name] = {"name": name, "virtual_host": meta["virtual_host"].string_value}
        if r.WhichOneof("action") == "direct_response":
            assert r.direct_response.status == 404
            # The gateway route's own match: what its 404 catches.
            info[name]["match"] = match(r.match)[0]
        else:
            held[name].append(r)
    for name in order:
        if "match" not in info[name]:
            # Its last service route matched everything: that route's match is the gateway's.
            info[name]["match"] = match(held[name][-1].match)[0]
    return [info[n] for n in order], dict(held)


def read(bootstrap: Msg) -> Doc:
    """The bootstrap as a SidecarConfig-shaped document (module doc)."""
    facts = RouteFacts()
    listeners: list[Doc] = []
    vhosts: list[Doc] = []
    hcms: list[Msg] = []
    ingress: list[Doc] = []
    for lst in bootstrap.static_resources.listeners:
        if lst.name == ADMIN_VIEW:
            continue
        doc, routes, hcm = listener(lst, facts)
        if hcm is not None:
            hcms.append(hcm)
        if doc["kind"] == "outbound" and hcm is not None:
            for v in hcm.route_config.virtual_hosts:
                vhosts.append(
                    {
                        "name": v.name,
                        "domains": list(v.domains),
                        "routes": [route(r, facts).model_dump(mode="json") for r in v.routes],
                        "include_attempt_count_in_response": v.include_attempt_count_in_response,
                    }
                )
        if doc["kind"] == "ingress":
            ingress, held = ingress_routes(routes)
            doc["routes"] = [
                {
                    "name": i["name"],
                    "match": i["match"].model_dump(mode="json"),
                    "virtual_host": i["virtual_host"],
                }
                for i in ingress
            ]
            doc["flattened"] = {
                name: [(r, route(r, facts)) for r in rs] for name, rs in held.items()
            }
        listeners.append(doc)
    clusters = [cluster(c) for c in bootstrap.static_resources.clusters if c.name != ADMIN_VIEW]
    return {
        "node": bootstrap.node.id,
        "service": bootstrap.node.cluster,
        "admin": {
            "address": bootstrap.admin.address.socket_address.address,
            "port": bootstrap.admin.address.socket_address.port_value,
        },
        "listeners": listeners,
        "virtual_hosts": vhosts,
        "clusters": clusters,
        "limits": [limits(h) for h in hcms],
        "access_log": [access_log(h) for h in hcms],
        "facts": facts,
    }


def limits(hcm: Msg) -> Doc:
    return {
        "header_timeout": seconds(hcm.request_headers_timeout),
        "idle_timeout": seconds(hcm.common_http_protocol_options.idle_timeout),
        "max_headers": hcm.common_http_protocol_options.max_headers_count.value,
        "max_header_bytes": hcm.max_request_headers_kb.value * 1024,
    }


def access_log(hcm: Msg) -> str:
    if not hcm.access_log:
        return "off"
    log = unpack(hcm.access_log[0].typed_config)
    return "stdout" if log.DESCRIPTOR.name == "StdoutAccessLog" else str(log.path)


def cluster(c: Msg) -> Doc:
    endpoints = [
        {
            "address": lb.endpoint.address.socket_address.address,
            "port": lb.endpoint.address.socket_address.port_value,
            "pod": lb.endpoint.hostname,
        }
        for group in c.load_assignment.endpoints
        for lb in group.lb_endpoints
    ]
    thresholds = c.circuit_breakers.thresholds
    assert len(thresholds) == 1 and thresholds[0].priority == 0  # DEFAULT
    t = thresholds[0]
    out: Doc = {
        "name": c.name,
        "type": c.DiscoveryType.Name(c.type),
        "endpoints": endpoints,
        "lb": c.LbPolicy.Name(c.lb_policy).lower(),
        "connect_timeout": seconds(c.connect_timeout),
        "circuit_breaker": {
            "max_connections": t.max_connections.value,
            "max_pending_requests": t.max_pending_requests.value,
            "max_requests": t.max_requests.value,
            "max_retries": t.max_retries.value,
        },
        "outlier_detection": None,
        "http2": False,
        "tls": None,
    }
    if c.HasField("outlier_detection"):
        od = c.outlier_detection
        assert od.enforcing_success_rate.value == 0 and od.HasField("enforcing_success_rate")
        out["outlier_detection"] = {
            "consecutive_5xx": od.consecutive_5xx.value,
            "interval": seconds(od.interval),
            "base_ejection_time": seconds(od.base_ejection_time),
            "max_ejection_percent": od.max_ejection_percent.value,
        }
    options = c.typed_extension_protocol_options
    if options:
        http = unpack(options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"])
        out["http2"] = http.explicit_http_config.HasField("http2_protocol_options")
    if c.HasField("transport_socket"):
        tls = unpack(c.transport_socket.typed_config)
        sans = tls.common_tls_context.validation_context.match_typed_subject_alt_names
        out["tls"] = {"spiffe_ids": [m.matcher.exact for m in sans]}
    return out
