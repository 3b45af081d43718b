"""Listeners: each rendered listener as an Envoy listener with one network filter, the HTTP
connection manager or tcp_proxy, as meshdev's sidecar runs them.

- inbound: to the local app through the `inbound|<port>` cluster, with the service's mutual
  TLS mode (STRICT: a TLS filter chain only; PERMISSIVE: a TLS and a plaintext chain told apart
  by the tls_inspector, as Istio's) and its authorization policies as RBAC filters (Istio's
  shape: one DENY filter, then one ALLOW filter when there are ALLOW policies);
- outbound: every service's virtual host, chosen by Host (also for requests made through
  HTTP_PROXY, whose absolute URLs Envoy must be told to accept);
- ingress: the gateway's flattened route table (routes.py);
- tcp: tcp_proxy to one cluster or weighted ones, with its idle timeout.

Every HTTP connection manager carries the sidecar's limits (limits.* of the template), the
WebSocket upgrade meshdev proxies, and the access log it writes.
"""

from __future__ import annotations

import math

from meshdev.bridges.envoy import proto
from meshdev.bridges.envoy.clusters import tls_context
from meshdev.bridges.envoy.notes import Notes
from meshdev.bridges.envoy.proto import Json
from meshdev.bridges.envoy.routes import (
    ClusterFacts,
    inbound_virtual_host,
    ingress_attempt_count,
    ingress_routes,
    virtual_host,
)
from meshdev.bridges.envoy.tracing import hcm_tracing
from meshdev.common import sidecar_config as sc

# The template's limits (templates/sidecar.yaml), named for notes.
LIMITS = "templates/sidecar.yaml limits"


def access_log(target: str) -> list[Json]:
    if target == "off":
        return []
    if target == "stdout":
        return [
            {"name": "envoy.access_loggers.stdout", "typed_config": proto.typed(proto.STDOUT_LOG)}
        ]
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": proto.typed(proto.FILE_LOG, {"path": target}),
        }
    ]


def _limits(limits: sc.Limits, notes: Notes) -> Json:
    kb = math.ceil(limits.max_header_bytes / 1024)
    if kb * 1024 != limits.max_header_bytes:
        notes.add(
            f"{LIMITS}.max_header_bytes",
            f"Envoy counts request headers in KiB: {limits.max_header_bytes} bytes become {kb} KiB",
        )
    notes.add(
        f"{LIMITS}.max_header_line",
        "Envoy has no limit on one header line, only on all request headers "
        "(max_request_headers_kb)",
    )
    return {
        "request_headers_timeout": proto.duration(limits.header_timeout),
        "common_http_protocol_options": {
            "idle_timeout": proto.duration(limits.idle_timeout),
            "max_headers_count": limits.max_headers,
        },
        "max_request_headers_kb": kb,
    }


def _routes_use(route_config: Json, filter_name: str) -> bool:
    return any(
        filter_name in r.get("typed_per_filter_config", {})
        for v in route_config["virtual_hosts"]
        for r in v["routes"]
    )


def http_connection_manager(
    stat_prefix: str,
    route_config: Json,
    cfg: sc.SidecarConfig,
    notes: Notes,
    *,
    proxy_requests: bool = False,
    rbac: list[Json] | None = None,
) -> Json:
    """`proxy_requests`: the app sends it absolute URLs (HTTP_PROXY)."""
    filters: list[Json] = list(rbac or [])
    # Envoy's filter order is meshdev's pipeline's: authorization, rate limit, fault, router.
    # A filter is in the chain only where some route configures it, as with Istio.
    if _routes_use(route_config, proto.LOCAL_RATELIMIT_FILTER):
        filters.append(
            {
                "name": proto.LOCAL_RATELIMIT_FILTER,
                "typed_config": proto.typed(
                    proto.LOCAL_RATELIMIT, {"stat_prefix": "http_local_rate_limiter"}
                ),
            }
        )
    if _routes_use(route_config, proto.FAULT_FILTER):
        filters.append({"name": proto.FAULT_FILTER, "typed_config": proto.typed(proto.FAULT)})
    filters.append({"name": proto.ROUTER_FILTER, "typed_config": proto.typed(proto.ROUTER)})
    out: Json = {
        "stat_prefix": stat_prefix,
        # HTTP/1.1, or h2c told by its preface (gRPC callers), as meshdev's listeners take.
        "codec_type": "AUTO",
        "route_config": route_config,
        "http_filters": filters,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        **_limits(cfg.limits, notes),
    }
    logs = access_log(cfg.access_log)
    if logs:
        out["access_log"] = logs
    tracing = hcm_tracing(cfg, notes)
    if tracing is not None:
        out["tracing"] = tracing
    if proxy_requests:
        out["http_protocol_options"] = {"allow_absolute_url": True}
    return out


def _hcm_filter(hcm: Json) -> Json:
    return {"name": proto.HCM_FILTER, "typed_config": proto.typed(proto.HCM, hcm)}


def _tcp_filter(tcp: sc.TcpProxy, cfg: sc.SidecarConfig) -> Json:
    body: Json = {"stat_prefix": tcp.stat_prefix, "idle_timeout": proto.duration(tcp.idle_timeout)}
    # Envoy's tcp weighted cluster refuses a weight of 0; meshdev never picks one either.
    picked = [wc for wc in tcp.clusters if wc.weight > 0]
    if len(picked) == 1:
        body["cluster"] = picked[0].cluster
    else:
        body["weighted_clusters"] = {
            "clusters": [{"name": wc.cluster, "weight": wc.weight} for wc in picked]
        }
    logs = access_log(cfg.access_log)
    if logs:
        body["access_log"] = logs
    return {"name": proto.TCP_PROXY_FILTER, "typed_config": proto.typed(proto.TCP_PROXY, body)}


# -- authorization ---------------------------------------------------------------------------


def _string_pattern(pattern: str, scheme: str = "") -> Json | None:
    """Istio's pattern (exact, prefix*, *suffix, *) as a StringMatcher; None for `*`."""
    if pattern == "*":
        return None
    if pattern.endswith("*"):
        return {"prefix": scheme + pattern[:-1]}
    if pattern.startswith("*"):
        return {"suffix": pattern[1:]}
    return {"exact": scheme + pattern}


def _any_of(ids: list[Json], key: str) -> Json:
    return ids[0] if len(ids) == 1 else {f"or_{key}": {key: ids}}


def _principal(pattern: str) -> Json:
    # Envoy matches the certificate's URI SAN, scheme included; `*` is any verified peer.
    matcher = _string_pattern(pattern, "spiffe://")
    return {"authenticated": {"principal_name": matcher} if matcher else {}}


def _principals(rule: sc.AuthzRule) -> Json:
    parts: list[Json] = []
    if rule.principals:
        parts.append(_any_of([_principal(p) for p in rule.principals], "ids"))
    if rule.not_principals:
        parts.append({"not_id": _any_of([_principal(p) for p in rule.not_principals], "ids")})
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {"and_ids": {"ids": parts}}


def _method(m: str) -> Json:
    return {"header": {"name": ":method", "string_match": {"exact": m}}}


def _path(pattern: str) -> Json:
    matcher = _string_pattern(pattern)
    if matcher is None:
        return {"any": True}
    return {"url_path": {"path": matcher}}


def _permissions(rule: sc.AuthzRule) -> Json:
    parts: list[Json] = []
    if rule.methods:
        parts.append(_any_of([_method(m) for m in rule.methods], "rules"))
    if rule.not_methods:
        parts.append({"not_rule": _any_of([_method(m) for m in rule.not_methods], "rules")})
    if rule.paths:
        parts.append(_any_of([_path(p) for p in rule.paths], "rules"))
    if rule.not_paths:
        parts.append({"not_rule": _any_of([_path(p) for p in rule.not_paths], "rules")})
    if not parts:
        return {"any": True}
    return parts[0] if len(parts) == 1 else {"and_rules": {"rules": parts}}


def rbac_filters(policies: tuple[sc.AuthzPolicy, ...]) -> list[Json]:
    """Istio's RBAC filters: DENY policies first; then, if any ALLOW policy exists, an ALLOW
    filter (with no policy in it when the ALLOW policies have no rules: allow-nothing)."""
    out: list[Json] = []
    for action in ("DENY", "ALLOW"):
        chosen = [p for p in policies if p.action == action]
        if not chosen:
            continue
        envoy_policies: Json = {}
        for p in chosen:
            for i, rule in enumerate(p.rules):
                name = p.name if len(p.rules) == 1 else f"{p.name}[{i}]"
                envoy_policies[name] = {
                    "permissions": [_permissions(rule)],
                    "principals": [_principals(rule)],
                }
        out.append(
            {
                "name": proto.RBAC_FILTER,
                "typed_config": proto.typed(
                    proto.RBAC, {"rules": {"action": action, "policies": envoy_policies}}
                ),
            }
        )
    return out


# -- listeners -------------------------------------------------------------------------------


def _chains(
    lst: sc.Listener, network_filter: Json, cfg: sc.SidecarConfig
) -> tuple[list[Json], list[Json]]:
    """The filter chains of a listener and its listener filters, by its mTLS mode."""
    if lst.kind != "inbound" or lst.mtls == "DISABLE":
        return [{"filters": [network_filter]}], []
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": proto.typed(
            proto.DOWNSTREAM_TLS,
            {
                "common_tls_context": {
                    **_server_tls_context(),
                    "alpn_protocols": ["h2", "http/1.1"],
                },
                "require_client_certificate": True,
            },
        ),
    }
    secure: Json = {
        "filters": [network_filter],
        "transport_socket": tls,
        "transport_socket_connect_timeout": proto.duration(cfg.limits.tls_handshake_timeout),
    }
    if lst.mtls == "STRICT":
        return [secure], []
    # PERMISSIVE: the first bytes tell TLS from plaintext (Envoy's tls_inspector).
    secure["filter_chain_match"] = {"transport_protocol": "tls"}
    plain = {
        "filter_chain_match": {"transport_protocol": "raw_buffer"},
        "filters": [network_filter],
    }
    inspector = {
        "name": "envoy.filters.listener.tls_inspector",
        "typed_config": proto.typed(proto.TLS_INSPECTOR),
    }
    return [secure, plain], [inspector]


def _server_tls_context() -> Json:
    # Any workload of the mesh may connect (its certificate must chain to the mesh's CA);
    # which ones may do what is authorization's business.
    ctx = tls_context(())
    del ctx["validation_context"]["match_typed_subject_alt_names"]
    return ctx


def listener(lst: sc.Listener, cfg: sc.SidecarConfig, facts: ClusterFacts, notes: Notes) -> Json:
    if lst.tcp_proxy is not None:
        network_filter = _tcp_filter(lst.tcp_proxy, cfg)
    elif lst.kind == "inbound":
        assert lst.cluster is not None
        route_config = {
            "name": lst.name,
            "virtual_hosts": [inbound_virtual_host(lst.name, lst.cluster, facts)],
        }
        hcm = http_connection_manager(
            lst.name, route_config, cfg, notes, rbac=rbac_filters(lst.authorization)
        )
        if lst.authorization:
            # Istio's BASE normalization, which authorization paths are checked after.
            hcm["normalize_path"] = True
        network_filter = _hcm_filter(hcm)
    elif lst.kind == "ingress":
        notes.add(
            "ingress.routes",
            "Envoy has one route table where meshdev's gateway has two (its routes, then the "
            "service's): they are flattened, so the gateway's route stats are "
            "vhost.ingress.route.<service>.<route>.* rather than vhost.<service>.route.<route>.*",
        )
        gateway: Json = {
            "name": "ingress",
            "domains": ["*"],
            "routes": ingress_routes(lst.routes, cfg.virtual_hosts, facts, notes),
        }
        if ingress_attempt_count(lst.routes, cfg.virtual_hosts, notes):
            gateway["include_attempt_count_in_response"] = True
        route_config = {"name": lst.name, "virtual_hosts": [gateway]}
        network_filter = _hcm_filter(http_connection_manager(lst.name, route_config, cfg, notes))
    else:
        route_config = {
            "name": lst.name,
            "virtual_hosts": [virtual_host(v, facts, notes) for v in cfg.virtual_hosts],
        }
        network_filter = _hcm_filter(
            http_connection_manager(lst.name, route_config, cfg, notes, proxy_requests=True)
        )
    chains, listener_filters = _chains(lst, network_filter, cfg)
    out: Json = {
        "name": lst.name,
        "address": proto.socket_address(lst.address, lst.port),
        "filter_chains": chains,
    }
    if lst.kind != "ingress":
        out["traffic_direction"] = "INBOUND" if lst.kind == "inbound" else "OUTBOUND"
    if not lst.bind_to_port:
        out["bind_to_port"] = False
    if lst.use_original_dst:
        out["use_original_dst"] = True
        listener_filters.append(
            {
                "name": "envoy.filters.listener.original_dst",
                "typed_config": proto.typed(proto.ORIGINAL_DST),
            }
        )
        notes.add(
            f"listeners.{lst.name}.use_original_dst",
            "a captured connection with no listener of its own is relayed unchanged by "
            "meshdev (Istio's PassthroughCluster); this bootstrap has no such cluster and "
            "answers it from the outbound listener's routes",
        )
    if listener_filters:
        out["listener_filters"] = listener_filters
    return out
