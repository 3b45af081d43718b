"""Why a route's requests failed: each Envoy response flag tied to the mesh.yaml field behind
it, read from the mesh the control plane applied.

    503 UO <- policies.backend.circuit_breaker.max_pending_requests: 5

Pure functions of the model: no I/O, no Textual, so every flag's wording is unit-tested.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from meshdev.config.model import CircuitBreaker, Mesh, Policy, Route

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
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
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
    mesh: Mesh | None, vhost: str, route: str, flag: str, full: Collection[str] = ()
) -> Cause:
    """`full`: breaker limits full right now (from the view): for UO they come first."""
    found = find_route(mesh, vhost, route)
    at = f"routes.{vhost}[{found[0]}]" if found is not None else f"routes.{vhost}"
    r = found[1] if found is not None else None
    services = destinations(mesh, vhost, route)
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
        fields = []
        for s in services:
            od = _policy(mesh, s).outlier_detection
            if od is not None:
                fields.append(
                    f"policies.{s}.outlier_detection.max_ejection_percent: "
                    f"{od.max_ejection_percent:g}"
                )
                fields.append(
                    f"policies.{s}.outlier_detection.consecutive_5xx: {od.consecutive_5xx}"
                )
            fields += _replicas(mesh, s)
        meaning = "no healthy upstream: every endpoint is ejected or none is running"
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
