"""The mesh a round trip through a cluster's files gives back: `import istio (export
kubernetes M)` is `canonical(M)`. Each rule is a difference of spelling, or something meshdev
itself ignores, or a gap the export reports (docs/bridges-kubernetes.md lists them):

- env: what meshdev sets anyway (SERVICE, a version's VERSION, HOST, PORT, tcp services'
  <NAME>_SERVICE_HOST/PORT) is left out; what every version has alike is the service's;
- build, image, command: a version's own unless every version has the same; `sh -c X` is X;
- replicas: per version when there are versions, else explicit;
- routes: `r<N>` names and a `to` of the destination itself are left out, weights with one
  target are that target, one method is a
  string, header names are lower case; durations are whole milliseconds (at least 1); no
  retries and `attempts: 0` are the same; a bucket's burst is explicit; a destination whose
  routes are meshdev's implicit one has none; a tcp destination's route has only `to`;
- fault aborts keep httpStatus or grpcStatus (grpc for gRPC/HTTP/2 services);
- policies: equal to the defaults is none; an HTTP service's idle_timeout and
  include_attempt_count are left out; max_ejection_percent is whole;
- security: DISABLE everywhere is no security section;
- authorization: principals of the mesh's own services are those services;
- a service's watch (what a save on this machine rolls) is left out: nothing in a cluster
  follows it; so are `prometheus:` and a `tracing:` without a collector that samples,
  which no Telemetry says (tracing off, sampling 0, is one: Istio would trace otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.export_traffic import IMPLICIT_ROUTES, bucket, token_bucket
from meshdev.bridges.kube.workloads import (
    ImpliedEnv,
    Workload,
    service_fields,
    tcp_services,
    workloads,
)
from meshdev.common.envoy_names import HTTP2_PROTOCOLS
from meshdev.config.durations import format_duration
from meshdev.config.model import (
    Authorization,
    AuthzSource,
    Mesh,
    Policy,
    Route,
)

Dict = dict[str, Any]


def _ms(seconds: float) -> float:
    return max(kc.whole_ms(seconds), 1) / 1000


def _command(command: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    if isinstance(command, tuple):
        if not command:
            return None
        if len(command) == 3 and command[:2] == ("sh", "-c"):
            return command[2]
    return command


def _services(mesh: Mesh) -> Dict:
    out: Dict = {}
    parts: dict[str, list[Workload]] = {}
    for w in workloads(mesh):
        svc = mesh.services[w.service]
        implied = ImpliedEnv(w.service, w.subset, svc.port, tcp_services(mesh, w.service))
        parts.setdefault(w.service, []).append(
            Workload(
                w.service,
                w.subset,
                w.replicas,
                implied.own(w.env),
                w.build,
                None if w.build is not None else w.image,
                _command(w.command),
            )
        )
    for name, svc in mesh.services.items():
        fields = service_fields(parts[name])
        entry: Dict = {k: fields[k] for k in ("build", "image", "command") if k in fields}
        entry["port"] = svc.port
        entry["protocol"] = svc.protocol
        if "replicas" in fields:
            entry["replicas"] = fields["replicas"]
        entry["health_path"] = svc.health_path
        entry["liveness_path"] = svc.liveness_path
        if svc.ready_timeout is not None:
            # progressDeadlineSeconds holds whole seconds.
            entry["ready_timeout"] = format_duration(max(1, math.ceil(svc.ready_timeout)))
        if "env" in fields:
            entry["env"] = fields["env"]
        entry["excluded_ports"] = sorted(set(svc.excluded_ports))
        if "versions" in fields:
            entry["versions"] = fields["versions"]
        if svc.calls is not None:
            entry["calls"] = svc.calls
        out[name] = entry
    return out


def _to(dest: str, to: str | Mapping[str, int] | None) -> str | Mapping[str, int] | None:
    if to is not None and not isinstance(to, str) and len(to) == 1:
        to = next(iter(to))
    return None if to == dest else to


def _route(mesh: Mesh, dest: str, index: int, r: Route) -> Route:
    m = r.match
    method = m.method
    if isinstance(method, tuple) and len(method) == 1:
        method = method[0]
    update: Dict = {
        "match": m.model_copy(
            update={"method": method, "headers": {k.lower(): v for k, v in m.headers.items()}}
        ),
        "name": None if r.name == f"r{index}" else r.name,
        "to": _to(dest, r.to),
        "timeout": _ms(r.timeout) if r.timeout > 0 else r.timeout,
    }
    rt = r.retries
    if rt is None or rt.attempts == 0 or not rt.retry_on:
        update["retries"] = None
    else:
        codes = tuple(c for c in rt.retriable_status_codes if c in kc.KNOWN_STATUS_CODES)
        per_try = _ms(rt.per_try_timeout) if rt.per_try_timeout is not None else None
        update["retries"] = rt.model_copy(
            update={"retriable_status_codes": codes, "per_try_timeout": per_try}
        )
    if r.fault is not None:
        delay, abort = r.fault.delay, r.fault.abort
        if delay is not None:
            delay = delay.model_copy(update={"fixed": _ms(delay.fixed)})
        if abort is not None:
            grpc = mesh.services[dest].protocol in HTTP2_PROTOCOLS
            if abort.grpc_status is not None and (abort.status is None or grpc):
                abort = abort.model_copy(update={"status": None})
            else:
                status = abort.status if abort.status is not None else 503
                abort = abort.model_copy(update={"status": status, "grpc_status": None})
        update["fault"] = r.fault.model_copy(update={"delay": delay, "abort": abort})
    if r.rate_limit is not None:
        rps, burst = bucket(r)
        doc = token_bucket(rps, burst).doc
        seconds = kc.parse_istio_duration(doc["fill_interval"]) or 1.0
        update["rate_limit"] = r.rate_limit.model_copy(
            update={"requests_per_second": doc["tokens_per_fill"] / seconds, "burst": burst}
        )
    return r.model_copy(update=update)


def _routes(mesh: Mesh) -> Dict:
    out: Dict = {}
    for dest, routes in mesh.routes.items():
        if mesh.services[dest].protocol == "tcp":
            to = _to(dest, routes[0].to) if routes else None
            if to is not None:
                out[dest] = [Route(to=to)]
            continue
        converted = [_route(mesh, dest, i, r) for i, r in enumerate(routes)]
        if converted != list(IMPLICIT_ROUTES):
            out[dest] = converted
    return out


def _policy(mesh: Mesh, dest: str, p: Policy) -> Policy | None:
    tcp = mesh.services[dest].protocol == "tcp"
    idle = None
    if tcp and p.idle_timeout is not None:
        idle = _ms(p.idle_timeout) if p.idle_timeout else 0.0
    od = p.outlier_detection
    if od is not None:
        od = od.model_copy(
            update={
                "interval": _ms(od.interval),
                "base_ejection_time": _ms(od.base_ejection_time),
                "max_ejection_percent": round(od.max_ejection_percent),
            }
        )
    out = p.model_copy(
        update={
            "idle_timeout": idle,
            "hash_header": None if tcp else p.hash_header,
            "connect_timeout": _ms(p.connect_timeout),
            "outlier_detection": od,
            "include_attempt_count": False,
        }
    )
    return None if out == Policy() else out


def _source(mesh: Mesh, src: AuthzSource) -> AuthzSource:
    own = kc.principal(mesh.name, "")

    def split(services: tuple[str, ...], principals: tuple[str, ...]) -> tuple[Any, Any]:
        named = list(services)
        rest = []
        for p in principals:
            if p.startswith(own) and "*" not in p:
                named.append(p.removeprefix(own))
            else:
                rest.append(p)
        return tuple(dict.fromkeys(named)), tuple(dict.fromkeys(rest))

    services, principals = split(src.services, src.principals)
    not_services, not_principals = split(src.not_services, src.not_principals)
    return AuthzSource(
        services=services,
        principals=principals,
        not_services=not_services,
        not_principals=not_principals,
    )


def _authorization(mesh: Mesh, a: Authorization) -> Authorization:
    return Authorization.model_validate(
        {
            "name": a.name,
            "action": a.action,
            "from": _source(mesh, a.from_) if a.from_ is not None else None,
            "to": a.to,
        }
    )


def canonical(mesh: Mesh) -> Mesh:
    data: Dict = {"name": mesh.name, "base_image": mesh.base_image}
    data["services"] = _services(mesh)
    data["ingress"] = mesh.ingress
    t = mesh.tracing
    if t.sampling == 0 or t.zipkin is not None or t.otlp is not None:
        data["tracing"] = t
    data["routes"] = _routes(mesh)
    policies = {d: _policy(mesh, d, p) for d, p in mesh.policies.items()}
    data["policies"] = {d: p for d, p in policies.items() if p is not None}
    sec = mesh.security
    modes = [p.mtls for p in mesh.policies.values()]
    if sec is not None and sec.mtls == "DISABLE" and all(m in (None, "DISABLE") for m in modes):
        sec = None
    data["security"] = sec
    data["authorization"] = {
        dest: [_authorization(mesh, a) for a in policies_]
        for dest, policies_ in mesh.authorization.items()
        if policies_
    }
    return Mesh.model_validate(data)
