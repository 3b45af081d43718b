"""Why a route's requests failed: each Envoy response flag tied to the mesh.yaml field behind
it, read from the mesh the control plane applied.

    503 UO <- policies.backend.circuit_breaker.max_pending_requests: 5
    403 RBAC <- authorization.backend[1]: {name: no-admin, action: DENY, to: {paths: [/admin*]}}

A caller's sidecar sees an authorization denial as a plain 403 from upstream (the `RBAC` flag
and the policy's name are in the destination's access log), so `explain_denial` reasons from
the destination's policies, Istio's order, the callers that were refused and the route's path:
the DENY policies that could have matched, else the ALLOW ones none of which did. A handshake
that failed is the connect failure `UF` on the caller's cluster; the TLS stats of both ends
tell which way it failed (`explain_tls`).

Pure functions of the model: no I/O, no Textual, so every flag's wording is unit-tested.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from meshdev.common.workload_certs import principal, spiffe_id
from meshdev.config.model import Authorization, CircuitBreaker, Match, Mesh, Policy, Route

# Envoy's defaults where mesh.yaml leaves a field out (they are the model's defaults too).
_DEFAULT_BREAKER = CircuitBreaker()


@dataclass(frozen=True, slots=True)
class Cause:
    flag: str
    status: str  # the status the caller saw ("503"; "5xx" when the upstream's is passed on)
    meaning: str
    fields: tuple[str, ...]  # "path: value", the most likely cause first

    def headline(self, arrow: str = "<-") -> str:
        field = self.fields[0] if self.fields else "(no field of mesh.yaml)"
        return f"{self.status} {self.flag} {arrow} {field}"


def duration(seconds: float) -> str:
    """As mesh.yaml writes it: 300ms, 2s, and whole minutes or hours as such (a cert_ttl)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def find_route(mesh: Mesh | None, vhost: str, route: str) -> tuple[int, Route] | None:
    if mesh is None:
        return None
    for i, r in enumerate(mesh.routes.get(vhost, ())):
        if (r.name or f"r{i}") == route:
            return i, r
    return None


def destinations(mesh: Mesh | None, vhost: str, route: str) -> list[str]:
    """The services a route sends to (a subset's service counts: policies are per service)."""
    found = find_route(mesh, vhost, route)
    if found is None or found[1].to is None:
        return [vhost]
    to = found[1].to
    names = [to] if isinstance(to, str) else list(to)
    return list(dict.fromkeys(n.split(".", 1)[0] for n in names))


def _breaker_fields(mesh: Mesh | None, service: str) -> list[str]:
    given = mesh is not None and service in mesh.policies
    cb = mesh.policies[service].circuit_breaker if mesh is not None and given else None
    limits = cb or _DEFAULT_BREAKER
    base = f"policies.{service}.circuit_breaker"
    note = "" if given else " (not set: Envoy's default)"
    return [
        f"{base}.max_pending_requests: {limits.max_pending_requests}{note}",
        f"{base}.max_requests: {limits.max_requests}{note}",
        f"{base}.max_connections: {limits.max_connections}{note}",
    ]


def _policy(mesh: Mesh | None, service: str) -> Policy:
    if mesh is not None and service in mesh.policies:
        return mesh.policies[service]
    return Policy()


def _replicas(mesh: Mesh | None, service: str) -> list[str]:
    if mesh is None or service not in mesh.services:
        return []
    svc = mesh.services[service]
    if svc.versions:
        return [
            f"services.{service}.versions.{v}.replicas: {ver.replicas}"
            for v, ver in svc.versions.items()
        ]
    return [f"services.{service}.replicas: {svc.pod_count()}"]


def explain(
    mesh: Mesh | None,
    vhost: str,
    route: str,
    flag: str,
    full: Collection[str] = (),
    *,
    callers: Sequence[str] = (),
    upstream_tls: Mapping[str, int] | None = None,
    inbound_tls: Mapping[str, int] | None = None,
) -> Cause:
    """`full`: breaker limits full right now (from the view): for UO they come first.
    `callers`: the services whose requests were refused (for RBAC); `upstream_tls` /
    `inbound_tls`: failed handshakes to the route's destinations by Envoy's stat, counted on
    the callers' clusters / the destinations' inbound listeners (for UF)."""
    found = find_route(mesh, vhost, route)
    at = f"routes.{vhost}[{found[0]}]" if found is not None else f"routes.{vhost}"
    r = found[1] if found is not None else None
    services = destinations(mesh, vhost, route)
    if flag == "RBAC":
        match = r.match if r is not None else None
        causes = [explain_denial(mesh, s, callers, match) for s in services]
        return next((c for c in causes if c is not None), _denied_somehow(services))
    if flag == "UF" and (upstream_tls or inbound_tls):
        return explain_tls(mesh, services, upstream_tls or {}, inbound_tls or {})
    if flag == "UO":
        fields = [f for s in services for f in _breaker_fields(mesh, s)]
        # The limit that is full now is the likeliest cause; stable order otherwise.
        fields.sort(key=lambda f: not any(f".{name}:" in f for name in full))
        if r is not None and r.retries is not None:
            fields += [
                f"policies.{s}.circuit_breaker.max_retries: "
                f"{_policy(mesh, s).circuit_breaker.max_retries}"
                for s in services
            ]
        meaning = "upstream overflow: a circuit-breaker limit was full, so 503 at once"
        return Cause(flag, "503", meaning, tuple(fields))
    if flag == "UH":
        # Ejections cannot cause it: under half the hosts healthy, the balancer calls them
        # all (Envoy's panic threshold), so only a cluster with no endpoint answers UH.
        fields = [f for s in services for f in _replicas(mesh, s)]
        meaning = "no healthy upstream: no endpoint of the destination is running and ready"
        return Cause(flag, "503", meaning, tuple(fields))
    if flag == "UF":
        fields = [
            f"policies.{s}.connect_timeout: {duration(_policy(mesh, s).connect_timeout)}"
            for s in services
        ]
        return Cause(flag, "503", "upstream connection failure", tuple(fields))
    if flag == "URX":
        fields = []
        if r is not None and r.retries is not None:
            fields.append(f"{at}.retries.attempts: {r.retries.attempts}")
            fields.append(f"{at}.retries.retry_on: [{', '.join(r.retries.retry_on)}]")
        meaning = "retries exhausted: the last try's answer was passed on"
        return Cause(flag, "5xx", meaning, tuple(fields))
    if flag == "UT":
        fields = []
        if r is not None:
            fields.append(f"{at}.timeout: {duration(r.timeout)}")
            if r.retries is not None and r.retries.per_try_timeout is not None:
                fields.append(
                    f"{at}.retries.per_try_timeout: {duration(r.retries.per_try_timeout)}"
                )
        else:
            fields.append(f"{at}.timeout: 15s (not set: Envoy's default)")
        return Cause(flag, "504", "upstream request timeout", tuple(fields))
    if flag == "NR":
        count = len(mesh.routes.get(vhost, ())) if mesh is not None else 0
        fields = [f"routes.{vhost}: no match among its {count} routes"]
        if mesh is not None and mesh.ingress is not None:
            fields.append(f"ingress.routes: {len(mesh.ingress.routes)} routes")
        return Cause(flag, "404", "no route matched the request", tuple(fields))
    if flag == "FI":
        status = "503"
        fields = []
        if r is not None and r.fault is not None and r.fault.abort is not None:
            abort = r.fault.abort
            status = str(abort.status or 503)
            fields.append(f"{at}.fault.abort: {{percent: {abort.percent:g}, status: {status}}}")
        fields.append(f"runtime fault.http.{vhost}.{route}.abort.abort_percent (the f key)")
        return Cause(flag, status, "fault injected: aborted on purpose", tuple(fields))
    if flag == "DI":
        fields = []
        if r is not None and r.fault is not None and r.fault.delay is not None:
            delay = r.fault.delay
            fields.append(
                f"{at}.fault.delay: {{percent: {delay.percent:g}, fixed: {duration(delay.fixed)}}}"
            )
        fields.append(f"runtime fault.http.{vhost}.{route}.delay.fixed_delay_percent")
        return Cause(flag, "delayed", "fault injected: delayed on purpose", tuple(fields))
    if flag == "RL":
        fields = []
        if r is not None and r.rate_limit is not None:
            rl = r.rate_limit
            burst = f", burst: {rl.burst}" if rl.burst is not None else ""
            fields.append(
                f"{at}.rate_limit: {{requests_per_second: {rl.requests_per_second:g}{burst}}}"
            )
        return Cause(flag, "429", "local rate limit: the token bucket was empty", tuple(fields))
    return Cause(flag, "?", "a response flag meshdev does not explain yet", ())


# -- authorization: 403 RBAC ------------------------------------------------------------------


def explain_denial(
    mesh: Mesh | None, service: str, callers: Sequence[str] = (), match: Match | None = None
) -> Cause | None:
    """Why `service`'s RBAC filter answered 403 to these callers on a route that matches
    `match`; None when mesh.yaml gives the service no policy (the app's own 403)."""
    if mesh is None:
        return None
    policies = mesh.authorization.get(service, ())
    if not policies:
        return None
    indexed = list(enumerate(policies))
    deny = matching_denials(mesh, service, callers, match)
    allow = [(i, p) for i, p in indexed if p.action == "ALLOW"]
    no_allow = f"no ALLOW policy of {service} matches this caller/path"
    fields = [f"authorization.{service}[{i}]: {policy_text(p)}" for i, p in deny]
    if deny:
        i, p = deny[0]
        only = f"{scope(p)} only; " if scope(p) else ""
        meaning = (
            f"denied by authorization policy {p.name} ({only}authorization.{service}[{i}] "
            "in mesh.yaml)"
        )
        if allow:
            fields.append(f"or: {no_allow}")
    elif allow:
        meaning = no_allow
        fields = [f"authorization.{service}[{i}]: {policy_text(p)}" for i, p in allow]
    else:
        # Only DENY policies, none of which seems to fit: they are all there is to look at.
        meaning = f"denied by an authorization policy of {service}"
        fields = [f"authorization.{service}[{i}]: {policy_text(p)}" for i, p in indexed]
    return Cause("RBAC", "403", meaning, tuple(fields))


def matching_denials(
    mesh: Mesh, service: str, callers: Sequence[str] = (), match: Match | None = None
) -> list[tuple[int, Authorization]]:
    """The DENY policies of `service` (with their place in mesh.yaml) that may refuse these
    callers on a route matching `match`, in Istio's order: the first one is the one named."""
    plaintext = mesh.mtls_mode(service) == "DISABLE"
    who: list[str | None] = [principal(mesh.name, c) if not plaintext else "" for c in callers]

    def may_apply(p: Authorization) -> bool:
        return any(_from_matches(p, w) for w in who or [None]) and _to_may_match(p, match)

    policies = mesh.authorization.get(service, ())
    return [(i, p) for i, p in enumerate(policies) if p.action == "DENY" and may_apply(p)]


def allows_for(mesh: Mesh, service: str, caller: str) -> list[Authorization]:
    """The ALLOW policies of `service` whose `from` takes `caller` (whatever the path)."""
    who = "" if mesh.mtls_mode(service) == "DISABLE" else principal(mesh.name, caller)
    policies = mesh.authorization.get(service, ())
    return [p for p in policies if p.action == "ALLOW" and _from_matches(p, who)]


def _denied_somehow(services: Sequence[str]) -> Cause:
    names = ", ".join(services)
    meaning = f"denied by an authorization policy of {names} (RBAC: access denied)"
    return Cause("RBAC", "403", meaning, ())


def pattern_matches(pattern: str, value: str) -> bool:
    """Istio's string patterns: exact, `prefix*`, `*suffix`, `*` (anything present)."""
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _from_matches(p: Authorization, caller: str | None) -> bool:
    """Whether the policy's `from` takes a caller of this principal: "" for one without
    (plaintext), which no `services`/`principals` name and every `not_` field lets by; None
    for any caller, when none is known."""
    src = p.from_
    if src is None or caller is None:
        return True
    service = caller.rsplit("/sa/", 1)[-1] if caller else None
    if (src.services or src.principals) and not (
        (service is not None and service in src.services)
        or any(pattern_matches(n, caller) for n in src.principals)
    ):
        return False
    return not (
        (service is not None and service in src.not_services)
        or any(pattern_matches(n, caller) for n in src.not_principals)
    )


def _to_may_match(p: Authorization, match: Match | None) -> bool:
    """Whether some request of a route matching `match` could match the policy's `to`:
    its paths against the route's path (exact or prefix), its methods against the route's."""
    to = p.to
    if to is None or match is None:
        return True
    if match.method is not None:
        methods = {match.method} if isinstance(match.method, str) else set(match.method)
        if to.methods and not methods & set(to.methods):
            return False
        if to.not_methods and methods <= set(to.not_methods):
            return False
    if (
        to.not_paths
        and match.path is not None
        and any(pattern_matches(pat, match.path) for pat in to.not_paths)
    ):
        return False
    if to.paths and match.regex is None:
        if match.path is not None:
            return any(pattern_matches(pat, match.path) for pat in to.paths)
        prefix = match.prefix or "/"
        return any(_may_share_a_path(pat, prefix) for pat in to.paths)
    return True


def _may_share_a_path(pattern: str, prefix: str) -> bool:
    """Whether a path starting with `prefix` may match `pattern`."""
    if pattern == "*" or pattern.startswith("*"):
        return True
    head = pattern[:-1] if pattern.endswith("*") else pattern
    if pattern.endswith("*"):
        return head.startswith(prefix) or prefix.startswith(head)
    return head.startswith(prefix)


def scope(p: Authorization) -> str:
    """The methods a policy is limited to, as a reader needs them beside its name: `POST`,
    `any method but GET`; "" when it takes every method."""
    to = p.to
    if to is None:
        return ""
    if to.methods:
        return ", ".join(to.methods)
    if to.not_methods:
        return f"any method but {', '.join(to.not_methods)}"
    return ""


def only_unsafe_methods(p: Authorization, safe: Collection[str]) -> bool:
    """Whether the policy takes no request of these (safe) methods: a DENY of POST only."""
    to = p.to
    if to is None:
        return False
    if to.methods:
        return not set(to.methods) & set(safe)
    return bool(to.not_methods) and set(safe) <= set(to.not_methods)


def policy_text(p: Authorization) -> str:
    """A policy in mesh.yaml's flow style, with only the fields it gives."""
    parts = [f"name: {p.name}", f"action: {p.action}"]
    for key, section in (("from", p.from_), ("to", p.to)):
        if section is None:
            continue
        given = [
            f"{name}: [{', '.join(values)}]"
            for name, values in section.model_dump(by_alias=False).items()
            if values
        ]
        parts.append(f"{key}: {{{', '.join(given)}}}")
    return "{" + ", ".join(parts) + "}"


# -- mutual TLS: UF from a failed handshake --------------------------------------------------

# Envoy's TLS stats (sidecar/tls/stats.py), counted on the caller's cluster.
_UPSTREAM_REASONS = {
    "fail_verify_error": "{svc}'s certificate does not lead to the mesh's CA, or has expired",
    "fail_verify_san": "{svc}'s certificate names another identity than {id}",
    "connection_error": "the connection broke off during the handshake (a plaintext-only "
    "destination, or a reset)",
}
# ... and on the destination's inbound listener.
_INBOUND_REASONS = {
    "no_filter_chain_match": "{svc} is STRICT and refused a plaintext connection",
    "fail_verify_no_cert": "{svc} asked the caller for its certificate and got none",
    "fail_verify_error": "{svc} could not verify the caller's certificate (another CA, or expired)",
    "fail_verify_san": "the caller's certificate names no identity of this mesh",
    "connection_error": "{svc} saw a handshake break off",
}


def explain_tls(
    mesh: Mesh | None,
    services: Sequence[str],
    upstream: Mapping[str, int],
    inbound: Mapping[str, int],
) -> Cause:
    """The likeliest reason handshakes to `services` failed (the most frequent failure, the
    caller's side first), with the mesh.yaml fields that set the modes and certificates."""
    svc = services[0] if services else "the destination"
    ranked = sorted(
        [(n, 1, kind, _UPSTREAM_REASONS) for kind, n in upstream.items() if n > 0]
        + [(n, 0, kind, _INBOUND_REASONS) for kind, n in inbound.items() if n > 0],
        key=lambda t: (-t[0], -t[1]),
    )
    ident = spiffe_id(mesh.name, svc) if mesh is not None else f"the one of {svc}"
    reasons = [table.get(kind, kind).format(svc=svc, id=ident) for _, _, kind, table in ranked] or [
        "no TLS stat says why"
    ]
    meaning = "mTLS handshake failed: " + "; and ".join(reasons)
    fields: list[str] = []
    if mesh is not None and mesh.security is not None:
        fields.append(f"security.mtls: {mesh.security.mtls}")
        for s in services:
            policy = mesh.policies.get(s)
            if policy is not None and policy.mtls is not None:
                fields.insert(0, f"policies.{s}.mtls: {policy.mtls}")
        fields.append(f"security.cert_ttl: {duration(mesh.security.cert_ttl)}")
    elif mesh is not None:
        fields.append("security: not set (no TLS: a leftover sidecar of a secured config?)")
    return Cause("UF", "503", meaning, tuple(fields))
