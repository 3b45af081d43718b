"""Round trip: every bootstrap `export envoy` writes, read back from Envoy's own protos, says
what plan.render's SidecarConfig for that pod says: the same listeners, virtual hosts and
routes (matches, weights, timeouts, retries, faults, rate limits), clusters (endpoints, lb,
breakers, outlier detection, HTTP/2, TLS) and limits; for the example and for generated
meshes. The gateway's flattened table is also checked by behaviour: for generated requests
it picks the same service route as meshdev's own two-level router does."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdev.bridges.envoy.clusters import is_ip
from meshdev.bridges.envoy.export import EnvoyExport, PodBootstrap, export_envoy
from meshdev.bridges.envoy.notes import Note
from meshdev.bridges.envoy.routes import METADATA_KEY
from meshdev.common import sidecar_config as sc
from meshdev.config import load_mesh, parse_mesh
from meshdev.sidecar.router.table import Matcher, RouteTable, strip_query
from tests.bridges.envoy import readback
from tests.bridges.envoy.envoy_protos import parse
from tests.bridges.envoy.strategies import meshes, valid_mesh

EXAMPLE = Path(__file__).parents[3] / "examples" / "flask-app" / "mesh.yaml"
Doc = dict[str, Any]


# -- the expected side -----------------------------------------------------------------------


def _match(m: sc.RouteMatch) -> Doc:
    """A match as Envoy has to say it: "every path" is prefix "/", empty header values as
    `_header` says."""
    if m.prefix is None and m.path is None and m.regex is None:
        m = m.model_copy(update={"prefix": "/"})
    headers = tuple(_header(h) for h in m.headers)
    return m.model_copy(update={"headers": headers}).model_dump(mode="json")


def _header(h: sc.HeaderMatch) -> sc.HeaderMatch:
    """Envoy refuses an empty prefix or regex: "" as exact or prefix is any value (present),
    and "" as a regex only the empty value (exact ""); absent is present, inverted."""
    if h.exact == "" or h.prefix == "":
        return h.model_copy(update={"exact": None, "prefix": None, "present": True})
    if h.regex == "":
        return h.model_copy(update={"regex": None, "exact": ""})
    if h.present is False:
        # "Absent" is written as "present", inverted.
        return h.model_copy(update={"present": True, "invert": not h.invert})
    return h


def _route(r: sc.Route) -> Doc:
    out = r.model_dump(mode="json")
    out["match"] = _match(r.match)
    if len(r.clusters) == 1:
        # One destination is Envoy's `cluster`: its weight meant nothing.
        out["clusters"][0]["weight"] = 1
    if r.rate_limit is not None:
        out["rate_limit"]["requests_per_second"] = readback.rate(r.rate_limit.requests_per_second)
    if r.fault is not None and r.fault.abort is not None and r.fault.abort.grpc_status is not None:
        # Envoy aborts with the gRPC status only (a note says so).
        out["fault"]["abort"]["status"] = 503
    return out


def _percent(value: float) -> float:
    # Fault percents are written to a millionth (a note says when that rounds).
    return round(value * 10_000) / 10_000


def _fault_percents(route: Doc) -> Doc:
    fault = route.get("fault")
    if fault:
        for kind in ("abort", "delay"):
            if fault.get(kind):
                fault[kind]["percent"] = _percent(fault[kind]["percent"])
    return route


def _authz(policies: tuple[sc.AuthzPolicy, ...]) -> list[Doc]:
    out = []
    for p in policies:
        for i, rule in enumerate(p.rules):
            fields = rule.model_dump(mode="json")
            out.append(
                {
                    "name": p.name if len(p.rules) == 1 else f"{p.name}[{i}]",
                    "action": p.action,
                    "rule": _normal_rule(fields),
                }
            )
    return sorted(out, key=lambda d: (d["action"] == "ALLOW", d["name"]))


def _normal_rule(rule: Doc) -> Doc:
    out = {k: list(v) for k, v in rule.items()}
    # Istio's `*` path is any path: with no other path it says nothing.
    if out["paths"] == ["*"]:
        out["paths"] = []
    return out


def _read_authz(found: list[Doc]) -> list[Doc]:
    return sorted(
        ({**d, "rule": _normal_rule(d["rule"])} for d in found),
        key=lambda d: (d["action"] == "ALLOW", d["name"]),
    )


# -- the comparison --------------------------------------------------------------------------


def check_pod(pb: PodBootstrap, export_notes: tuple[Note, ...] = ()) -> None:
    cfg = pb.config
    got = readback.read(parse(pb.bootstrap))
    facts: readback.RouteFacts = got["facts"]

    assert got["node"] == cfg.node
    assert got["service"] == (cfg.service or "ingress")
    # The admin API on the pod's loopback, its port meshdev's.
    assert got["admin"] == {"address": pb.placement.local, "port": cfg.admin.port}

    # Clusters, field by field; what Envoy keeps on routes is checked on the routes below.
    assert [c["name"] for c in got["clusters"]] == [c.name for c in cfg.clusters]
    for want, have in zip(cfg.clusters, got["clusters"], strict=True):
        expected = want.model_dump(mode="json", exclude={"stream_idle_timeout", "hash_header"})
        if want.outlier_detection is not None:
            expected["outlier_detection"]["max_ejection_percent"] = round(
                want.outlier_detection.max_ejection_percent
            )
        dns = any(not is_ip(e.address) for e in want.endpoints)
        assert have.pop("type") == ("STRICT_DNS" if dns else "STATIC")
        assert have == expected, want.name

    # Each route carries its clusters' stream idle timeout (the longest, when they differ:
    # a note says so), ring-hash header and, to HTTP/2 clusters, its timeout as a stream
    # duration that also caps grpc-timeout.
    notes = {n.field for n in export_notes}
    for fact in facts.routes:
        targets = [cfg.cluster(name) for name in fact.clusters]
        assert all(t is not None for t in targets)
        idles = {t.stream_idle_timeout for t in targets if t is not None}
        assert fact.idle_timeout == max(idles)
        if len(idles) > 1:
            assert any(f.startswith("routes.") for f in notes)
        hashed = [t.hash_header for t in targets if t is not None and t.lb == "ring_hash"]
        assert fact.hash_headers == tuple(dict.fromkeys(hashed))[:1]
        http2 = any(t is not None and t.http2 for t in targets)
        # Envoy's router ignores `timeout` once max_stream_duration is set: there it is.
        assert fact.max_stream_duration == (fact.timeout if http2 else None)
        assert fact.grpc_timeout_max == (fact.timeout if http2 else None)

    # Listeners.
    assert [lst["name"] for lst in got["listeners"]] == [lst.name for lst in cfg.listeners]
    for want_l, have_l in zip(cfg.listeners, got["listeners"], strict=True):
        for key in ("kind", "address", "port", "bind_to_port", "use_original_dst", "mtls"):
            assert have_l[key] == getattr(want_l, key), (want_l.name, key)
        if want_l.kind == "inbound":
            assert have_l["cluster"] == want_l.cluster
            assert _read_authz(have_l.get("authorization", [])) == _authz(want_l.authorization)
        if want_l.tcp_proxy is not None:
            tcp = want_l.tcp_proxy.model_dump(mode="json")
            tcp["clusters"] = [c for c in tcp["clusters"] if c["weight"] > 0]
            if len(tcp["clusters"]) == 1:
                tcp["clusters"][0]["weight"] = 1
            assert have_l["tcp_proxy"] == tcp
        if want_l.kind == "ingress":
            check_ingress(cfg, want_l, have_l)

    # Virtual hosts and their routes (the outbound listener's table).
    if any(lst.kind == "outbound" and lst.tcp_proxy is None for lst in cfg.listeners):
        expected_vhosts = [
            {
                "name": v.name,
                "domains": list(v.domains),
                "routes": [_fault_percents(_route(r)) for r in v.routes],
                "include_attempt_count_in_response": v.include_attempt_count_in_response,
            }
            for v in cfg.virtual_hosts
        ]
        assert got["virtual_hosts"] == expected_vhosts

    # Limits and access log, on every HTTP connection manager.
    expected_limits = cfg.limits.model_dump(
        include={"header_timeout", "idle_timeout", "max_headers", "max_header_bytes"}
    )
    for limits in got["limits"]:
        assert limits == expected_limits
    assert set(got["access_log"]) <= {cfg.access_log}


def check_ingress(cfg: sc.SidecarConfig, want: sc.Listener, have: Doc) -> None:
    assert have["routes"] == [
        {"name": ir.name, "match": _match(ir.match), "virtual_host": ir.virtual_host}
        for ir in want.routes
    ]
    vhosts = {v.name: v for v in cfg.virtual_hosts}
    for ir in want.routes:
        own = {r.name: r for r in vhosts[ir.virtual_host].routes}
        flat = have["flattened"].get(ir.name, [])
        names = [
            m.metadata.filter_metadata[METADATA_KEY].fields["route"].string_value for m, _ in flat
        ]
        # The service's routes, in its order (those that cannot match beside the gateway's
        # route are left out).
        assert names == [n for n in own if n in names]
        for message, r in flat:
            meta = message.metadata.filter_metadata[METADATA_KEY]
            source = own[meta.fields["route"].string_value]
            assert message.name == f"{ir.name}/{ir.virtual_host}/{source.name}"
            assert message.stat_prefix == f"{ir.virtual_host}.{source.name}"
            # The action is the service route's own: only the match is the pair's.
            assert _fault_percents(_route(r)) | {"match": None, "name": None} == _fault_percents(
                _route(source)
            ) | {"match": None, "name": None}


def check_export(export: EnvoyExport) -> None:
    for pb in export.pods:
        check_pod(pb, export.notes)


def test_example_round_trip() -> None:
    export = export_envoy(load_mesh(EXAMPLE))
    assert {pb.pod.name for pb in export.pods} == {
        "ingress",
        "frontend-0",
        "backend-v1-0",
        "backend-v1-1",
        "backend-v2-0",
        "greeter-0",
        "greeter-1",
    }
    check_export(export)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(meshes())
def test_generated_meshes_round_trip(doc: Doc) -> None:
    check_export(export_envoy(valid_mesh(doc)))


def test_a_virtual_hosts_attempt_count_round_trips() -> None:
    text = (
        "name: m\nservices: {a: {image: x}, b: {image: x}}\n"
        "policies: {a: {include_attempt_count: true}}\n"
    )
    check_export(export_envoy(parse_mesh(text.encode(), "mesh.yaml")))


def test_round_trip_notices_a_difference() -> None:
    """The comparison is not vacuous: a bootstrap edited after export fails it."""
    export = export_envoy(load_mesh(EXAMPLE))
    pb = next(p for p in export.pods if p.pod.name == "frontend-0")
    outbound = pb.bootstrap["static_resources"]["listeners"][1]
    hcm = outbound["filter_chains"][0]["filters"][0]["typed_config"]
    items = next(
        r for v in hcm["route_config"]["virtual_hosts"] for r in v["routes"] if r["name"] == "items"
    )
    items["route"]["retry_policy"]["num_retries"] = 3
    with pytest.raises(AssertionError):
        check_pod(pb)


# -- the gateway, by behaviour ---------------------------------------------------------------


class _Headers:
    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = {k.lower(): v for k, v in values.items()}

    def get(self, name: str, /) -> str | None:
        return self._values.get(name.lower())


def _envoy_header(h: Any, method: str, path: str, headers: _Headers) -> bool:
    value = method if h.name == ":method" else path if h.name == ":path" else headers.get(h.name)
    kind = h.WhichOneof("header_match_specifier")
    if value is None:
        # Absent: only a presence condition can hold (meshdev's reading of Envoy's rule).
        return kind == "present_match" and (not h.present_match) != bool(h.invert_match)
    if kind == "present_match":
        hit = h.present_match
    else:
        sm = h.string_match
        pattern = sm.WhichOneof("match_pattern")
        if pattern == "exact":
            hit = value == sm.exact
        elif pattern == "prefix":
            hit = value.startswith(sm.prefix)
        else:
            hit = re.fullmatch(sm.safe_regex.regex, value) is not None
    return bool(hit) != bool(h.invert_match)


def envoy_pick(routes: list[Any], method: str, path: str, headers: _Headers) -> Any | None:
    """Envoy's route choice in one table: the first route whose match holds."""
    for r in routes:
        m = r.match
        kind = m.WhichOneof("path_specifier")
        if kind == "prefix":
            ok = path.startswith(m.prefix)
        elif kind == "path":
            ok = strip_query(path) == m.path
        else:
            ok = re.fullmatch(m.safe_regex.regex, strip_query(path)) is not None
        if ok and all(_envoy_header(h, method, path, headers) for h in m.headers):
            return r
    return None


def meshdev_pick(
    cfg: sc.SidecarConfig, lst: sc.Listener, method: str, path: str, headers: _Headers
) -> tuple[str, str] | None:
    """meshdev's gateway: its own table picks a service, whose table picks the route."""
    vhosts = {v.name: v for v in cfg.virtual_hosts}
    gateway = RouteTable([(Matcher(ir.match), ir.virtual_host) for ir in lst.routes])
    vhost = gateway.match(method, path, headers)
    if vhost is None:
        return None
    table = RouteTable([(Matcher(r.match), r.name) for r in vhosts[vhost].routes])
    route = table.match(method, path, headers)
    return None if route is None else (vhost, route)


requests = st.tuples(
    st.sampled_from(["GET", "POST", "PUT"]),
    st.tuples(
        st.sampled_from(["/", "/a", "/a/", "/ab", "/b", "/greeter.Greeter/", "/x", "/y/12"]),
        st.sampled_from(["", "b", "/c", "?q=1", "?y"]),
    ).map("".join),
    st.dictionaries(
        st.sampled_from(["x-canary", "x-user", "x-v"]),
        st.sampled_from(["1", "", "a b", "é", "yes", "a", "7"]),
        max_size=3,
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(meshes(), st.lists(requests, min_size=20, max_size=20))
def test_gateway_picks_what_meshdev_picks(
    doc: Doc, reqs: list[tuple[str, str, dict[str, str]]]
) -> None:
    mesh = valid_mesh(doc)
    export = export_envoy(mesh)
    gateway = next((pb for pb in export.pods if pb.pod.is_ingress), None)
    if gateway is None:
        return
    cfg = gateway.config
    lst = next(lst for lst in cfg.listeners if lst.kind == "ingress")
    listener = next(
        lst for lst in parse(gateway.bootstrap).static_resources.listeners if lst.name == "ingress"
    )
    routes = list(readback.listener(listener, readback.RouteFacts())[1])
    for method, path, values in reqs:
        headers = _Headers(values)
        picked = envoy_pick(routes, method, path, headers)
        got = None
        if picked is not None and picked.WhichOneof("action") == "route":
            meta = picked.metadata.filter_metadata[METADATA_KEY].fields
            got = (meta["virtual_host"].string_value, meta["route"].string_value)
        assert got == meshdev_pick(cfg, lst, method, path, headers), (method, path, values)
