"""`export envoy`: every bootstrap is one Envoy accepts by its own schema (xds-protos, unknown
fields refused, every typed_config resolvable) and by protoc-gen-validate's rules, including
the messages inside typed_configs; and the translation choices that are Envoy's own: the
admin view, DNS clusters for compose names, filter order, TLS chains, RBAC, token buckets,
and the notes for what Envoy says differently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings

from meshdev.bridges.envoy import proto
from meshdev.bridges.envoy.export import (
    EnvoyExport,
    PodBootstrap,
    admin_view_port,
    export_envoy,
    write_bootstraps,
)
from meshdev.bridges.envoy.routes import token_bucket
from meshdev.common import sidecar_config as sc
from meshdev.config import Mesh, load_mesh, parse_mesh
from tests.bridges.envoy.envoy_protos import parse, typed_configs, violations
from tests.bridges.envoy.strategies import meshes, valid_mesh

EXAMPLE = Path(__file__).parents[3] / "examples" / "flask-app" / "mesh.yaml"
Doc = dict[str, Any]


def mesh_of(text: str) -> Mesh:
    return parse_mesh(text.encode(), "mesh.yaml")


def pod(export: EnvoyExport, name: str) -> PodBootstrap:
    return next(p for p in export.pods if p.pod.name == name)


def listener(pb: PodBootstrap, name: str) -> Doc:
    found: Doc = next(x for x in pb.bootstrap["static_resources"]["listeners"] if x["name"] == name)
    return found


def hcm(lst: Doc, chain: int = 0) -> Doc:
    config: Doc = lst["filter_chains"][chain]["filters"][0]["typed_config"]
    return config


def cluster(pb: PodBootstrap, name: str) -> Doc:
    found: Doc = next(c for c in pb.bootstrap["static_resources"]["clusters"] if c["name"] == name)
    return found


# -- Envoy's schema and rules ----------------------------------------------------------------


def test_example_bootstraps_are_envoys_and_pass_its_rules() -> None:
    export = export_envoy(load_mesh(EXAMPLE))
    kinds: set[str] = set()
    for pb in export.pods:
        message = parse(pb.bootstrap)
        assert violations(message) == [], pb.pod.name
        kinds |= {m.DESCRIPTOR.full_name for m in typed_configs(message)}
    # Each typed_config resolved to its real message: the filters the example needs.
    assert {
        proto.HCM,
        proto.ROUTER,
        proto.FAULT,
        proto.LOCAL_RATELIMIT,
        proto.UPSTREAM_HTTP,
        proto.STDOUT_LOG,
    } <= kinds


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(meshes())
def test_generated_bootstraps_are_envoys_and_pass_its_rules(doc: Doc) -> None:
    for pb in export_envoy(valid_mesh(doc)).pods:
        assert violations(parse(pb.bootstrap)) == [], pb.pod.name


def test_the_rules_are_checked_inside_typed_configs() -> None:
    """protoc-gen-validate's Python runtime never unpacks an Any; envoy_protos does, so a
    broken message packed in a typed_config (even in a route's typed_per_filter_config) is
    found."""
    pb = pod(export_envoy(load_mesh(EXAMPLE)), "frontend-0")
    outbound = hcm(listener(pb, "outbound"))
    outbound["stat_prefix"] = ""
    items = next(
        r
        for v in outbound["route_config"]["virtual_hosts"]
        for r in v["routes"]
        if r["name"] == "items"
    )
    items["typed_per_filter_config"][proto.LOCAL_RATELIMIT_FILTER]["token_bucket"][
        "fill_interval"
    ] = "0s"
    found = violations(parse(pb.bootstrap))
    assert any(proto.HCM in v and "stat_prefix" in v for v in found)
    assert any(proto.LOCAL_RATELIMIT in v and "fill_interval" in v for v in found)


def test_unknown_fields_and_unloaded_types_are_refused() -> None:
    pb = pod(export_envoy(load_mesh(EXAMPLE)), "frontend-0")
    cluster(pb, "backend")["lb_polcy"] = "RANDOM"
    with pytest.raises(json_format.ParseError, match="lb_polcy"):
        parse(pb.bootstrap)
    pb = pod(export_envoy(load_mesh(EXAMPLE)), "frontend-0")
    hcm(listener(pb, "inbound"))["http_filters"][0]["typed_config"]["@type"] = (
        "type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope"
    )
    with pytest.raises(json_format.ParseError):
        parse(pb.bootstrap)


def test_yaml_and_json_files_hold_the_same_bootstraps(tmp_path: Path) -> None:
    export = export_envoy(load_mesh(EXAMPLE))
    as_yaml = write_bootstraps(export, tmp_path / "y", "yaml")
    as_json = write_bootstraps(export, tmp_path / "j", "json")
    assert [p.name for p in as_yaml] == [f"{pb.pod.name}.yaml" for pb in export.pods]
    for y, j, pb in zip(as_yaml, as_json, export.pods, strict=True):
        from_yaml = yaml.safe_load(y.read_text())
        assert from_yaml == json.loads(j.read_text()) == pb.bootstrap
        # Envoy's image runs as its own user: the mounted file must be readable by it.
        assert y.stat().st_mode & 0o004
        assert violations(parse(from_yaml)) == []


# -- what the example says differently -------------------------------------------------------


def test_the_example_notes_name_their_fields() -> None:
    export = export_envoy(load_mesh(EXAMPLE))
    assert [n.field for n in export.notes] == [
        "ingress.routes",
        "templates/sidecar.yaml limits.max_header_line",
        "tracing",
        "admin",
        "routes.backend[canary].fault",
    ]
    fault = next(n for n in export.notes if n.field == "routes.backend[canary].fault")
    assert "x-envoy-fault" in fault.message


# -- translation choices ---------------------------------------------------------------------


TRACED = """
name: shop
services:
  web: {command: python app.py}
ingress: {port: 8000, routes: [{match: {prefix: /}, to: web}]}
"""


def test_tracing_is_the_zipkin_tracer_on_every_connection_manager_with_its_cluster() -> None:
    url = "http://zipkin.observability:9411/api/v2/spans"
    text = (
        TRACED
        + f"tracing: {{sampling: 25, zipkin: '{url}', otlp: 'http://10.0.0.9:4318/v1/traces'}}\n"
    )
    export = export_envoy(mesh_of(text))
    for pb in export.pods:
        message = parse(pb.bootstrap)
        assert violations(message) == [], pb.pod.name
        hcms = [
            hcm(x)
            for x in pb.bootstrap["static_resources"]["listeners"]
            if x["name"] != "meshdev_admin"
        ]
        assert hcms
        for h in hcms:
            tracing = h["tracing"]
            assert tracing["random_sampling"] == {"value": 25.0}
            provider = tracing["provider"]
            assert provider["name"] == "envoy.tracers.zipkin"
            config = provider["typed_config"]
            assert config["collector_cluster"] == "zipkin"
            assert config["collector_endpoint"] == "/api/v2/spans"
            assert config["collector_endpoint_version"] == "HTTP_JSON"
            assert config["trace_context_option"] == "USE_B3_WITH_W3C_PROPAGATION"
        zipkin = cluster(pb, "zipkin")
        assert zipkin["type"] == "STRICT_DNS"
        address = zipkin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert address["address"]["socket_address"] == {
            "address": "zipkin.observability",
            "port_value": 9411,
        }
    fields = [n.field for n in export.notes]
    assert "tracing" in fields and "tracing.otlp" in fields


def test_otlp_alone_is_the_opentelemetry_tracer_and_no_collector_is_noted() -> None:
    text = TRACED + "tracing: {otlp: 'http://10.0.0.9:4318/v1/traces'}\n"
    export = export_envoy(mesh_of(text))
    pb = pod(export, "web-0")
    assert violations(parse(pb.bootstrap)) == []
    provider = hcm(listener(pb, "inbound"))["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["service_name"] == "web"
    assert (
        provider["typed_config"]["http_service"]["http_uri"]["uri"]
        == "http://10.0.0.9:4318/v1/traces"
    )
    assert cluster(pb, "opentelemetry_collector")["type"] == "STATIC"
    # The ring only (the default): nothing to send, so no tracer, and a note says why.
    plain = export_envoy(mesh_of(TRACED))
    assert all(
        "tracing" not in hcm(listener(p, "inbound")) for p in plain.pods if p.pod.name != "ingress"
    )
    [note] = [n for n in plain.notes if n.field == "tracing"]
    assert "meshdev traces" in note.message
    off = export_envoy(
        mesh_of(TRACED + "tracing: {sampling: 0, zipkin: 'http://z:9411/api/v2/spans'}\n")
    )
    assert not [n for n in off.notes if n.field.startswith("tracing")]


def test_admin_is_on_the_loopback_and_read_through_a_get_only_listener() -> None:
    pb = pod(export_envoy(load_mesh(EXAMPLE)), "backend-v1-0")
    assert pb.bootstrap["admin"]["address"] == proto.socket_address("127.0.0.1", 15000)
    view = listener(pb, "meshdev_admin")
    assert view["address"] == proto.socket_address("0.0.0.0", 15090)
    routes = hcm(view)["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"]["headers"][0]["string_match"]["safe_regex"]["regex"] == "GET|HEAD"
    assert routes[0]["route"]["cluster"] == "meshdev_admin"
    assert routes[1]["direct_response"]["status"] == 405
    upstream = cluster(pb, "meshdev_admin")
    endpoint = upstream["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == proto.socket_address("127.0.0.1", 15000)
    excluded = pb.bootstrap["stats_config"]["stats_matcher"]["exclusion_list"]["patterns"]
    assert {"prefix": "cluster.meshdev_admin."} in excluded


def test_admin_view_moves_off_a_port_an_app_has() -> None:
    mesh = mesh_of(
        "name: m\nservices:\n  a: {image: x, port: 15090}\n  b: {image: y, port: 15091}\n"
    )
    assert admin_view_port(mesh) == 15092
    view = listener(export_envoy(mesh).pods[0], "meshdev_admin")
    assert view["address"]["socket_address"]["port_value"] == 15092


def test_compose_names_make_dns_clusters_and_the_pods_own_app_a_static_one() -> None:
    pb = pod(export_envoy(load_mesh(EXAMPLE)), "frontend-0")
    backend = cluster(pb, "backend.v1")
    assert backend["type"] == "STRICT_DNS"
    assert backend["dns_lookup_family"] == "V4_ONLY"
    hosts = [
        e["endpoint"]["address"]["socket_address"]
        for e in backend["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert hosts == [
        {"address": "backend-v1-0", "port_value": 15006},
        {"address": "backend-v1-1", "port_value": 15006},
    ]
    inbound = cluster(pb, "inbound|8080")
    assert inbound["type"] == "STATIC"
    assert "dns_lookup_family" not in inbound


def test_grpc_clusters_speak_h2c_and_routes_time_calls_as_streams() -> None:
    pb = pod(export_envoy(load_mesh(EXAMPLE)), "frontend-0")
    options = cluster(pb, "greeter")["typed_extension_protocol_options"][proto.UPSTREAM_HTTP]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}
    vhosts = hcm(listener(pb, "outbound"))["route_config"]["virtual_hosts"]
    hello = next(r for v in vhosts if v["name"] == "greeter" for r in v["routes"])
    assert hello["route"]["max_stream_duration"] == {
        "max_stream_duration": "5s",
        "grpc_timeout_header_max": "5s",
    }
    assert hello["route"]["retry_policy"]["retry_on"] == "unavailable"
    backend_route = next(r for v in vhosts if v["name"] == "backend" for r in v["routes"])
    assert "max_stream_duration" not in backend_route["route"]


def test_http_filters_follow_meshdevs_pipeline_and_appear_only_where_used() -> None:
    pb = pod(export_envoy(load_mesh(EXAMPLE)), "frontend-0")
    outbound = hcm(listener(pb, "outbound"))
    assert [f["name"] for f in outbound["http_filters"]] == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    # Requests through HTTP_PROXY carry absolute URLs; WebSockets are upgraded.
    assert outbound["http_protocol_options"] == {"allow_absolute_url": True}
    assert outbound["upgrade_configs"] == [{"upgrade_type": "websocket"}]
    inbound = hcm(listener(pb, "inbound"))
    assert [f["name"] for f in inbound["http_filters"]] == ["envoy.filters.http.router"]


def test_token_buckets_refill_at_least_every_50ms() -> None:
    bucket, effective = token_bucket(sc.RateLimit(requests_per_second=200, burst=50))
    assert bucket == {"max_tokens": 50, "tokens_per_fill": 10, "fill_interval": "0.05s"}
    assert effective == 200
    bucket, _ = token_bucket(sc.RateLimit(requests_per_second=0.5, burst=1))
    assert bucket == {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "2s"}
    # 1000/s in steps of 50 ms is 50 tokens a step, more than a bucket of 5 holds.
    _, effective = token_bucket(sc.RateLimit(requests_per_second=1000, burst=5))
    assert effective == pytest.approx(100)


def test_a_bucket_too_small_for_its_rate_is_noted() -> None:
    mesh = mesh_of(
        "name: m\nservices: {a: {image: x}}\nroutes:\n  a:\n    - name: fast\n"
        "      rate_limit: {requests_per_second: 1000, burst: 5}\n"
    )
    notes = {n.field: n.message for n in export_envoy(mesh).notes}
    assert "at most 100 requests/s" in notes["routes.a[fast].rate_limit"]


def test_include_attempt_count_is_the_virtual_hosts_and_the_gateways_is_noted() -> None:
    mesh = mesh_of(
        "name: m\nservices: {a: {image: x}, b: {image: x}}\n"
        "ingress: {routes: [{match: {prefix: /a}, to: a}, {to: b}]}\n"
        "policies: {a: {include_attempt_count: true}}\n"
    )
    export = export_envoy(mesh)
    for pb in export.pods:
        assert violations(parse(pb.bootstrap)) == [], pb.pod.name
    vhosts = hcm(listener(pod(export, "b-0"), "outbound"))["route_config"]["virtual_hosts"]
    flags = {v["name"]: v.get("include_attempt_count_in_response", False) for v in vhosts}
    assert flags == {"a": True, "b": False}
    [gateway] = hcm(listener(pod(export, "ingress"), "ingress"))["route_config"]["virtual_hosts"]
    assert gateway["include_attempt_count_in_response"] is True
    notes = {n.field: n.message for n in export.notes}
    assert (
        "answers of b carry x-envoy-attempt-count too" in notes["policies.a.include_attempt_count"]
    )


def test_durations_and_percents_in_protos_json() -> None:
    assert proto.duration(0.3) == "0.3s"
    assert proto.duration(15) == "15s"
    assert proto.duration(0.000000001) == "0.000000001s"
    assert proto.fractional_percent(5) == ({"numerator": 5, "denominator": "HUNDRED"}, True)
    assert proto.fractional_percent(12.25) == (
        {"numerator": 1225, "denominator": "TEN_THOUSAND"},
        True,
    )
    assert proto.fractional_percent(0.0001) == ({"numerator": 1, "denominator": "MILLION"}, True)
    assert proto.fractional_percent(1 / 3)[1] is False


def test_regex_that_re2_lacks_is_noted_and_empty_exact_means_any_value() -> None:
    mesh = mesh_of(
        "name: m\nservices: {a: {image: x}}\nroutes:\n  a:\n    - name: look\n"
        "      match: {regex: '/(?!admin).*', headers: {x-any: {exact: ''}}}\n"
    )
    export = export_envoy(mesh)
    assert any(n.field == "routes.a[look].match.regex" for n in export.notes)
    route = hcm(listener(export.pods[0], "outbound"))["route_config"]["virtual_hosts"][0]
    assert route["routes"][0]["match"]["headers"] == [{"name": "x-any", "present_match": True}]


SECURED = """
name: m
services:
  web: {image: x, port: 8080}
  api: {image: y, port: 9090}
security: {mtls: PERMISSIVE}
policies:
  api: {mtls: STRICT}
authorization:
  api:
    - {name: no-delete, action: DENY, to: {methods: [DELETE]}}
    - {name: web-reads, action: ALLOW, from: {services: [web]}, to: {paths: ["/items*"]}}
"""


def test_mutual_tls_chains_by_mode_and_certificates_as_files() -> None:
    export = export_envoy(mesh_of(SECURED))
    api = listener(pod(export, "api-0"), "inbound")
    assert len(api["filter_chains"]) == 1
    tls = api["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    web = listener(pod(export, "web-0"), "inbound")
    assert [c["filter_chain_match"]["transport_protocol"] for c in web["filter_chains"]] == [
        "tls",
        "raw_buffer",
    ]
    assert web["listener_filters"][0]["name"] == "envoy.filters.listener.tls_inspector"
    upstream = cluster(pod(export, "web-0"), "api")["transport_socket"]["typed_config"]
    sans = upstream["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/m/sa/api"}}]
    assert any(n.field == "security" for n in export.notes)
    for pb in export.pods:
        assert violations(parse(pb.bootstrap)) == []


def test_authorization_is_istios_two_rbac_filters() -> None:
    export = export_envoy(mesh_of(SECURED))
    inbound = hcm(listener(pod(export, "api-0"), "inbound"))
    names = [f["name"] for f in inbound["http_filters"]]
    assert names == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
    ]
    deny, allow = (f["typed_config"]["rules"] for f in inbound["http_filters"][:2])
    assert deny["action"] == "DENY"
    assert deny["policies"]["no-delete"]["permissions"] == [
        {"header": {"name": ":method", "string_match": {"exact": "DELETE"}}}
    ]
    assert allow["action"] == "ALLOW"
    web_reads = allow["policies"]["web-reads"]
    assert web_reads["principals"] == [
        {"authenticated": {"principal_name": {"exact": "spiffe://cluster.local/ns/m/sa/web"}}}
    ]
    assert web_reads["permissions"] == [{"url_path": {"path": {"prefix": "/items"}}}]
    assert inbound["normalize_path"] is True
