"""Property: any valid mesh dumped to YAML loads back to the same model."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdev.config import Mesh, parse_mesh

names = st.from_regex(r"\A[a-z][a-z0-9]{0,6}\Z").filter(
    # With security, `ingress` is the gateway's identity, which no service may take.
    lambda n: n != "ingress"
)
# Text that YAML likes to reinterpret: booleans, numbers, dates, nulls, punctuation, unicode.
tricky_text = st.one_of(
    st.sampled_from(["yes", "no", "on", "null", "~", "1", "0x1f", "2001-01-01", ": x", "#", "é"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
)
durations = st.integers(min_value=1, max_value=3_600_000).map(lambda ms: f"{ms}ms")


@st.composite
def services(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in draw(st.lists(names, min_size=1, max_size=3, unique=True)):
        svc: dict[str, Any] = {
            "command": draw(st.sampled_from(["python app.py", ["python", "app.py"]])),
            "port": draw(st.integers(1, 14999)),
            "env": draw(
                st.dictionaries(st.from_regex(r"\A[A-Z_]{1,8}\Z"), tricky_text, max_size=3)
            ),
        }
        versions = draw(st.lists(names, max_size=3, unique=True))
        if versions:
            svc["versions"] = {v: {"replicas": draw(st.integers(0, 3))} for v in versions}
        else:
            svc["replicas"] = draw(st.integers(0, 4))
        out[name] = svc
    return out


@st.composite
def route(draw: st.DrawFn, dest: str, svc: dict[str, Any], index: int) -> dict[str, Any]:
    r: dict[str, Any] = {"name": f"r{index}", "timeout": draw(durations)}
    versions = list(svc.get("versions", {}))
    split: bool = draw(st.booleans())
    if versions and split:
        weights = {f"{dest}.{v}": draw(st.integers(0, 100)) for v in versions}
        weights[f"{dest}.{versions[0]}"] += 1
        r["to"] = weights
    else:
        r["to"] = dest
    r["match"] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "prefix": st.from_regex(r"\A/[a-z]{0,5}\Z"),
                "method": st.sampled_from(["GET", "POST"]),
                "headers": st.dictionaries(
                    st.from_regex(r"\Ax-[a-z]{1,5}\Z"),
                    st.one_of(
                        tricky_text.map(lambda t: {"exact": t}),
                        st.booleans().map(lambda b: {"present": b}),
                    ),
                    max_size=2,
                ),
            },
        )
    )
    if draw(st.booleans()):
        r["retries"] = {"attempts": draw(st.integers(0, 5)), "retry_on": ["5xx", "reset"]}
    if draw(st.booleans()):
        r["fault"] = {
            "abort": {"percent": draw(st.integers(0, 100)), "status": draw(st.integers(200, 599))}
        }
    if draw(st.booleans()):
        r["rate_limit"] = {"requests_per_second": draw(st.integers(1, 1000)), "burst": 5}
    return r


@st.composite
def meshes(draw: st.DrawFn) -> dict[str, Any]:
    svcs = draw(services())
    doc: dict[str, Any] = {"name": draw(names), "services": svcs}
    routes: dict[str, Any] = {}
    for dest, svc in svcs.items():
        if draw(st.booleans()):
            n = draw(st.integers(1, 3))
            routes[dest] = [draw(route(dest, svc, i)) for i in range(n)]
    if routes:
        doc["routes"] = routes
    if draw(st.booleans()):
        doc["ingress"] = {"port": 8000, "routes": [{"to": next(iter(svcs))}]}
    doc["policies"] = {
        dest: {
            "lb": draw(st.sampled_from(["round_robin", "least_request", "random"])),
            "circuit_breaker": {"max_requests": draw(st.integers(1, 2000))},
        }
        for dest in svcs
        if draw(st.booleans())
    }
    mtls = None
    if draw(st.booleans()):
        mtls = draw(st.sampled_from(["STRICT", "PERMISSIVE", "DISABLE"]))
        doc["security"] = {"mtls": mtls, "cert_ttl": draw(st.sampled_from(["10s", "90m", "24h"]))}
    authz: dict[str, Any] = {}
    for dest in svcs:
        if draw(st.booleans()):
            authz[dest] = [draw(authorization(i, list(svcs), mtls)) for i in range(2)]
    if authz:
        doc["authorization"] = authz
    return doc


@st.composite
def authorization(
    draw: st.DrawFn, index: int, services: list[str], mtls: str | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"p{index}",
        "action": draw(st.sampled_from(["ALLOW", "DENY"])),
    }
    # Callers are named by identity only where mutual TLS proves it.
    if mtls in ("STRICT", "PERMISSIVE") and draw(st.booleans()):
        key = draw(st.sampled_from(["services", "not_services"]))
        entry["from"] = {key: draw(st.lists(st.sampled_from(services), min_size=1, max_size=2))}
    if draw(st.booleans()):
        entry["to"] = {
            "methods": draw(st.lists(st.sampled_from(["GET", "POST"]), min_size=1, max_size=2)),
            "not_paths": draw(st.lists(st.sampled_from(["/a*", "*.png", "/x"]), max_size=2)),
        }
    return entry


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes())
def test_yaml_round_trip(doc: dict[str, Any]) -> None:
    first = parse_mesh(yaml.safe_dump(doc, allow_unicode=True).encode(), "mesh.yaml")
    dumped = first.model_dump(mode="json", exclude_none=True)
    again = parse_mesh(yaml.safe_dump(dumped, allow_unicode=True).encode(), "mesh.yaml")
    assert again == first
    assert isinstance(again, Mesh)
    # And every value written survives: the model holds exactly what the file said.
    for name, svc in doc["services"].items():
        assert dict(again.services[name].env) == svc["env"]
