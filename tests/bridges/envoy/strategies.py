"""Generated meshes that use what the Envoy and Compose bridges translate: every match kind,
weighted subsets, retries, faults with fractional percents, rate limits, every lb policy,
outlier detection, idle timeouts, the four protocols, a gateway with several routes, mutual
TLS and authorization. `meshes()` draws mesh.yaml documents; `valid_mesh` loads one or tells
hypothesis to draw another."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import assume
from hypothesis import strategies as st

from meshdev.config import Mesh, MeshInvalid, parse_mesh

Doc = dict[str, Any]

names = st.from_regex(r"\A[a-z][a-z0-9]{0,5}\Z").filter(lambda n: n != "ingress")
ms = st.integers(min_value=1, max_value=20_000).map(lambda n: f"{n}ms")
# Ports of apps: the usual ones, the gateway's, and the one the admin view would take.
ports = st.one_of(st.sampled_from([80, 8000, 8080, 50051, 15090, 6379]), st.integers(1, 14999))
percents = st.one_of(st.integers(0, 100), st.sampled_from([0.5, 12.25, 33.3333, 99.99, 0.0001]))
paths = st.sampled_from(["/", "/a", "/a/", "/ab", "/b", "/greeter.Greeter/", "/x?y"])
header_names = st.sampled_from(["x-canary", "x-user", "x-v"])
header_values = st.one_of(
    st.sampled_from(["1", "", "a b", "é", "yes"]), st.from_regex(r"\A[a-z0-9]{1,4}\Z")
)


@st.composite
def match(draw: st.DrawFn, *, headers: bool = True) -> Doc:
    out: Doc = {}
    kind = draw(st.sampled_from(["none", "prefix", "path", "regex"]))
    if kind == "regex":
        out["regex"] = draw(st.sampled_from(["/a.*", "/[ab]+", "/(x|y)/[0-9]+"]))
    elif kind != "none":
        out[kind] = draw(paths)
    if draw(st.booleans()):
        out["method"] = draw(
            st.one_of(
                st.sampled_from(["GET", "POST"]),
                st.lists(st.sampled_from(["GET", "POST", "PUT"]), min_size=1, max_size=2),
            )
        )
    if headers and draw(st.booleans()):
        out["headers"] = draw(
            st.dictionaries(
                header_names,
                st.one_of(
                    header_values.map(lambda v: {"exact": v}),
                    header_values.map(lambda v: {"prefix": v}),
                    st.sampled_from(["[0-9]+", "a|b"]).map(lambda r: {"regex": r}),
                    st.booleans().map(lambda b: {"present": b}),
                ),
                max_size=2,
            )
        )
    return out


@st.composite
def http_route(draw: st.DrawFn, dest: str, targets: list[str], index: int) -> Doc:
    r: Doc = {"name": f"r{index}", "match": draw(match())}
    if draw(st.booleans()):
        r["timeout"] = draw(st.one_of(ms, st.just("0s")))
    choice = draw(st.sampled_from(["none", "one", "split"]))
    if choice == "one":
        r["to"] = draw(st.sampled_from(targets))
    elif choice == "split":
        weights = draw(
            st.dictionaries(st.sampled_from(targets), st.integers(0, 100), min_size=1, max_size=3)
        )
        first = next(iter(weights))
        weights[first] += 1
        r["to"] = weights
    if draw(st.booleans()):
        retry_on = draw(
            st.lists(
                st.sampled_from(
                    ["5xx", "reset", "connect-failure", "retriable-status-codes", "unavailable"]
                ),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        retries: Doc = {"attempts": draw(st.integers(0, 5)), "retry_on": retry_on}
        if "retriable-status-codes" in retry_on:
            retries["retriable_status_codes"] = draw(
                st.lists(st.integers(400, 599), min_size=1, max_size=2, unique=True)
            )
        if draw(st.booleans()):
            retries["per_try_timeout"] = draw(ms)
        r["retries"] = retries
    if draw(st.booleans()):
        fault: Doc = {}
        if draw(st.booleans()):
            abort: Doc = {"percent": draw(percents)}
            status = draw(st.sampled_from(["http", "grpc", "both"]))
            if status in ("http", "both"):
                abort["status"] = draw(st.integers(200, 599))
            if status in ("grpc", "both"):
                abort["grpc_status"] = draw(st.integers(0, 16))
            fault["abort"] = abort
        if draw(st.booleans()) or not fault:
            fault["delay"] = {"percent": draw(percents), "fixed": draw(ms)}
        r["fault"] = fault
    if draw(st.booleans()):
        rate: Doc = {
            "requests_per_second": draw(
                st.one_of(
                    st.integers(1, 5000),
                    st.sampled_from([0.1, 0.5, 2.5, 3, 7, 19.5]),
                )
            )
        }
        if draw(st.booleans()):
            rate["burst"] = draw(st.integers(1, 400))
        r["rate_limit"] = rate
    return r


@st.composite
def meshes(draw: st.DrawFn) -> Doc:
    service_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    services: Doc = {}
    for name in service_names:
        svc: Doc = {
            "port": draw(ports),
            "protocol": draw(st.sampled_from(["http", "http", "grpc", "http2", "tcp"])),
        }
        runs = draw(st.sampled_from(["build", "image", "command"]))
        if runs == "build":
            svc["build"] = "."
        elif runs == "image":
            svc["image"] = draw(st.sampled_from(["nginx:1.27", "redis:7", "ghcr.io/a/b:1"]))
        svc["command"] = draw(
            st.one_of(st.none(), st.sampled_from(["python app.py", ["python", "-m", "app"]]))
        )
        if svc["command"] is None:
            del svc["command"]
            if runs == "command":
                svc["command"] = "python app.py"
        env = draw(
            st.dictionaries(st.from_regex(r"\A[A-Z][A-Z_]{0,6}\Z"), header_values, max_size=3)
        )
        if env:
            svc["env"] = env
        if svc["protocol"] == "http" and draw(st.booleans()):
            svc["health_path"] = "/healthz"
        versions = draw(st.lists(names, max_size=3, unique=True))
        if versions:
            svc["versions"] = {}
            for v in versions:
                ver: Doc = {"replicas": draw(st.integers(0, 2))}
                if draw(st.booleans()):
                    ver["env"] = {"VERSION": v, "COLOR": draw(st.sampled_from(["red", "blue"]))}
                if draw(st.booleans()):
                    ver["image"] = "busybox:1"
                svc["versions"][v] = ver
        else:
            svc["replicas"] = draw(st.integers(0, 3))
        services[name] = svc
    http = [n for n in service_names if services[n]["protocol"] != "tcp"]
    doc: Doc = {"name": draw(names), "services": services}
    routes: Doc = {}
    policies: Doc = {}
    for dest in service_names:
        svc = services[dest]
        subsets = [f"{dest}.{v}" for v in svc.get("versions", {})]
        if svc["protocol"] == "tcp":
            if bool(subsets) and draw(st.booleans()):
                routes[dest] = [{"to": {s: draw(st.integers(0, 5)) + 1 for s in subsets}}]
        elif draw(st.booleans()):
            targets = [dest, *subsets, *http]
            routes[dest] = [
                draw(http_route(dest, targets, i)) for i in range(draw(st.integers(1, 3)))
            ]
        if draw(st.booleans()):
            lbs = ["round_robin", "least_request", "random"]
            if svc["protocol"] != "tcp":
                lbs.append("ring_hash")
            policy: Doc = {"lb": draw(st.sampled_from(lbs))}
            if policy["lb"] == "ring_hash":
                policy["hash_header"] = draw(header_names)
            if draw(st.booleans()):
                policy["connect_timeout"] = draw(ms)
            if draw(st.booleans()):
                policy["circuit_breaker"] = {
                    "max_connections": draw(st.integers(1, 2000)),
                    "max_pending_requests": draw(st.integers(0, 2000)),
                    "max_requests": draw(st.integers(1, 2000)),
                    "max_retries": draw(st.integers(0, 10)),
                }
            if draw(st.booleans()):
                policy["outlier_detection"] = {
                    "consecutive_5xx": draw(st.integers(1, 10)),
                    "interval": draw(ms),
                    "base_ejection_time": draw(ms),
                    "max_ejection_percent": draw(st.sampled_from([0, 10, 50, 100, 12.5])),
                }
            if draw(st.booleans()):
                policy["idle_timeout"] = draw(st.one_of(ms, st.just("0s")))
            policies[dest] = policy
    if routes:
        doc["routes"] = routes
    if policies:
        doc["policies"] = policies
    if bool(http) and draw(st.booleans()):
        doc["ingress"] = {
            "port": draw(st.sampled_from([8000, 8080, 9000])),
            "routes": [
                {"name": f"g{i}", "match": draw(match(headers=i % 2 == 0)), "to": to}
                for i, to in enumerate(
                    draw(st.lists(st.sampled_from(http), min_size=1, max_size=3))
                )
            ],
        }
    if draw(st.booleans()):
        mtls = draw(st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE"]))
        doc["security"] = {"mtls": mtls}
        authz: Doc = {}
        for dest in http:
            if draw(st.booleans()):
                authz[dest] = [draw(authorization(i, service_names)) for i in range(2)]
        if authz:
            doc["authorization"] = authz
    return doc


@st.composite
def authorization(draw: st.DrawFn, index: int, services: list[str]) -> Doc:
    entry: Doc = {"name": f"p{index}", "action": draw(st.sampled_from(["ALLOW", "DENY"]))}
    if draw(st.booleans()):
        key = draw(st.sampled_from(["services", "not_services", "principals"]))
        if key == "principals":
            entry["from"] = {
                key: draw(
                    st.lists(
                        st.sampled_from(["cluster.local/ns/*", "*/sa/x", "*", "cluster.local/a"]),
                        min_size=1,
                        max_size=2,
                    )
                )
            }
        else:
            entry["from"] = {key: draw(st.lists(st.sampled_from(services), min_size=1, max_size=2))}
    if draw(st.booleans()):
        op: Doc = {}
        for key in draw(
            st.lists(
                st.sampled_from(["methods", "not_methods", "paths", "not_paths"]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        ):
            if "methods" in key:
                op[key] = draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1, max_size=2))
            else:
                op[key] = draw(
                    st.lists(st.sampled_from(["/a*", "*.png", "/x", "*"]), min_size=1, max_size=2)
                )
        entry["to"] = op
    return entry


def valid_mesh(doc: Doc) -> Mesh:
    """The mesh `doc` describes; a document meshdev would refuse is not a case (assume)."""
    try:
        return parse_mesh(
            yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode(), "mesh.yaml"
        )
    except MeshInvalid:
        assume(False)
        raise AssertionError("unreachable") from None
