"""Meshes for the Kubernetes bridge's tests: a rich hand-written one, and hypothesis's
generated ones (valid by construction, modest in size), using what the bridge translates."""

from __future__ import annotations

import textwrap
from typing import Any

from hypothesis import strategies as st

from meshdev.config import Mesh, parse_mesh
from meshdev.config.model import INGRESS_IDENTITY

# A mesh using what the example does not: security, authorization, a tcp service, ring_hash,
# header presence, methods, gRPC aborts, a version with its own build.
RICH = """
name: shop
security: {mtls: STRICT}
services:
  web:
    image: ghcr.io/acme/web:1.2
    port: 8080
    health_path: /ready
    excluded_ports: [9090, 3306]
    env: {MODE: prod}
    calls: [api, db]
  api:
    build: ./api
    port: 9000
    protocol: http2
    versions:
      v1: {replicas: 2}
      v2: {replicas: 1, build: ./api-next, env: {FLAG: "on"}}
  db:
    image: postgres:16
    port: 5432
    protocol: tcp
    versions:
      a: {replicas: 1}
      b: {replicas: 1}
ingress:
  port: 8000
  routes:
    - {name: api, match: {prefix: /api, method: [GET, POST]}, to: api}
    - {name: site, match: {prefix: /}, to: web}
routes:
  api:
    - name: beta
      match: {prefix: /api/v2, headers: {X-Beta: {present: true}, x-old: {present: false}}}
      to: {api.v1: 80, api.v2: 20}
      retries:
        attempts: 3
        retry_on: [unavailable, retriable-status-codes]
        retriable_status_codes: [409]
      fault: {abort: {percent: 1.5, grpc_status: 14}}
      rate_limit: {requests_per_second: 0.5}
    - {name: rest, to: api.v1, timeout: 0s}
  db:
    - to: {db.a: 3, db.b: 1}
policies:
  api:
    lb: ring_hash
    hash_header: x-user
    mtls: PERMISSIVE
  db:
    lb: ring_hash
    idle_timeout: 0s
authorization:
  api:
    - {name: from-web, from: {services: [web, ingress]}, to: {methods: [GET], paths: ["/api*"]}}
    - {name: no-delete, action: DENY, to: {methods: [DELETE]}}
  db:
    - name: only-api
      from: {principals: ["cluster.local/ns/shop/sa/api", "cluster.local/ns/other/*"]}
"""


def mesh_of(text: str) -> Mesh:
    return parse_mesh(textwrap.dedent(text).encode(), "mesh.yaml")


# Names without `-`: a service's name and a subset's then never make another's Deployment
# name (a-b), which the export refuses.
names = st.from_regex(r"\A[a-z][a-z0-9]{0,5}\Z").filter(lambda n: n != INGRESS_IDENTITY)
env_values = st.sampled_from(["1", "yes", "", "on", "x y", "é", "http://a:80/p?q=1", "0x1f"])
env_names = st.from_regex(r"\A[A-Z][A-Z_]{0,6}\Z")
millis = st.integers(min_value=1, max_value=120_000).map(lambda ms: f"{ms}ms")
# Status codes Istio's retryOn takes (Go's net/http names them).
retry_codes = st.sampled_from([409, 429, 500, 502, 503, 504])
http_retry_on = st.sampled_from(
    ["5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx"]
)
grpc_retry_on = st.sampled_from(["unavailable", "cancelled", "deadline-exceeded", "internal"])


@st.composite
def _service(draw: st.DrawFn, port: int) -> dict[str, Any]:
    protocol = draw(st.sampled_from(["http", "http", "grpc", "http2", "tcp"]))
    svc: dict[str, Any] = {"port": port, "protocol": protocol}
    source = draw(st.sampled_from(["image", "build"]))
    svc[source] = "./app" if source == "build" else draw(st.sampled_from(["nginx:1", "r/x:2"]))
    command = draw(st.sampled_from([None, "python app.py", ["python", "-u", "app.py"]]))
    if command is not None:
        svc["command"] = command
    svc["env"] = draw(st.dictionaries(env_names, env_values, max_size=2))
    if protocol != "tcp" and draw(st.booleans()):
        svc["health_path"] = draw(st.sampled_from(["/", "/healthz"]))
    if draw(st.booleans()):
        svc["excluded_ports"] = draw(st.lists(st.integers(1, 9999), max_size=2))
    versions = draw(st.lists(names, max_size=2, unique=True))
    if versions:
        svc["versions"] = {}
        for v in versions:
            ver: dict[str, Any] = {"replicas": draw(st.integers(0, 3))}
            if draw(st.booleans()):
                ver["env"] = draw(st.dictionaries(env_names, env_values, max_size=2))
            own = draw(st.sampled_from([None, None, "image", "build", "command"]))
            if own == "image":
                ver["image"] = "r/own:1"
            elif own == "build":
                ver["build"] = f"./{v}"
            elif own == "command":
                ver["command"] = "python other.py"
            svc["versions"][v] = ver
    else:
        svc["replicas"] = draw(st.integers(0, 3))
    return svc


@st.composite
def _match(draw: st.DrawFn) -> dict[str, Any]:
    m: dict[str, Any] = {}
    path = draw(st.sampled_from([None, "prefix", "path", "regex"]))
    if path == "regex":
        m["regex"] = draw(st.sampled_from(["/a.*", "/(x|y)/[0-9]+"]))
    elif path is not None:
        m[path] = draw(st.sampled_from(["/", "/a", "/a/b", "/b"]))
    method = draw(st.sampled_from([None, "GET", ["GET", "POST"], ["PUT"]]))
    if method is not None:
        m["method"] = method
    headers = draw(
        st.dictionaries(
            st.sampled_from(["x-a", "X-Tenant", "end-user"]),
            st.sampled_from(
                [
                    {"exact": "1"},
                    {"prefix": "v"},
                    {"regex": "[a-z]+"},
                    {"present": True},
                    {"present": False},
                ]
            ),
            max_size=2,
        )
    )
    if headers:
        m["headers"] = headers
    return m


@st.composite
def _route(draw: st.DrawFn, dest: str, svcs: dict[str, Any], index: int) -> dict[str, Any]:
    svc = svcs[dest]
    r: dict[str, Any] = {}
    if draw(st.booleans()):
        r["name"] = draw(st.sampled_from([f"r{index}", f"n{index}", "x" * (index + 1)]))
    match = draw(_match())
    if match:
        r["match"] = match
    versions = list(svc.get("versions", {}))
    others = [n for n, s in svcs.items() if s["protocol"] != "tcp"]
    to = draw(st.sampled_from(["none", "self", "other", "weights"]))
    if to == "self":
        r["to"] = dest
    elif to == "other":
        r["to"] = draw(st.sampled_from(others))
    elif to == "weights" and versions:
        weights = {f"{dest}.{v}": draw(st.integers(0, 100)) for v in versions}
        weights[f"{dest}.{versions[0]}"] += 1
        r["to"] = weights
    timeout = draw(st.sampled_from([None, "0s", "2s"]) | millis)
    if timeout is not None:
        r["timeout"] = timeout
    grpc = svc["protocol"] in ("grpc", "http2")
    if draw(st.booleans()):
        conditions = draw(st.lists(grpc_retry_on if grpc else http_retry_on, max_size=2))
        retries: dict[str, Any] = {"attempts": draw(st.integers(0, 3)), "retry_on": conditions}
        if draw(st.booleans()):
            retries["retry_on"] = [*conditions, "retriable-status-codes"]
            retries["retriable_status_codes"] = draw(st.lists(retry_codes, max_size=2))
        if timeout in (None, "0s", "2s") and draw(st.booleans()):
            retries["per_try_timeout"] = "500ms"
        r["retries"] = retries
    if draw(st.booleans()):
        fault: dict[str, Any] = {}
        if draw(st.booleans()):
            fault["delay"] = {"percent": draw(st.integers(0, 100)), "fixed": draw(millis)}
        if draw(st.booleans()) or not fault:
            abort: dict[str, Any] = {"percent": draw(st.sampled_from([0, 2.5, 50, 100]))}
            kind = draw(st.sampled_from(["status", "grpc_status"]))
            abort[kind] = (
                draw(st.integers(200, 599)) if kind == "status" else draw(st.integers(0, 16))
            )
            fault["abort"] = abort
        r["fault"] = fault
    if draw(st.booleans()):
        rps = draw(st.sampled_from([1, 0.5, 0.25, 3, 200]))
        r["rate_limit"] = {"requests_per_second": rps}
        if draw(st.booleans()):
            r["rate_limit"]["burst"] = draw(st.integers(1, 100))
    return r


@st.composite
def _policy(draw: st.DrawFn, svc: dict[str, Any], security: bool) -> dict[str, Any]:
    tcp = svc["protocol"] == "tcp"
    p: dict[str, Any] = {}
    lb = draw(st.sampled_from(["round_robin", "least_request", "random", "ring_hash"]))
    p["lb"] = lb
    if lb == "ring_hash" and not tcp:
        p["hash_header"] = "x-user"
    if draw(st.booleans()):
        p["connect_timeout"] = draw(millis)
    if draw(st.booleans()):
        p["circuit_breaker"] = {
            "max_connections": draw(st.integers(1, 5000)),
            "max_pending_requests": draw(st.integers(0, 5000)),
            "max_requests": draw(st.integers(1, 5000)),
            "max_retries": draw(st.integers(0, 10)),
        }
    if draw(st.booleans()):
        p["outlier_detection"] = {
            "consecutive_5xx": draw(st.integers(1, 10)),
            "interval": draw(millis),
            "base_ejection_time": draw(millis),
            "max_ejection_percent": draw(st.integers(0, 100)),
        }
    if draw(st.booleans()):
        p["idle_timeout"] = draw(st.sampled_from(["0s", "30s"]) | millis)
    if security and draw(st.booleans()):
        p["mtls"] = draw(st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE"]))
    return p


@st.composite
def _authorization(
    draw: st.DrawFn, mesh: str, dest: str, svcs: dict[str, Any], index: int, mtls: str
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"p{index}",
        "action": draw(st.sampled_from(["ALLOW", "DENY"])),
    }
    callers = [*svcs, INGRESS_IDENTITY]
    if mtls != "DISABLE" and draw(st.booleans()):
        key = draw(st.sampled_from(["services", "not_services"]))
        entry["from"] = {key: draw(st.lists(st.sampled_from(callers), min_size=1, max_size=2))}
        if draw(st.booleans()):
            principals = ["*", f"cluster.local/ns/{mesh}/sa/*"]
            # Not one that its own not_services excludes: validation refuses such a `from`.
            if key == "services" or dest not in entry["from"][key]:
                principals.append(f"cluster.local/ns/{mesh}/sa/{dest}")
            entry["from"]["principals"] = [draw(st.sampled_from(principals))]
    if svcs[dest]["protocol"] != "tcp" and (draw(st.booleans()) or "from" not in entry):
        entry["to"] = {
            "methods": draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1, max_size=2)),
            "not_paths": draw(st.lists(st.sampled_from(["/a*", "*.png", "/x"]), max_size=2)),
        }
    if "from" not in entry and "to" not in entry:
        entry["from"] = {"principals": ["*"]} if mtls != "DISABLE" else None
        if entry["from"] is None:
            del entry["from"]
    return entry


@st.composite
def meshes(draw: st.DrawFn) -> dict[str, Any]:
    """A mesh file's data, valid for meshdev's loader."""
    service_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    ports = draw(
        st.lists(
            st.sampled_from([80, 8080, 8081, 9000, 9080, 5432, 50051]),
            min_size=len(service_names),
            max_size=len(service_names),
            unique=True,
        )
    )
    svcs = {n: draw(_service(p)) for n, p in zip(service_names, ports, strict=True)}
    for svc in svcs.values():
        if draw(st.booleans()):
            svc["calls"] = draw(st.lists(st.sampled_from(service_names), unique=True))
    name = draw(names)
    doc: dict[str, Any] = {"name": name, "services": svcs}
    http = [n for n, s in svcs.items() if s["protocol"] != "tcp"]
    routes: dict[str, Any] = {}
    for dest, svc in svcs.items():
        if svc["protocol"] == "tcp":
            versions = list(svc.get("versions", {}))
            if bool(versions) and draw(st.booleans()):
                routes[dest] = [{"to": {f"{dest}.{v}": 1 + i for i, v in enumerate(versions)}}]
        elif bool(http) and draw(st.booleans()):
            routes[dest] = [draw(_route(dest, svcs, i)) for i in range(draw(st.integers(1, 2)))]
    if routes:
        doc["routes"] = routes
    if bool(http) and draw(st.booleans()):
        ingress_routes = []
        for i in range(draw(st.integers(1, 2))):
            entry: dict[str, Any] = {"to": draw(st.sampled_from(http))}
            match = draw(_match())
            if match:
                entry["match"] = match
            if draw(st.booleans()):
                entry["name"] = f"i{i}"
            ingress_routes.append(entry)
        doc["ingress"] = {"port": draw(st.sampled_from([8000, 8443])), "routes": ingress_routes}
    security = draw(st.booleans())
    if security:
        doc["security"] = {"mtls": draw(st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE"]))}
        if draw(st.booleans()):
            doc["security"]["cert_ttl"] = draw(st.sampled_from(["1h", "24h", "90m"]))
    policies = {d: draw(_policy(s, security)) for d, s in svcs.items() if draw(st.booleans())}
    if policies:
        doc["policies"] = policies
    authz: dict[str, Any] = {}
    for dest in svcs:
        if draw(st.booleans()):
            mode = "DISABLE"
            if security:
                mode = policies.get(dest, {}).get("mtls") or doc["security"]["mtls"]
            authz[dest] = [
                draw(_authorization(name, dest, svcs, i, mode))
                for i in range(draw(st.integers(1, 2)))
            ]
    if authz:
        doc["authorization"] = authz
    return doc
