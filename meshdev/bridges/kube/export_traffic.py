"""The Istio half of an export's traffic: per destination a VirtualService (its routes) and a
DestinationRule (its subsets and policy), the ingress as a Gateway and a VirtualService bound
to it, and local rate limits as EnvoyFilters (Istio has no resource for them)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.export_workloads import Doc, Target, labels, metadata
from meshdev.bridges.kube.report import Gaps
from meshdev.common.envoy_names import GRPC_STATUS_NAMES, HTTP2_PROTOCOLS
from meshdev.config.model import (
    HeaderMatch,
    Ingress,
    IngressRoute,
    Match,
    Mesh,
    Policy,
    Route,
)

NETWORKING = "networking.istio.io/v1"
ENVOY_FILTER_API = "networking.istio.io/v1alpha3"
HCM = "envoy.filters.network.http_connection_manager"
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
STAT_PREFIX = "http_local_rate_limiter"
# meshdev's routes when a destination has none (plan._virtual_host): all its pods, Envoy's
# route timeout, no retries.
IMPLICIT_ROUTES = (Route(name="default"),)
LB_NAMES = {"round_robin": "ROUND_ROBIN", "least_request": "LEAST_REQUEST", "random": "RANDOM"}


@dataclass(frozen=True)
class RateLimited:
    """A route with a local rate limit, where Envoy knows it: the route configuration's
    virtual host (sidecars) or port (the gateway), and the route's name."""

    vhosts: tuple[str, ...]
    route: str
    requests_per_second: float
    burst: int


@dataclass
class Limits:
    sidecars: list[RateLimited] = field(default_factory=list)
    gateway: list[RateLimited] = field(default_factory=list)


# -- durations ----------------------------------------------------------------------------


def duration(seconds: float, where: str, gaps: Gaps, *, allow_zero: bool = False) -> str:
    """Istio's duration for `seconds`, which must be a whole number of milliseconds of at
    least 1 ms (0 where Istio allows it); anything else is rounded, and said."""
    if allow_zero and seconds == 0:
        return "0s"
    if seconds < 0.001:
        gaps.add(where, "Istio's durations are at least 1ms: written as 1ms")
        return "1ms"
    if not kc.ms_exact(seconds):
        text = kc.istio_duration(seconds)
        gaps.add(where, f"Istio's durations are whole milliseconds: written as {text}")
        return text
    return kc.istio_duration(seconds)


# -- matches ------------------------------------------------------------------------------


def string_match(h: HeaderMatch) -> Doc:
    if h.exact is not None:
        return {"exact": h.exact}
    if h.prefix is not None:
        return {"prefix": h.prefix}
    if h.regex is not None:
        return {"regex": h.regex}
    # Istio's empty match: the header is present (under withoutHeaders: absent).
    return {}


def methods_of(m: Match) -> tuple[str, ...]:
    return (m.method,) if isinstance(m.method, str) else (m.method or ())


def http_match(m: Match) -> list[Doc]:
    """Istio's match list (any entry matches) for one meshdev match (all must hold): one
    entry, or one per method, since Istio's method is a single string match."""
    base: Doc = {}
    if m.prefix is not None:
        base["uri"] = {"prefix": m.prefix}
    elif m.path is not None:
        base["uri"] = {"exact": m.path}
    elif m.regex is not None:
        base["uri"] = {"regex": m.regex}
    headers: Doc = {}
    absent: Doc = {}
    for name, h in m.headers.items():
        # Istio takes header names in lower case; HTTP's are case-insensitive.
        if h.present is False:
            absent[name.lower()] = {}
        else:
            headers[name.lower()] = string_match(h)
    if headers:
        base["headers"] = headers
    if absent:
        base["withoutHeaders"] = absent
    methods = methods_of(m)
    if not methods:
        return [base] if base else []
    return [{**base, "method": {"exact": meth}} for meth in methods]


# -- routes -------------------------------------------------------------------------------


def destinations(dest: str, to: str | Any, port: int | None = None) -> list[Doc]:
    targets: Iterable[tuple[str, int | None]]
    if to is None:
        targets = [(dest, None)]
    elif isinstance(to, str):
        targets = [(to, None)]
    elif len(to) == 1:
        # One target takes everything whatever its weight: written as in Istio's samples.
        targets = [(next(iter(to)), None)]
    else:
        targets = list(to.items())
    out: list[Doc] = []
    for target, weight in targets:
        service, _, subset = target.partition(".")
        d: Doc = {"host": service}
        if subset:
            d["subset"] = subset
        if port is not None:
            d["port"] = {"number": port}
        entry: Doc = {"destination": d}
        if weight is not None:
            entry["weight"] = weight
        out.append(entry)
    return out


def retries(r: Route, where: str, gaps: Gaps) -> Doc:
    rt = r.retries
    # Istio retries twice by default where a route says nothing; meshdev (as Envoy) never.
    if rt is None or rt.attempts == 0 or not rt.retry_on:
        return {"attempts": 0}
    codes = []
    for i, code in enumerate(rt.retriable_status_codes):
        if code in kc.KNOWN_STATUS_CODES:
            codes.append(str(code))
        else:
            gaps.add(
                f"{where}.retries.retriable_status_codes[{i}]",
                f"Istio takes only status codes Go's net/http names in retryOn: {code} left out",
            )
    out: Doc = {"attempts": rt.attempts, "retryOn": ",".join([*rt.retry_on, *codes])}
    if rt.per_try_timeout is not None:
        out["perTryTimeout"] = duration(
            rt.per_try_timeout, f"{where}.retries.per_try_timeout", gaps
        )
    return out


def fault(r: Route, grpc: bool, where: str, gaps: Gaps) -> Doc | None:
    if r.fault is None:
        return None
    out: Doc = {}
    if r.fault.delay is not None:
        d = r.fault.delay
        out["delay"] = {
            "percentage": {"value": d.percent},
            "fixedDelay": duration(d.fixed, f"{where}.fault.delay.fixed", gaps),
        }
    a = r.fault.abort
    if a is not None:
        abort: Doc = {"percentage": {"value": a.percent}}
        # Istio's abort has one error type; meshdev's may answer gRPC callers and others apart.
        if a.grpc_status is not None and (a.status is None or grpc):
            abort["grpcStatus"] = GRPC_STATUS_NAMES[a.grpc_status]
            if a.status is not None:
                gaps.add(
                    f"{where}.fault.abort.status",
                    "Istio's abort has one of httpStatus and grpcStatus: grpcStatus is kept "
                    "(a gRPC service's callers), status left out",
                )
        else:
            abort["httpStatus"] = a.status if a.status is not None else 503
            if a.grpc_status is not None:
                gaps.add(
                    f"{where}.fault.abort.grpc_status",
                    "Istio's abort has one of httpStatus and grpcStatus: httpStatus is kept "
                    "(an HTTP service's callers), grpc_status left out",
                )
        out["abort"] = abort
    return out


def http_route(
    mesh: Mesh,
    dest: str,
    name: str,
    r: Route,
    match: Match,
    where: str,
    gaps: Gaps,
    port: int | None = None,
) -> Doc:
    """One Istio HTTPRoute: `match` may differ from the route's own (the gateway's are the
    ingress route's and the destination route's together)."""
    grpc = mesh.services[dest].protocol in HTTP2_PROTOCOLS
    out: Doc = {"name": name}
    entries = http_match(match)
    if entries:
        out["match"] = entries
    out["route"] = destinations(dest, r.to, port)
    # Istio's default is no timeout; meshdev's is Envoy's 15s, so it is always written, and
    # meshdev's 0s (none) is Istio's absent one.
    if r.timeout > 0:
        out["timeout"] = duration(r.timeout, f"{where}.timeout", gaps)
    out["retries"] = retries(r, where, gaps)
    f = fault(r, grpc, where, gaps)
    if f is not None:
        out["fault"] = f
    return out


def route_name(r: Route, index: int) -> str:
    return r.name or f"r{index}"


def virtual_service(mesh: Mesh, dest: str, target: Target, gaps: Gaps) -> Doc | None:
    svc = mesh.services[dest]
    given = mesh.routes.get(dest)
    spec: Doc = {"hosts": [dest]}
    if svc.protocol == "tcp":
        if not given:
            return None
        # A tcp destination's one route only splits connections (Envoy's tcp_proxy).
        spec["tcp"] = [{"route": destinations(dest, given[0].to)}]
    else:
        routes = given or IMPLICIT_ROUTES
        spec["http"] = [
            http_route(mesh, dest, route_name(r, i), r, r.match, f"routes.{dest}[{i}]", gaps)
            for i, r in enumerate(routes)
        ]
    return {
        "apiVersion": NETWORKING,
        "kind": "VirtualService",
        "metadata": metadata(dest, target.namespace, labels(mesh, app=dest)),
        "spec": spec,
    }


def sidecar_scope(mesh: Mesh, service: str, target: Target, gaps: Gaps) -> Doc | None:
    """`calls:` as Istio's Sidecar resource for the service's workloads: egress hosts in
    `namespace/dnsName` form (`./` is the Sidecar's own namespace); no service at all is
    Istio's `~/*` (a namespace that holds nothing). None: no `calls:`, every service."""
    calls = mesh.services[service].calls
    if calls is None:
        return None
    hosts = [f"./{kc.fqdn(dest, target.namespace)}" for dest in calls] or [kc.NO_HOSTS]
    gaps.add(
        f"services.{service}.calls",
        "Istio's Sidecar scopes the config as calls: does, but with its default "
        "outboundTrafficPolicy (ALLOW_ANY) a call outside it goes through as passthrough, "
        "without the callee's routes and policies, where meshdev answers 404 NR; "
        "outboundTrafficPolicy REGISTRY_ONLY would refuse it (502), and every host outside "
        "the mesh with it",
    )
    return {
        "apiVersion": NETWORKING,
        "kind": "Sidecar",
        "metadata": metadata(service, target.namespace, labels(mesh, app=service)),
        "spec": {
            "workloadSelector": {"labels": {kc.APP: service}},
            "egress": [{"hosts": hosts}],
        },
    }


def sidecar_limits(mesh: Mesh, dest: str, target: Target) -> list[RateLimited]:
    svc = mesh.services[dest]
    out = []
    for i, r in enumerate(mesh.routes.get(dest, ())):
        if r.rate_limit is None:
            continue
        # Istio names an outbound virtual host <fqdn>:<port>: one per port it is called on.
        ports = sorted({kc.CALL_PORT, svc.port})
        vhosts = tuple(f"{kc.fqdn(dest, target.namespace)}:{p}" for p in ports)
        out.append(RateLimited(vhosts, route_name(r, i), *bucket(r)))
    return out


def bucket(r: Route) -> tuple[float, int]:
    assert r.rate_limit is not None
    rps = r.rate_limit.requests_per_second
    # The plan's default bucket: a second's worth of tokens, at least one.
    return rps, r.rate_limit.burst or max(1, math.ceil(rps))


# -- policies -----------------------------------------------------------------------------


def traffic_policy(mesh: Mesh, dest: str, policy: Policy, gaps: Gaps) -> Doc:
    where = f"policies.{dest}"
    tcp = mesh.services[dest].protocol == "tcp"
    out: Doc = {}
    if policy.lb == "ring_hash":
        if tcp or policy.hash_header is None:
            out["loadBalancer"] = {"consistentHash": {"useSourceIp": True}}
        else:
            out["loadBalancer"] = {"consistentHash": {"httpHeaderName": policy.hash_header}}
    else:
        # Written even for round_robin: Istio's default is LEAST_REQUEST.
        out["loadBalancer"] = {"simple": LB_NAMES[policy.lb]}
    cb = policy.circuit_breaker
    tcp_pool: Doc = {
        "maxConnections": cb.max_connections,
        "connectTimeout": duration(policy.connect_timeout, f"{where}.connect_timeout", gaps),
    }
    if policy.idle_timeout is not None:
        if tcp:
            tcp_pool["idleTimeout"] = duration(
                policy.idle_timeout, f"{where}.idle_timeout", gaps, allow_zero=True
            )
        else:
            gaps.add(
                f"{where}.idle_timeout",
                "an HTTP service's idle timeout is Envoy's stream_idle_timeout (its upgraded "
                "connections), which Istio sets mesh-wide only; connectionPool.http.idleTimeout "
                "closes idle pooled connections instead: left out",
            )
    if policy.include_attempt_count:
        gaps.add(
            f"{where}.include_attempt_count",
            "Envoy's include_attempt_count_in_response, which no Istio resource sets (an "
            "EnvoyFilter patching the virtual host would): left out",
        )
    # Every threshold is written: Istio's defaults are unlimited where Envoy's are 1024 (3
    # retries), which meshdev keeps.
    out["connectionPool"] = {
        "tcp": tcp_pool,
        "http": {
            "http1MaxPendingRequests": cb.max_pending_requests,
            "http2MaxRequests": cb.max_requests,
            "maxRetries": cb.max_retries,
        },
    }
    od = policy.outlier_detection
    if od is not None:
        percent = round(od.max_ejection_percent)
        if percent != od.max_ejection_percent:
            gaps.add(
                f"{where}.outlier_detection.max_ejection_percent",
                f"Istio's maxEjectionPercent is a whole number: written as {percent}",
            )
        out["outlierDetection"] = {
            "consecutive5xxErrors": od.consecutive_5xx,
            "interval": duration(od.interval, f"{where}.outlier_detection.interval", gaps),
            "baseEjectionTime": duration(
                od.base_ejection_time, f"{where}.outlier_detection.base_ejection_time", gaps
            ),
            "maxEjectionPercent": percent,
        }
    return out


def destination_rule(mesh: Mesh, dest: str, target: Target, gaps: Gaps) -> Doc:
    svc = mesh.services[dest]
    policy = mesh.policies.get(dest) or Policy()
    spec: Doc = {"host": dest, "trafficPolicy": traffic_policy(mesh, dest, policy, gaps)}
    if svc.versions:
        spec["subsets"] = [{"name": v, "labels": {kc.VERSION: v}} for v in sorted(svc.versions)]
    return {
        "apiVersion": NETWORKING,
        "kind": "DestinationRule",
        "metadata": metadata(dest, target.namespace, labels(mesh, app=dest)),
        "spec": spec,
    }


# -- the ingress --------------------------------------------------------------------------


class Unmergeable(Exception):
    """Two matches whose conjunction one Istio match cannot say."""


_NEVER = object()


def _uri(m: Match) -> tuple[str, str] | None:
    for kind in ("prefix", "path", "regex"):
        value = getattr(m, kind)
        if value is not None:
            return kind, value
    return None


def _merge_uri(a: tuple[str, str] | None, b: tuple[str, str] | None) -> object:
    if a is None or b is None or a == b:
        return a or b
    (ka, va), (kb, vb) = a, b
    if "regex" in (ka, kb):
        raise Unmergeable("a path regex and another path condition")
    if ka == kb == "prefix":
        if vb.startswith(va):
            return b
        return a if va.startswith(vb) else _NEVER
    if ka == kb == "path":
        return _NEVER
    exact, prefix = (va, vb) if ka == "path" else (vb, va)
    return ("path", exact) if exact.startswith(prefix) else _NEVER


def merge_match(outer: Match, inner: Match) -> Match | None:
    """Both matches at once (the gateway's route, then the destination's), or None when no
    request can match both; raises Unmergeable when Istio cannot say it in one match."""
    uri = _merge_uri(_uri(outer), _uri(inner))
    if uri is _NEVER:
        return None
    outer_methods, inner_methods = methods_of(outer), methods_of(inner)
    methods = inner_methods
    if outer_methods and inner_methods:
        methods = tuple(m for m in inner_methods if m in outer_methods)
        if not methods:
            return None
    elif outer_methods:
        methods = outer_methods
    headers: dict[str, HeaderMatch] = {k.lower(): v for k, v in outer.headers.items()}
    for name, h in inner.headers.items():
        key = name.lower()
        if key in headers and headers[key] != h:
            raise Unmergeable(f"two conditions on header {key}")
        headers[key] = h
    fields: dict[str, Any] = {"headers": headers}
    if isinstance(uri, tuple):
        fields[uri[0]] = uri[1]
    if methods:
        fields["method"] = methods[0] if len(methods) == 1 else methods
    return Match(**fields)


@dataclass(frozen=True)
class GatewayRoute:
    """One route of the gateway's VirtualService: meshdev's ingress route with one of its
    destination's routes (`source`), the two matches together."""

    name: str
    dest: str
    source: Route
    match: Match
    where: str


def gateway_routes(mesh: Mesh, ingress: Ingress, gaps: Gaps) -> list[GatewayRoute]:
    """meshdev's gateway picks a service by path and then applies that service's routes, as
    any caller; an Istio gateway applies only its own VirtualService, so each ingress route is
    written with its service's routes folded in."""
    out: list[GatewayRoute] = []
    for k, ir in enumerate(ingress.routes):
        base = ir.name or f"r{k}"
        given = mesh.routes.get(ir.to)
        routes = given or IMPLICIT_ROUTES
        try:
            merged = [(i, r, merge_match(ir.match, r.match)) for i, r in enumerate(routes)]
        except Unmergeable as exc:
            gaps.add(
                f"ingress.routes[{k}]",
                f"its match and routes.{ir.to}'s together need {exc}, which one Istio match "
                f"cannot say: the gateway sends this path to {ir.to} without its routes "
                "(its DestinationRule still applies)",
            )
            out.append(
                GatewayRoute(base, ir.to, IMPLICIT_ROUTES[0], ir.match, f"ingress.routes[{k}]")
            )
            continue
        for i, r, m in merged:
            if m is None:
                continue  # no request takes both: Istio would never use it either
            name = f"{base}.{route_name(r, i)}" if given else base
            where = f"routes.{ir.to}[{i}]" if given else f"ingress.routes[{k}]"
            out.append(GatewayRoute(name, ir.to, r, m, where))
    return out


def ingress_annotation(ingress: Ingress) -> str:
    """The ingress routes as the mesh file says them, so an import gets them back rather than
    their folded form (it checks that they still fold into the VirtualService's routes)."""
    return json.dumps(
        [ir.model_dump(mode="json", exclude_defaults=True) for ir in ingress.routes],
        separators=(",", ":"),
        sort_keys=True,
    )


def gateway_http(mesh: Mesh, ingress: Ingress, gaps: Gaps) -> list[Doc]:
    return [
        http_route(mesh, g.dest, g.name, g.source, g.match, g.where, gaps, port=kc.CALL_PORT)
        for g in gateway_routes(mesh, ingress, gaps)
    ]


def parse_ingress_annotation(text: str) -> list[IngressRoute] | None:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, list):
        return None
    try:
        return [IngressRoute.model_validate(r) for r in raw]
    except ValueError:
        return None


def gateway(mesh: Mesh, ingress: Ingress, target: Target, gaps: Gaps) -> list[Doc]:
    gaps.add(
        "ingress.port",
        f"meshdev publishes the gateway on 127.0.0.1:{ingress.port}; on a cluster Istio's "
        f"ingress gateway Service publishes it (port 80 to its pods' {kc.GATEWAY_PORT}, which "
        "the Gateway listens on): README.txt says how to reach it on this port",
    )
    gw = {
        "apiVersion": NETWORKING,
        "kind": "Gateway",
        "metadata": metadata(
            kc.INGRESS_NAME,
            target.namespace,
            labels(mesh),
            {
                kc.INGRESS_PORT_ANNOTATION: str(ingress.port),
                **({kc.LOAD_PATH_ANNOTATION: ingress.load_path} if ingress.load_path else {}),
            },
        ),
        "spec": {
            "selector": dict(kc.GATEWAY_SELECTOR),
            "servers": [
                {
                    "port": {"number": kc.GATEWAY_PORT, "name": "http", "protocol": "HTTP"},
                    "hosts": ["*"],
                }
            ],
        },
    }
    vs = {
        "apiVersion": NETWORKING,
        "kind": "VirtualService",
        "metadata": metadata(
            kc.INGRESS_NAME,
            target.namespace,
            labels(mesh),
            {kc.INGRESS_ROUTES_ANNOTATION: ingress_annotation(ingress)},
        ),
        "spec": {
            "hosts": ["*"],
            "gateways": [kc.INGRESS_NAME],
            "http": gateway_http(mesh, ingress, gaps),
        },
    }
    return [gw, vs]


def gateway_limits(mesh: Mesh, ingress: Ingress) -> list[RateLimited]:
    # Gaps were said when the VirtualService was written.
    return [
        RateLimited((), g.name, *bucket(g.source))
        for g in gateway_routes(mesh, ingress, Gaps())
        if g.source.rate_limit is not None
    ]


# -- local rate limits --------------------------------------------------------------------


def _percent(key: str) -> Doc:
    return {"runtime_key": key, "default_value": {"numerator": 100, "denominator": "HUNDRED"}}


# Envoy's local rate limit refuses a fill_interval under 50 ms.
_MIN_FILL_INTERVAL = Fraction(1, 20)


@dataclass(frozen=True)
class TokenBucket:
    doc: Doc
    exact: bool  # the rate is requests_per_second itself, not a rounding of it
    allows: float  # requests a second Envoy lets through at most


def token_bucket(rps: float, burst: int) -> TokenBucket:
    """Envoy's bucket for `rps` requests a second and a bucket of `burst`.

    Envoy adds `tokens_per_fill` every `fill_interval` but never beyond `max_tokens`, so a
    step larger than the bucket caps the rate at `max_tokens` a fill (200/s with a burst of 50
    in steps of 200 a second would be 50/s). The steps are therefore as small as Envoy allows
    (an interval of at least 50 ms), in whole tokens, with an interval that is a whole number
    of nanoseconds (protobuf's precision) when one that fits the bucket exists."""
    fraction = Fraction(rps).limit_denominator(1000)
    if fraction == 0:
        fraction = Fraction(1, 1000)
    least = max(1, math.ceil(fraction * _MIN_FILL_INTERVAL))
    # tokens / fraction is whole nanoseconds when tokens is a multiple of `step`.
    step = fraction.numerator // math.gcd(fraction.numerator, fraction.denominator * 10**9)
    tokens = -(-least // step) * step
    if tokens > max(burst, least):
        tokens = least
    nanos = Fraction(tokens) / fraction * 10**9
    whole, frac = divmod(round(nanos), 10**9)
    interval = f"{whole}s" if not frac else f"{whole}.{frac:09d}".rstrip("0") + "s"
    seconds = round(nanos) / 10**9
    return TokenBucket(
        doc={"max_tokens": burst, "tokens_per_fill": tokens, "fill_interval": interval},
        exact=fraction == rps and nanos.denominator == 1,
        allows=min(tokens, burst) / seconds,
    )


def _insert_filter(context: str) -> Doc:
    # As Istio's local rate limit sample: the filter is inserted without a bucket of its own,
    # so it limits only the routes that carry one (typed_per_filter_config below).
    return {
        "applyTo": "HTTP_FILTER",
        "match": {"context": context, "listener": {"filterChain": {"filter": {"name": HCM}}}},
        "patch": {
            "operation": "INSERT_BEFORE",
            "value": {
                "name": kc.RATE_LIMIT_FILTER,
                "typed_config": {
                    "@type": TYPED_STRUCT,
                    "type_url": kc.RATE_LIMIT_TYPE,
                    "value": {"stat_prefix": STAT_PREFIX},
                },
            },
        },
    }


def _route_patch(context: str, route_match: Doc, limit: RateLimited) -> Doc:
    bucket_doc = token_bucket(limit.requests_per_second, limit.burst).doc
    return {
        "applyTo": "HTTP_ROUTE",
        "match": {"context": context, "routeConfiguration": route_match},
        "patch": {
            "operation": "MERGE",
            "value": {
                "typed_per_filter_config": {
                    kc.RATE_LIMIT_FILTER: {
                        "@type": kc.RATE_LIMIT_TYPE,
                        "stat_prefix": STAT_PREFIX,
                        "token_bucket": bucket_doc,
                        "filter_enabled": _percent("local_rate_limit_enabled"),
                        "filter_enforced": _percent("local_rate_limit_enforced"),
                        "response_headers_to_add": [dict(h) for h in kc.RATE_LIMITED_HEADERS],
                    }
                }
            },
        },
    }


def rate_limit_gaps(mesh: Mesh, gaps: Gaps) -> None:
    for dest, routes in sorted(mesh.routes.items()):
        for i, r in enumerate(routes):
            if r.rate_limit is None:
                continue
            rps, burst = bucket(r)
            tb = token_bucket(rps, burst)
            field = f"routes.{dest}[{i}].rate_limit"
            if tb.allows < rps * (1 - 1e-6):
                gaps.add(
                    f"{field}.burst",
                    f"Envoy refills a bucket at most every 50 ms, so a burst of {burst} "
                    f"allows at most {tb.allows:g} requests/s, not {rps:g}",
                )
            elif not tb.exact:
                gaps.add(
                    f"{field}.requests_per_second",
                    "Envoy's token bucket refills whole tokens at whole nanoseconds: rounded "
                    f"to {tb.allows:.9g} requests/s",
                )


def sidecar_envoy_filter(mesh: Mesh, limits: Sequence[RateLimited], target: Target) -> Doc:
    """meshdev limits a route in each caller's sidecar (its own bucket per sidecar): the
    outbound route of that name in that service's virtual hosts, on every sidecar."""
    patches = [_insert_filter("SIDECAR_OUTBOUND")]
    for limit in limits:
        for vhost in limit.vhosts:
            patches.append(
                _route_patch(
                    "SIDECAR_OUTBOUND",
                    {"vhost": {"name": vhost, "route": {"name": limit.route}}},
                    limit,
                )
            )
    return {
        "apiVersion": ENVOY_FILTER_API,
        "kind": "EnvoyFilter",
        "metadata": metadata(kc.RATE_LIMIT_NAME, target.namespace, labels(mesh)),
        "spec": {"configPatches": patches},
    }


def gateway_envoy_filter(mesh: Mesh, limits: Sequence[RateLimited], target: Target) -> Doc:
    """The same on the ingress gateway, which lives in Istio's namespace: an EnvoyFilter
    there, selecting it, with the gateway's route names (unique in its VirtualService)."""
    patches = [_insert_filter("GATEWAY")]
    for limit in limits:
        patches.append(
            _route_patch(
                "GATEWAY",
                {"portNumber": kc.GATEWAY_PORT, "vhost": {"route": {"name": limit.route}}},
                limit,
            )
        )
    return {
        "apiVersion": ENVOY_FILTER_API,
        "kind": "EnvoyFilter",
        "metadata": metadata(
            f"{target.namespace}-{kc.RATE_LIMIT_NAME}", kc.GATEWAY_NAMESPACE, labels(mesh)
        ),
        "spec": {
            "workloadSelector": {"labels": dict(kc.GATEWAY_SELECTOR)},
            "configPatches": patches,
        },
    }
