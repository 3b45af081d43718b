"""Istio's traffic resources -> mesh.yaml's routes, policies and ingress: a DestinationRule's
subsets and traffic policy, a VirtualService's routes (the gateway's become the ingress), and
the local rate limits an EnvoyFilter puts on named routes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, get_args

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.import_docs import Path, Source, is_port, whole
from meshdev.bridges.kube.import_workloads import ImportedService, is_name
from meshdev.common.envoy_names import GRPC_STATUS_NAMES, RetryOn
from meshdev.common.http_methods import method_problem
from meshdev.config.durations import format_duration, parse_duration

Dict = dict[str, Any]

_LB = {
    "ROUND_ROBIN": "round_robin",
    "LEAST_REQUEST": "least_request",
    "LEAST_CONN": "least_request",
    "RANDOM": "random",
}
_RETRY_ON: frozenset[str] = frozenset(get_args(RetryOn))
# Istio's retry policy where a route names no retryOn (pilot's retry.DefaultPolicy).
TYPED_STRUCT = "type.googleapis.com/udpa.type.v1.TypedStruct"
_ISTIO_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled"


@dataclass
class Context:
    namespace: str
    services: dict[str, ImportedService]
    # Per service: Istio's subset name -> the version (label) it selects.
    subsets: dict[str, dict[str, str]] = field(default_factory=dict)

    def service(self, host: object) -> str | None:
        if not isinstance(host, str):
            return None
        name = kc.service_of_host(host, self.namespace)
        return name if name in self.services else None


def duration(src: Source, path: Path, *, zero: bool = False) -> str | None:
    """meshdev's spelling of the Istio duration at `path`, or None (noted) if it is none."""
    text = src.take(*path)
    if text is None:
        return None
    seconds = kc.parse_istio_duration(str(text))
    if seconds is None or (seconds == 0 and not zero):
        src.note(path, f"{text!r} is not a duration Istio takes: left out")
        return None
    return format_duration(seconds)


# -- DestinationRule ----------------------------------------------------------------------


def read_destination_rules(drs: list[Source], ctx: Context) -> dict[str, Dict]:
    """Fills ctx.subsets; returns the policies."""
    policies: dict[str, Dict] = {}
    for d in drs:
        host = d.take("spec", "host")
        svc = ctx.service(host)
        if svc is None:
            d.note((), f"host {host} is no service of these files: left out")
            continue
        if svc in ctx.subsets:
            d.note((), f"a second DestinationRule for {svc}: left out")
            continue
        subsets: dict[str, str] = {}
        for i, sub in d.items("spec", "subsets"):
            p: Path = ("spec", "subsets", i)
            name = d.take(*p, "name")
            sel = d.get(*p, "labels")
            version = sel.get(kc.VERSION) if isinstance(sel, dict) else None
            if not isinstance(version, str) or set(sel) != {kc.VERSION}:
                d.note(
                    (*p, "labels"),
                    "meshdev's subsets are the pods of one version label: left out",
                )
                continue
            d.take(*p, "labels")
            subsets[str(name)] = version
            if version not in ctx.services[svc].subsets():
                d.note(
                    (*p, "name"),
                    f"no Deployment of {svc} has version {version}: meshdev has no such subset",
                )
            if isinstance(sub, dict) and "trafficPolicy" in sub:
                d.note((*p, "trafficPolicy"), "meshdev's policy is per service: left out")
        ctx.subsets[svc] = subsets
        if isinstance(d.get("spec", "trafficPolicy"), dict):
            tcp = ctx.services[svc].protocol == "tcp"
            policies[svc] = traffic_policy(d, ("spec", "trafficPolicy"), tcp)
    return policies


def traffic_policy(d: Source, p: Path, tcp: bool) -> Dict:
    out: Dict = {}
    lb = d.get(*p, "loadBalancer")
    if isinstance(lb, dict):
        simple = lb.get("simple")
        hashing = lb.get("consistentHash")
        if isinstance(simple, str) and simple in _LB:
            d.take(*p, "loadBalancer", "simple")
            out["lb"] = _LB[str(simple)]
        elif isinstance(hashing, dict):
            h: Path = (*p, "loadBalancer", "consistentHash")
            if isinstance(hashing.get("httpHeaderName"), str) and not tcp:
                out["lb"] = "ring_hash"
                out["hash_header"] = d.take(*h, "httpHeaderName")
            elif hashing.get("useSourceIp") is True and tcp:
                d.take(*h, "useSourceIp")
                out["lb"] = "ring_hash"
            else:
                d.note(h, "meshdev's ring_hash hashes a header (tcp: the client's address)")
        elif simple is not None:
            d.note((*p, "loadBalancer", "simple"), f"meshdev has no {simple}: round_robin")
    pool: Path = (*p, "connectionPool")
    cb: Dict = {}
    for key, where in (
        ("max_connections", ("tcp", "maxConnections")),
        ("max_pending_requests", ("http", "http1MaxPendingRequests")),
        ("max_requests", ("http", "http2MaxRequests")),
        ("max_retries", ("http", "maxRetries")),
    ):
        value = d.get(*pool, *where)
        minimum = 0 if key in ("max_pending_requests", "max_retries") else 1
        if whole(value, minimum):
            d.take(*pool, *where)
            cb[key] = value
        elif value is not None:
            d.note((*pool, *where), f"meshdev's {key} is a whole number of at least {minimum}")
    if cb:
        out["circuit_breaker"] = cb
    connect = duration(d, (*pool, "tcp", "connectTimeout"))
    if connect is not None:
        out["connect_timeout"] = connect
    if d.get(*pool, "tcp", "idleTimeout") is not None:
        if tcp:
            idle = duration(d, (*pool, "tcp", "idleTimeout"), zero=True)
            if idle is not None:
                out["idle_timeout"] = idle
        else:
            d.note(
                (*pool, "tcp", "idleTimeout"),
                "an HTTP service's idle_timeout in meshdev is its streams' (Envoy's "
                "stream_idle_timeout), not its connections': left out",
            )
    od = d.get(*p, "outlierDetection")
    if isinstance(od, dict):
        o: Path = (*p, "outlierDetection")
        detection: Dict = {}
        errors = d.take(*o, "consecutive5xxErrors")
        if whole(errors, 1):
            detection["consecutive_5xx"] = errors
        elif errors is not None:
            d.note((*o, "consecutive5xxErrors"), "meshdev ejects after at least one 5xx")
        for key, name in (("interval", "interval"), ("base_ejection_time", "baseEjectionTime")):
            value = duration(d, (*o, name))
            if value is not None:
                detection[key] = value
        percent = d.get(*o, "maxEjectionPercent")
        if whole(percent, 0, 100):
            d.take(*o, "maxEjectionPercent")
            detection["max_ejection_percent"] = percent
        elif percent is not None:
            d.note((*o, "maxEjectionPercent"), "not a percentage: left out")
        out["outlier_detection"] = detection
    if d.get(*p, "tls") is not None:
        d.note(
            (*p, "tls"),
            "meshdev's callers use mutual TLS wherever the destination takes it (Istio's auto "
            "mTLS); the destination's PeerAuthentication says whether it does",
        )
    return out


# -- VirtualService: matches, destinations, policies -------------------------------------


def _string_match(v: Source, p: Path, present: bool) -> Dict | None:
    sm = v.get(*p)
    if not isinstance(sm, dict):
        return None
    for key in ("exact", "prefix", "regex"):
        if key in sm:
            if not present:
                v.note(p, "meshdev's header conditions cannot be negated: left out")
                return None
            if key == "regex" and not _compiles(str(sm[key])):
                v.note(p, "a regex meshdev cannot compile: left out")
                return None
            v.take(*p)
            return {key: str(sm[key])}
    v.take(*p)
    return {"present": present}


_TAKES_MORE = "left out, so the route takes more requests"


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def read_match(v: Source, p: Path) -> tuple[Dict, str | None]:
    """One Istio match entry -> meshdev's match without its method, and the method."""
    m: Dict = {}
    uri = v.mapping(*p, "uri")
    for key, ours in (("prefix", "prefix"), ("exact", "path"), ("regex", "regex")):
        if key not in uri:
            continue
        value = str(uri[key])
        if key == "regex" and not _compiles(value):
            v.note((*p, "uri"), f"a regex meshdev cannot compile: {_TAKES_MORE}")
        elif key != "regex" and not value.startswith("/"):
            v.note((*p, "uri"), f"meshdev's paths start with /: {_TAKES_MORE}")
        elif key == "exact" and "?" in value:
            v.note(
                (*p, "uri"),
                "an exact path is compared without the query string, so this one never "
                f"matches: {_TAKES_MORE}",
            )
        else:
            v.take(*p, "uri")
            m[ours] = value
        break
    method = v.get(*p, "method")
    found: str | None = None
    if isinstance(method, dict):
        exact = str(method.get("exact", ""))
        problem = method_problem(exact) if "exact" in method else "meshdev matches methods exactly"
        if problem is None:
            v.take(*p, "method")
            found = exact
        else:
            v.note((*p, "method"), f"{problem}: {_TAKES_MORE}")
    headers: Dict = {}
    for key, present in (("headers", True), ("withoutHeaders", False)):
        given = v.get(*p, key)
        for name in given if isinstance(given, dict) else {}:
            cond = _string_match(v, (*p, key, name), present)
            if cond is not None:
                headers[str(name)] = cond
    if headers:
        m["headers"] = headers
    v.take(*p, "name")
    for key in v.mapping(*p):
        if key not in ("uri", "method", "headers", "withoutHeaders", "name"):
            v.note((*p, key), f"mesh.yaml cannot match on this: {_TAKES_MORE}")
    return m, found


def read_matches(v: Source, p: Path) -> list[tuple[Dict, Any]]:
    """Istio's match list (any entry) -> meshdev matches: entries that differ only by their
    method become one match with a list of methods."""
    groups: list[tuple[Dict, list[str | None]]] = []
    for i, _ in v.items(*p, "match"):
        m, method = read_match(v, (*p, "match", i))
        if groups and groups[-1][0] == m:
            groups[-1][1].append(method)
        else:
            groups.append((m, [method]))
    if not groups:
        return [({}, None)]
    out: list[tuple[Dict, Any]] = []
    for m, methods in groups:
        if None in methods:
            out.append((m, None))
        else:
            unique = list(dict.fromkeys(str(x) for x in methods))
            out.append((m, unique[0] if len(unique) == 1 else unique))
    return out


def read_destinations(v: Source, p: Path, ctx: Context) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for i, entry in v.items(*p):
        d: Path = (*p, i, "destination")
        host = v.take(*d, "host")
        svc = ctx.service(host)
        if svc is None:
            v.note((*p, i), f"host {host} is no service of these files: left out")
            continue
        subset = v.take(*d, "subset")
        target = svc
        if subset is not None:
            version = ctx.subsets.get(svc, {}).get(str(subset))
            if version is None or version not in ctx.services[svc].subsets():
                v.note(
                    (*p, i),
                    f"subset {subset} of {svc} runs no pods in these files "
                    "(no DestinationRule subset, or no Deployment with its version): left out",
                )
                continue
            target = f"{svc}.{version}"
        port = v.get(*d, "port", "number")
        if port is not None:
            if is_port(port) and port in ctx.services[svc].ports:
                v.take(*d, "port")
            else:
                v.note((*d, "port"), f"not a port of {svc}'s Service: left out")
        weight = v.take(*p, i, "weight") if isinstance(entry, dict) else None
        out.append((target, weight if whole(weight) else None))
    if len(out) > 1 and not any(w for _, w in out):
        v.note(p, "no destination has a weight: taken as equal weights")
        out = [(t, 1) for t, _ in out]
    return out


def to_field(targets: list[tuple[str, int | None]], dest: str) -> Any:
    """mesh.yaml's `to`: absent for the destination itself, a name, or weights."""
    if len(targets) == 1:
        target = targets[0][0]
        return None if target == dest else target
    weights: dict[str, int] = {}
    for target, weight in targets:
        weights[target] = weights.get(target, 0) + (weight or 0)
    return weights


def read_retries(v: Source, p: Path) -> Dict | None:
    if v.get(*p) is None:
        return None
    attempts = v.take(*p, "attempts")
    if not whole(attempts, 1):
        # Istio's attempts: 0 turns retries off, whatever else is said.
        for key in v.mapping(*p):
            v.take(*p, key)
        return None
    text = v.take(*p, "retryOn")
    if text is None:
        v.note((*p,), "no retryOn: Istio's default conditions (refused-stream aside)")
        text = _ISTIO_DEFAULT_RETRY_ON
    conditions: list[str] = []
    codes: list[int] = []
    for part in str(text).split(","):
        word = part.strip()
        if word.isdigit() and 100 <= int(word) <= 599:
            codes.append(int(word))
        elif word in _RETRY_ON:
            conditions.append(word)
        elif word:
            v.note((*p, "retryOn"), f"meshdev does not retry on {word}: left out")
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    out: Dict = {"attempts": attempts, "retry_on": conditions}
    if codes:
        out["retriable_status_codes"] = codes
    per_try = duration(v, (*p, "perTryTimeout"))
    if per_try is not None:
        out["per_try_timeout"] = per_try
    return out


def _percent(v: Source, p: Path) -> float | None:
    """The share of requests faulted (None, noted, when it is no share at all)."""
    value = v.get(*p, "percentage", "value")
    key: Path = (*p, "percentage")
    if value is None:
        # Istio's deprecated integer percent; with neither, Envoy faults none.
        value = v.get(*p, "percent")
        key = (*p, "percent")
        if value is None:
            return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        v.note(key, "not a percentage: the fault is left out")
        return None
    v.take(*key)
    return float(value)


def read_fault(v: Source, p: Path) -> Dict | None:
    if not isinstance(v.get(*p), dict):
        return None
    out: Dict = {}
    if isinstance(v.get(*p, "delay"), dict):
        d: Path = (*p, "delay")
        fixed = duration(v, (*d, "fixedDelay"))
        percent = _percent(v, d)
        if fixed is not None and percent is not None:
            out["delay"] = {"percent": percent, "fixed": fixed}
    if isinstance(v.get(*p, "abort"), dict):
        a: Path = (*p, "abort")
        share = _percent(v, a)
        abort: Dict = {"percent": share}
        status = v.get(*a, "httpStatus")
        grpc = v.get(*a, "grpcStatus")
        if share is None:
            abort = {}
        elif whole(status, 200, 599):
            abort["status"] = v.take(*a, "httpStatus")
        elif isinstance(grpc, str) and grpc in GRPC_STATUS_NAMES:
            v.take(*a, "grpcStatus")
            abort["grpc_status"] = GRPC_STATUS_NAMES.index(grpc)
        else:
            v.note(a, "meshdev aborts with an HTTP status (200-599) or a gRPC status name")
            abort = {}
        if abort:
            out["abort"] = abort
    return out or None


@dataclass
class RouteDraft:
    name: str | None
    match: Dict
    method: Any
    targets: list[tuple[str, int | None]]
    # None for a tcp destination, whose connections have no request to time.
    timeout: str | None
    retries: Dict | None
    fault: Dict | None
    rate_limit: Dict | None = None
    # The Istio route's name, which EnvoyFilters' route patches match.
    istio_name: str | None = None

    def as_route(self, dest: str) -> Dict:
        r: Dict = {}
        if self.name is not None:
            r["name"] = self.name
        match = dict(self.match)
        if self.method is not None:
            match["method"] = self.method
        if match:
            r["match"] = match
        to = to_field(self.targets, dest)
        if to is not None:
            r["to"] = to
        if self.timeout is not None:
            r["timeout"] = self.timeout
        for key in ("retries", "fault", "rate_limit"):
            value = getattr(self, key)
            if value is not None:
                r[key] = value
        return r


def read_http_route(v: Source, p: Path, ctx: Context) -> list[RouteDraft]:
    targets = read_destinations(v, (*p, "route"), ctx)
    raw_name = v.take(*p, "name")
    matches = read_matches(v, p)
    if not targets:
        v.note(p, "routes to nothing meshdev runs: left out")
        return []
    # Istio's default is no timeout: meshdev's 0s.
    timeout = duration(v, (*p, "timeout")) or "0s"
    retries = read_retries(v, (*p, "retries"))
    per_try = retries.get("per_try_timeout") if retries else None
    # Istio lets the route's timeout cut a longer try short; meshdev's loader refuses it.
    if (
        retries
        and per_try
        and timeout != "0s"
        and parse_duration(per_try) > parse_duration(timeout)
    ):
        v.note((*p, "retries", "perTryTimeout"), "longer than the route's timeout: left out")
        del retries["per_try_timeout"]
    fault = read_fault(v, (*p, "fault"))
    name = str(raw_name) if raw_name is not None else None
    if name is not None and not is_name(name):
        v.note((*p, "name"), "not a meshdev route name (lower case, digits, -): left out")
        name = None
    out = []
    for k, (m, method) in enumerate(matches):
        own = name if k == 0 or name is None else suffixed(name, k + 1)
        out.append(
            RouteDraft(
                own,
                m,
                method,
                list(targets),
                timeout,
                retries,
                fault,
                istio_name=str(raw_name) if raw_name is not None else None,
            )
        )
    return out


def suffixed(name: str, n: int) -> str:
    """`name-n`, within meshdev's 40 characters of a name."""
    tail = f"-{n}"
    return name[: 40 - len(tail)].rstrip("-") + tail


def unique_names(drafts: list[RouteDraft]) -> None:
    """meshdev's route names (or their r<N> defaults) are unique per destination."""
    seen: set[str] = set()
    for i, d in enumerate(drafts):
        name = d.name or f"r{i}"
        if name in seen:
            n = 2
            while suffixed(name, n) in seen:
                n += 1
            name = suffixed(name, n)
            d.name = name
        seen.add(name)


def read_virtual_services(
    vss: list[Source], ctx: Context
) -> tuple[dict[str, list[RouteDraft]], list[Source]]:
    """The mesh's routes per destination, and the VirtualServices bound to a gateway."""
    routes: dict[str, list[RouteDraft]] = {}
    gateway_bound: list[Source] = []
    for v in vss:
        gateways = v.sequence("spec", "gateways")
        if any(g != "mesh" for g in gateways):
            gateway_bound.append(v)
            continue
        v.take("spec", "gateways")
        v.take("spec", "hosts")
        hosts = v.sequence("spec", "hosts")
        dests = []
        for i, host in enumerate(hosts):
            svc = ctx.service(host)
            if svc is None:
                v.note(("spec", "hosts", i), f"{host} is no service of these files: left out")
            elif svc in routes:
                v.note(("spec", "hosts", i), f"{svc}'s routes are read from an earlier one")
            else:
                dests.append(svc)
        if not dests:
            continue
        tcp = [d for d in dests if ctx.services[d].protocol == "tcp"]
        http = [d for d in dests if d not in tcp]
        if http:
            bare = [
                i for i, r in v.items("spec", "http") if isinstance(r, dict) and "retries" not in r
            ]
            if bare:
                v.say(
                    ("spec", "http"),
                    f"routes {bare} give no retries: Istio then retries twice (connect-failure, "
                    "refused-stream, unavailable, cancelled), meshdev's routes never; add retries "
                    "to the mesh file to keep them",
                )
            drafts = [
                draft
                for i, _ in v.items("spec", "http")
                for draft in read_http_route(v, ("spec", "http", i), ctx)
            ]
            unique_names(drafts)
            for dest in http:
                routes[dest] = drafts
        elif v.get("spec", "http") is not None:
            v.note(("spec", "http"), "its hosts are tcp services: connections have no requests")
        if tcp:
            drafts = []
            for i, _ in v.items("spec", "tcp"):
                p: Path = ("spec", "tcp", i)
                if i > 0:
                    v.note(p, "meshdev relays a tcp service's connections by its first route")
                    continue
                if v.get(*p, "match") is not None:
                    v.note((*p, "match"), "meshdev's tcp routes match every connection")
                targets = read_destinations(v, (*p, "route"), ctx)
                if targets:
                    drafts.append(RouteDraft(None, {}, None, targets, None, None, None))
            for dest in tcp:
                routes[dest] = drafts
        elif v.get("spec", "tcp") is not None:
            v.note(("spec", "tcp"), "its hosts are HTTP services: their routes are in http")
    return routes, gateway_bound


# -- the ingress --------------------------------------------------------------------------


@dataclass
class GatewayInfo:
    port: int
    sources: list[Source]
    load_path: str | None = None


def read_gateways(gws: list[Source]) -> dict[str, GatewayInfo]:
    """Gateways by name, with the port meshdev publishes them on."""
    out: dict[str, GatewayInfo] = {}
    for g in gws:
        selector = g.get("spec", "selector")
        g.take("spec", "selector")
        if selector != kc.GATEWAY_SELECTOR:
            g.note(("spec", "selector"), "meshdev has one gateway, Istio's default one")
        port: int | None = None
        for i, _ in g.items("spec", "servers"):
            p: Path = ("spec", "servers", i)
            protocol = str(g.get(*p, "port", "protocol") or "").upper()
            number = g.get(*p, "port", "number")
            if port is None and protocol in ("HTTP", "HTTP2") and is_port(number):
                port = number
                g.take(*p, "port")
                g.take(*p, "hosts")
            else:
                g.note(p, "meshdev's gateway serves plain HTTP on one port: left out")
        annotated = g.annotations().get(kc.INGRESS_PORT_ANNOTATION, "")
        if annotated.isdigit():
            port = int(annotated)
        if port is None:
            g.note((), "no HTTP server: left out")
            continue
        info = out.setdefault(g.name, GatewayInfo(port, []))
        info.sources.append(g)
        load_path = g.annotations().get(kc.LOAD_PATH_ANNOTATION)
        if load_path:
            info.load_path = load_path
    return out


def ingress_from_spec(v: Source, ctx: Context, has_routes: set[str]) -> list[Dict]:
    """A gateway's VirtualService read as ingress routes: a match to a service each."""
    out: list[Dict] = []
    for i, _ in v.items("spec", "http"):
        p: Path = ("spec", "http", i)
        targets = read_destinations(v, (*p, "route"), ctx)
        raw_name = v.take(*p, "name")
        matches = read_matches(v, p)
        if not targets:
            v.note(p, "routes to nothing meshdev runs: left out")
            continue
        service = targets[0][0].partition(".")[0]
        if len(targets) > 1 or "." in targets[0][0]:
            v.note(
                (*p, "route"),
                f"meshdev's gateway sends a path to a service ({service}); that service's "
                "routes split it among subsets",
            )
        if ctx.services[service].protocol == "tcp":
            v.note(p, f"{service} is a tcp service: meshdev's gateway routes HTTP")
            continue
        for key in ("timeout", "retries", "fault"):
            if v.get(*p, key) is not None:
                v.note(
                    (*p, key),
                    f"meshdev's gateway applies {service}'s own routes and their policies: "
                    "left out",
                )
        if service in has_routes:
            v.note(
                (*p, "route"),
                f"meshdev applies {service}'s routes to the gateway's requests too; Istio "
                "applies only this VirtualService at a gateway",
            )
        name = str(raw_name) if raw_name is not None and is_name(raw_name) else None
        if raw_name is not None and name is None:
            v.note((*p, "name"), "not a meshdev route name: left out")
        for k, (m, method) in enumerate(matches):
            match = dict(m)
            if method is not None:
                match["method"] = method
            route: Dict = {}
            if name is not None:
                route["name"] = name if k == 0 else suffixed(name, k + 1)
            if match:
                route["match"] = match
            route["to"] = service
            out.append(route)
    return out


# -- EnvoyFilter: local rate limits -------------------------------------------------------


def _bucket(e: Source, p: Path) -> Dict | None:
    """A local rate limit config (direct or as a TypedStruct) -> meshdev's rate_limit."""
    if not isinstance(e.get(*p), dict):
        return None
    body: Path = p
    e.take(*p, "@type")
    if e.get(*p, "@type") == TYPED_STRUCT:
        e.take(*p, "type_url")
        body = (*p, "value")
    if not isinstance(e.get(*body, "token_bucket"), dict):
        return None
    e.take(*body, "stat_prefix")
    for key in ("filter_enabled", "filter_enforced"):
        share = (*body, key, "default_value")
        if e.get(*share, "numerator") == 100 and e.get(*share, "denominator") == "HUNDRED":
            e.take(*body, key)
        else:
            e.note((*body, key), "meshdev limits every request of the route: taken as 100%")
    headers = e.get(*body, "response_headers_to_add")
    if headers == list(kc.RATE_LIMITED_HEADERS):
        e.take(*body, "response_headers_to_add")
    elif headers is not None:
        e.note(
            (*body, "response_headers_to_add"),
            "meshdev's 429 carries x-envoy-ratelimited: true, and no other header",
        )
    bucket: Path = (*body, "token_bucket")
    tokens = e.get(*bucket, "tokens_per_fill")
    tokens = 1 if tokens is None else tokens
    interval = kc.parse_istio_duration(str(e.get(*bucket, "fill_interval")))
    burst = e.get(*bucket, "max_tokens")
    if not (is_count(tokens) and is_count(burst) and interval):
        e.note(bucket, "not a token bucket meshdev can read: left out")
        return None
    e.take(*bucket)
    return {"requests_per_second": tokens / interval, "burst": burst}


def is_count(value: object) -> bool:
    """A whole number of at least 1 (YAML's true is no count, though Python's bool is int)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def read_rate_limits(efs: list[Source], ctx: Context, routes: dict[str, list[RouteDraft]]) -> None:
    """Sets rate_limit on the routes the sidecars' EnvoyFilters limit, by route name in the
    destination's virtual hosts (the way meshdev exports them)."""
    for e in efs:
        read = False
        for i, patch in e.items("spec", "configPatches"):
            p: Path = ("spec", "configPatches", i)
            if not isinstance(patch, dict):
                continue
            apply_to = patch.get("applyTo")
            context = e.get(*p, "match", "context")
            value = e.get(*p, "patch", "value")
            inserts = (
                apply_to == "HTTP_FILTER"
                and isinstance(value, dict)
                and value.get("name") == kc.RATE_LIMIT_FILTER
                and not _has_bucket(value)
            )
            if inserts:
                e.take(*p)  # inserts the filter; routes carry the buckets
                continue
            outbound = apply_to == "HTTP_ROUTE" and context == "SIDECAR_OUTBOUND"
            if outbound and _route_limit(e, p, ctx, routes):
                read = True
                continue
            e.note(
                p,
                "not a per-route local rate limit of callers' sidecars (what meshdev's "
                "rate_limit is): left out",
            )
        if e.get("spec", "workloadSelector") is not None:
            if read:
                e.note(
                    ("spec", "workloadSelector"),
                    "meshdev limits a route in every caller's sidecar: taken for all of them",
                )
            else:
                e.take("spec", "workloadSelector")  # selects for patches listed above


def _has_bucket(filter_value: Dict) -> bool:
    typed = filter_value.get("typed_config")
    if not isinstance(typed, dict):
        return False
    inner = typed.get("value") if isinstance(typed.get("value"), dict) else typed
    return isinstance(inner, dict) and "token_bucket" in inner


def _route_limit(e: Source, p: Path, ctx: Context, routes: dict[str, list[RouteDraft]]) -> bool:
    vhost = e.get(*p, "match", "routeConfiguration", "vhost", "name")
    route_name = e.get(*p, "match", "routeConfiguration", "vhost", "route", "name")
    if not isinstance(vhost, str) or not isinstance(route_name, str):
        return False
    svc = ctx.service(vhost.rpartition(":")[0])
    if svc is None:
        return False
    drafts = [d for d in routes.get(svc, []) if d.istio_name == route_name]
    if not drafts:
        return False
    cp: Path = (*p, "patch", "value", "typed_per_filter_config", kc.RATE_LIMIT_FILTER)
    limit = _bucket(e, cp)
    if limit is None:
        return False
    for d in drafts:
        d.rate_limit = limit
    e.take(*p, "applyTo")
    e.take(*p, "match")
    e.take(*p, "patch", "operation")
    return True


def read_sidecars(sidecars: list[Source], ctx: Context) -> dict[str, list[str]]:
    """Istio's Sidecar resources that select one service: their egress hosts as that
    service's `calls:` (`./<service>.<ns>.svc.cluster.local` and the shorter spellings of a
    service of these files; `~/*` no service). A host pattern naming every service of the
    namespace (`*/*`, `./*`) is meshdev's default: no `calls:`."""
    out: dict[str, list[str]] = {}
    for s in sidecars:
        labels = s.mapping("spec", "workloadSelector", "labels")
        app = labels.get(kc.APP)
        if set(labels) != {kc.APP} or not isinstance(app, str) or app not in ctx.services:
            s.note(
                ("spec", "workloadSelector"),
                "selects no one service of these files (meshdev's calls: is per service): left out",
            )
            continue
        if app in out:
            s.note((), f"a second Sidecar for {app}: left out")
            continue
        s.take("spec", "workloadSelector")
        if len(s.sequence("spec", "egress")) != 1:
            s.note(("spec", "egress"), "meshdev's calls: is one list of hosts: left out")
            continue
        calls: list[str] = []
        every = False
        for j, host in s.items("spec", "egress", 0, "hosts"):
            where: Path = ("spec", "egress", 0, "hosts", j)
            space, _, dns = str(host).partition("/")
            here = space in (".", "*", ctx.namespace)
            name = ctx.service(dns) if here else None
            if host == kc.NO_HOSTS:
                s.take(*where)
            elif here and dns == "*":
                every = True
                s.take(*where)
            elif name is not None:
                if name not in calls:
                    calls.append(name)
                s.take(*where)
            else:
                s.note(where, "names no service of these files: left out")
        if not every:
            out[app] = calls
    return out
