"""Route tables: meshdev's virtual hosts and routes as Envoy's RouteConfiguration.

A vhost route maps one to one onto an Envoy route: the same match, weighted clusters, timeout,
retry policy, and its fault and local rate limit as that route's typed_per_filter_config (the
filters sit in the connection manager's chain, configured per route, as Envoy's docs do it).

The gateway is the one place Envoy has no counterpart for meshdev's model: meshdev's ingress
picks a service by its own path routes and then applies that service's routes, two tables
deep; an Envoy route table is one level. `ingress_routes` flattens the two: every (gateway
route, service route) pair whose matches can both hold becomes one route matching both, in
the order meshdev would try them, and each gateway route ends with a 404 so that a request
its service has no route for is not tried against the next gateway route (meshdev answers it
404 too). Each flattened route names its origin in its metadata (`meshdev`), for people
reading config_dump and for the round-trip tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from meshdev.bridges.envoy import proto
from meshdev.bridges.envoy.notes import Notes
from meshdev.bridges.envoy.proto import Json
from meshdev.common import sidecar_config as sc

# Envoy's local rate limit refuses a fill_interval under 50 ms ("must be >= 50ms to avoid too
# aggressive refills"), so a fast bucket is refilled by several tokens at a time.
MIN_FILL_INTERVAL = 0.05
RATE_LIMIT_STAT_PREFIX = "http_local_rate_limiter"
# Envoy's local rate limit answers 429 without meshdev's (and Envoy's global rate limit's)
# `x-envoy-ratelimited: true` unless told to add it.
RATE_LIMITED_HEADER = "x-envoy-ratelimited"
# Route metadata naming where a flattened gateway route came from.
METADATA_KEY = "meshdev"
# Python's `re` accepts these, RE2 (Envoy's safe_regex) does not: lookaround, backreferences,
# possessive quantifiers and atomic groups.
_NOT_RE2 = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=|\(\?>|[*+?}]\+")


def route_field(vhost: str, route: str) -> str:
    """The mesh.yaml place of a vhost's route, named as the user named it."""
    return f"routes.{vhost}[{route}]"


# -- matches ---------------------------------------------------------------------------------


def _regex(value: str, field: str, notes: Notes) -> Json:
    if _NOT_RE2.search(value):
        notes.add(
            field,
            f"{value!r} uses Python regex syntax RE2 lacks (lookaround, backreferences, "
            "possessive or atomic groups): Envoy's safe_regex will reject it",
        )
    return {"regex": value}


def header_matcher(h: sc.HeaderMatch, field: str, notes: Notes) -> Json:
    out: Json = {"name": h.name}
    if h.exact is not None:
        if h.exact:
            out["string_match"] = {"exact": h.exact}
        else:
            # meshdev (after Envoy's exact_match) takes an empty exact value as "any value";
            # a StringMatcher's empty exact only matches an empty value.
            out["present_match"] = True
    elif h.prefix is not None:
        # Every value starts with "", and Envoy refuses an empty prefix: any value will do.
        out.update({"string_match": {"prefix": h.prefix}} if h.prefix else {"present_match": True})
    elif h.regex is not None:
        # An empty regex matches the empty value only; Envoy refuses an empty regex.
        regex = _regex(h.regex, f"{field}.regex", notes) if h.regex else None
        out["string_match"] = {"safe_regex": regex} if regex else {"exact": ""}
    else:
        # "Absent" is "present", inverted: what every Envoy reads the same way (a false
        # present_match has meant different things across versions).
        out["present_match"] = True
        if not h.present:
            out["invert_match"] = not h.invert
            return out
    if h.invert:
        out["invert_match"] = True
    return out


def _methods_matcher(methods: Sequence[str]) -> Json:
    if len(methods) == 1:
        return {"name": ":method", "string_match": {"exact": methods[0]}}
    alternatives = "|".join(re.escape(m) for m in methods)
    return {"name": ":method", "string_match": {"safe_regex": {"regex": alternatives}}}


def _path_specifier(m: sc.RouteMatch, field: str, notes: Notes) -> Json:
    if m.path is not None:
        return {"path": m.path}
    if m.regex is not None:
        return {"safe_regex": _regex(m.regex, f"{field}.regex", notes)}
    # No path condition: every path (Envoy needs a specifier; every path starts with "/").
    return {"prefix": m.prefix if m.prefix is not None else "/"}


def route_match(m: sc.RouteMatch, field: str, notes: Notes) -> Json:
    out = _path_specifier(m, field, notes)
    headers = [_methods_matcher(m.methods)] if m.methods else []
    headers += [header_matcher(h, f"{field}.headers.{h.name}", notes) for h in m.headers]
    if headers:
        out["headers"] = headers
    return out


def _path_as_header(m: sc.RouteMatch, field: str, notes: Notes) -> Json:
    """The path condition of `m` as a matcher of the `:path` header, which holds the query
    string too: a prefix is compared with the whole :path by Envoy's route match as well, and
    `path`/`regex` (compared once the query is removed) allow any query after them."""
    if m.prefix is not None:
        return {"name": ":path", "string_match": {"prefix": m.prefix}}
    body = re.escape(m.path) if m.path is not None else f"(?:{m.regex})"
    regex = _regex(f"{body}(?:\\?.*)?", f"{field}.regex", notes)
    return {"name": ":path", "string_match": {"safe_regex": regex}}


def _has_path(m: sc.RouteMatch) -> bool:
    # Prefix "/" (or "") holds for every path, as no path condition does.
    return m.prefix not in (None, "", "/") or m.path is not None or m.regex is not None


def combined_match(
    outer: sc.RouteMatch, inner: sc.RouteMatch, field: str, notes: Notes
) -> Json | None:
    """One Envoy match that holds exactly when both `outer` (the gateway's) and `inner` (the
    service's) do; None when no request can match both."""
    methods: tuple[str, ...]
    if outer.methods and inner.methods:
        methods = tuple(x for x in inner.methods if x in outer.methods)
        if not methods:
            return None
    else:
        methods = outer.methods or inner.methods
    headers = (*outer.headers, *inner.headers)
    extra: list[Json] = []
    if not _has_path(outer):
        path = inner
    elif not _has_path(inner):
        path = outer
    elif outer.prefix is not None and inner.prefix is not None:
        # Both are compared with the same whole :path: the longer holds both, or neither can.
        if inner.prefix.startswith(outer.prefix):
            path = inner
        elif outer.prefix.startswith(inner.prefix):
            path = outer
        else:
            return None
    else:
        path = inner
        extra.append(_path_as_header(outer, field, notes))
    m = sc.RouteMatch(
        prefix=path.prefix, path=path.path, regex=path.regex, methods=methods, headers=headers
    )
    out = route_match(m, field, notes)
    if extra:
        out["headers"] = [*extra, *out.get("headers", [])]
    return out


def matches_everything(m: sc.RouteMatch) -> bool:
    return (
        not m.methods
        and not m.headers
        and m.path is None
        and m.regex is None
        and m.prefix in (None, "", "/")
    )


# -- actions ---------------------------------------------------------------------------------


def _retry_policy(r: sc.RetryPolicy, field: str, notes: Notes) -> Json:
    out: Json = {"retry_on": ",".join(r.retry_on), "num_retries": r.attempts}
    if r.per_try_timeout is not None:
        out["per_try_timeout"] = proto.duration(r.per_try_timeout)
    if r.retriable_status_codes:
        out["retriable_status_codes"] = list(r.retriable_status_codes)
    if r.max_interval < r.base_interval:
        notes.add(field, "Envoy refuses a retry back-off whose max_interval is below its base")
    out["retry_back_off"] = {
        "base_interval": proto.duration(r.base_interval),
        "max_interval": proto.duration(r.max_interval),
    }
    return out


def fault_runtime_key(vhost: str, route: str, suffix: str) -> str:
    """meshdev's route-scoped runtime key (sidecar/filters/fault.py), which the dashboard
    sets with POST /runtime_modify."""
    return f"fault.http.{vhost}.{route}.{suffix}"


def _fault(vhost: str, route: str, f: sc.Fault, field: str, notes: Notes) -> Json:
    out: Json = {}
    if f.abort is not None:
        pct, exact = proto.fractional_percent(f.abort.percent)
        if not exact:
            notes.add(f"{field}.abort.percent", "rounded to a millionth (Envoy's finest)")
        abort: Json = {"percentage": pct}
        if f.abort.grpc_status is not None:
            abort["grpc_status"] = f.abort.grpc_status
            notes.add(
                f"{field}.abort",
                f"Envoy aborts with either an HTTP status or a gRPC status: grpc_status "
                f"{f.abort.grpc_status} is kept, so a caller that is no gRPC client does not "
                f"get HTTP {f.abort.status}",
            )
        else:
            abort["http_status"] = f.abort.status
        out["abort"] = abort
        out["abort_percent_runtime"] = fault_runtime_key(vhost, route, "abort.abort_percent")
        out["abort_http_status_runtime"] = fault_runtime_key(vhost, route, "abort.http_status")
    if f.delay is not None:
        pct, exact = proto.fractional_percent(f.delay.percent)
        if not exact:
            notes.add(f"{field}.delay.percent", "rounded to a millionth (Envoy's finest)")
        out["delay"] = {"fixed_delay": proto.duration(f.delay.fixed), "percentage": pct}
        out["delay_percent_runtime"] = fault_runtime_key(vhost, route, "delay.fixed_delay_percent")
        out["delay_duration_runtime"] = fault_runtime_key(vhost, route, "delay.fixed_duration_ms")
    notes.add(
        field,
        "Envoy's fault filter honours the x-envoy-fault-* request headers only on a "
        "header_abort/header_delay fault, so they do not tune this fixed one (meshdev lets "
        "them); its runtime keys are this route's own fault.http.<service>.<route>.*, so "
        "Envoy's global fault.http.* keys do not change it",
    )
    return out


def token_bucket(limit: sc.RateLimit) -> tuple[Json, float]:
    """Envoy's stepped bucket for meshdev's continuous one: `burst` tokens, refilled by the
    fewest whole tokens whose interval is at least 50 ms, at `requests_per_second`. Also the
    rate it really allows (lower only when a refill step would exceed the bucket)."""
    rate = limit.requests_per_second
    tokens = max(1, math.ceil(rate * MIN_FILL_INTERVAL - 1e-9))
    interval = tokens / rate
    effective = min(tokens, limit.burst) / interval
    bucket = {
        "max_tokens": limit.burst,
        "tokens_per_fill": tokens,
        "fill_interval": proto.duration(interval),
    }
    return bucket, effective


def _local_rate_limit(limit: sc.RateLimit, field: str, notes: Notes) -> Json:
    bucket, effective = token_bucket(limit)
    if effective < limit.requests_per_second * (1 - 1e-6):
        notes.add(
            field,
            f"Envoy refills a bucket at most every 50 ms, so a burst of {limit.burst} allows "
            f"at most {effective:g} requests/s, not {limit.requests_per_second:g}",
        )
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return proto.typed(
        proto.LOCAL_RATELIMIT,
        {
            "stat_prefix": RATE_LIMIT_STAT_PREFIX,
            "token_bucket": bucket,
            "filter_enabled": {**always, "runtime_key": "local_rate_limit_enabled"},
            "filter_enforced": {**always, "runtime_key": "local_rate_limit_enforced"},
            "response_headers_to_add": [
                {
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    "header": {"key": RATE_LIMITED_HEADER, "value": "true"},
                }
            ],
        },
    )


class ClusterFacts:
    """What routes need to know of the clusters they pick: their stream idle timeout (a
    route's idle_timeout in Envoy), ring-hash header, and whether they speak HTTP/2."""

    def __init__(self, clusters: Iterable[sc.Cluster]) -> None:
        self._by_name = {c.name: c for c in clusters}

    def get(self, name: str) -> sc.Cluster | None:
        return self._by_name.get(name)


def route_action(
    clusters: Sequence[sc.WeightedCluster],
    timeout: float,
    facts: ClusterFacts,
    field: str,
    notes: Notes,
) -> Json:
    out: Json
    if len(clusters) == 1:
        out = {"cluster": clusters[0].cluster}
    else:
        out = {
            "weighted_clusters": {
                "clusters": [{"name": c.cluster, "weight": c.weight} for c in clusters]
            }
        }
    out["timeout"] = proto.duration(timeout)
    targets = [c for wc in clusters if (c := facts.get(wc.cluster)) is not None]
    # meshdev's stream idle timeout belongs to the cluster a stream goes to; Envoy's is the
    # route's (overriding the connection manager's), so the route takes its clusters'.
    idle = sorted({c.stream_idle_timeout for c in targets})
    if idle:
        if len(idle) > 1:
            notes.add(
                field,
                "its clusters have different idle timeouts; Envoy has one per route: "
                f"{proto.duration(idle[-1])} (the longest) is used",
            )
        out["idle_timeout"] = proto.duration(idle[-1])
    headers = list(dict.fromkeys(c.hash_header for c in targets if c.lb == "ring_hash"))
    if headers:
        if len(headers) > 1:
            notes.add(
                field,
                f"its ring_hash clusters hash different headers ({', '.join(map(str, headers))});"
                f" Envoy hashes per route: {headers[0]} is used for all",
            )
        out["hash_policy"] = [{"header": {"header_name": headers[0]}}]
    if any(c.http2 for c in targets):
        # meshdev caps the route timeout with a gRPC call's shorter grpc-timeout (no route
        # timeout: the grpc-timeout alone) and answers a call past it DEADLINE_EXCEEDED.
        # Envoy does both only through the route's max_stream_duration, and once that is set
        # its router ignores `timeout` (kept above for whoever reads the route).
        out["max_stream_duration"] = {
            "max_stream_duration": proto.duration(timeout),
            "grpc_timeout_header_max": proto.duration(timeout),
        }
    return out


def vhost_route(
    vhost: str, r: sc.Route, facts: ClusterFacts, notes: Notes, *, match: Json | None = None
) -> Json:
    """`r` as an Envoy route, with `match` in place of its own (the gateway's flattening)."""
    field = route_field(vhost, r.name)
    action = route_action(r.clusters, r.timeout, facts, field, notes)
    if r.retries is not None:
        action["retry_policy"] = _retry_policy(r.retries, f"{field}.retries", notes)
    out: Json = {
        "name": r.name,
        "match": match if match is not None else route_match(r.match, f"{field}.match", notes),
        "route": action,
        # Envoy's per-route stats, vhost.<vhost>.route.<stat_prefix>.*, as meshdev names them.
        "stat_prefix": r.name,
    }
    per_filter: Json = {}
    if r.rate_limit is not None:
        per_filter[proto.LOCAL_RATELIMIT_FILTER] = _local_rate_limit(
            r.rate_limit, f"{field}.rate_limit", notes
        )
    if r.fault is not None:
        per_filter[proto.FAULT_FILTER] = proto.typed(
            proto.FAULT, _fault(vhost, r.name, r.fault, f"{field}.fault", notes)
        )
    if per_filter:
        out["typed_per_filter_config"] = per_filter
    return out


def virtual_host(v: sc.VirtualHost, facts: ClusterFacts, notes: Notes) -> Json:
    out: Json = {
        "name": v.name,
        "domains": list(v.domains),
        "routes": [vhost_route(v.name, r, facts, notes) for r in v.routes],
    }
    if v.include_attempt_count_in_response:
        out["include_attempt_count_in_response"] = True
    return out


def ingress_attempt_count(
    routes: Sequence[sc.IngressRoute], vhosts: Sequence[sc.VirtualHost], notes: Notes
) -> bool:
    """Whether the gateway's one virtual host includes the attempt count: meshdev sets it per
    service, Envoy per virtual host, so it is on when any service the gateway reaches asks
    for it, and the others' answers then carry it too (noted)."""
    by_name = {v.name: v for v in vhosts}
    reached = [by_name[n] for n in dict.fromkeys(ir.virtual_host for ir in routes)]
    counted = [v.name for v in reached if v.include_attempt_count_in_response]
    others = [v.name for v in reached if not v.include_attempt_count_in_response]
    if counted and others:
        for name in counted:
            notes.add(
                f"policies.{name}.include_attempt_count",
                "the gateway is one Envoy virtual host for every service, and "
                "include_attempt_count_in_response is a virtual host's: through the gateway, "
                f"answers of {', '.join(others)} carry x-envoy-attempt-count too",
            )
    return bool(counted)


def inbound_virtual_host(listener: str, cluster: str, facts: ClusterFacts) -> Json:
    """Istio's inbound route (meshdev's too): everything to the local app, no timeout, no
    retries; its stats are vhost.inbound.route.<listener>.*."""
    notes = Notes()  # one cluster, so nothing to report
    action = route_action(
        (sc.WeightedCluster(cluster=cluster, weight=1),), 0, facts, listener, notes
    )
    return {
        "name": "inbound",
        "domains": ["*"],
        "routes": [
            {"name": listener, "match": {"prefix": "/"}, "route": action, "stat_prefix": listener}
        ],
    }


def ingress_routes(
    routes: Sequence[sc.IngressRoute],
    vhosts: Sequence[sc.VirtualHost],
    facts: ClusterFacts,
    notes: Notes,
) -> list[Json]:
    """The gateway's two tables as one (module doc)."""
    by_name = {v.name: v for v in vhosts}
    out: list[Json] = []
    for ir in routes:
        vhost = by_name[ir.virtual_host]
        field = f"ingress.routes[{ir.name}]"
        covered = False
        for r in vhost.routes:
            match = combined_match(ir.match, r.match, f"{field}.match", notes)
            if match is None:
                continue
            flat = vhost_route(vhost.name, r, facts, notes, match=match)
            flat["name"] = f"{ir.name}/{vhost.name}/{r.name}"
            # Gateway stats per service route: vhost.ingress.route.<service>.<route>.*.
            flat["stat_prefix"] = f"{vhost.name}.{r.name}"
            flat["metadata"] = {
                "filter_metadata": {
                    METADATA_KEY: {
                        "ingress_route": ir.name,
                        "virtual_host": vhost.name,
                        "route": r.name,
                    }
                }
            }
            out.append(flat)
            if matches_everything(r.match):
                covered = True
                break
        if not covered:
            out.append(
                {
                    "name": f"{ir.name}/{vhost.name}/no_route",
                    "match": route_match(ir.match, f"{field}.match", Notes()),
                    "direct_response": {"status": 404},
                    "metadata": {
                        "filter_metadata": {
                            METADATA_KEY: {"ingress_route": ir.name, "virtual_host": vhost.name}
                        }
                    },
                }
            )
    return out
