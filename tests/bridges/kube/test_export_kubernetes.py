"""`export kubernetes`: what the example mesh and richer ones become, checked against
Kubernetes' and Istio's real schemas (strict) and against what meshdev means."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest

from meshdev.bridges.kube.conventions import parse_istio_duration
from meshdev.bridges.kube.export import Export, ExportError, export_mesh
from meshdev.config import Mesh, load_mesh
from tests.bridges.kube.kube_meshes import RICH, mesh_of
from tests.bridges.kube.strict_schemas import (
    all_documents,
    errors,
    is_istio,
    local_rate_limit_errors,
    validate_kubernetes,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flask-app" / "mesh.yaml"

Doc = dict[str, Any]


def find(result: Export, kind: str, name: str) -> Doc:
    found = [
        d
        for d in all_documents(result.documents)
        if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def example() -> Export:
    return export_mesh(
        load_mesh(EXAMPLE),
        image_prefix="registry.local/",
        mesh_dir="examples/flask-app",
        out_dir="k8s",
    )


@pytest.fixture(scope="module")
def rich() -> Export:
    return export_mesh(mesh_of(RICH), namespace="shop-prod")


# -- the real schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["example", "rich"])
def test_every_exported_object_passes_its_real_schema_strictly(
    which: str, request: pytest.FixtureRequest
) -> None:
    result: Export = request.getfixturevalue(which)
    kinds = set()
    for doc in all_documents(result.documents):
        kinds.add(doc["kind"])
        assert errors(doc) == []
        if not is_istio(doc):
            validate_kubernetes(doc)  # kubernetes-validate's own entry point, strict
    assert {"Namespace", "Deployment", "Service", "ServiceAccount"} <= kinds
    assert {"VirtualService", "DestinationRule", "Gateway", "EnvoyFilter"} <= kinds
    assert "PeerAuthentication" in kinds


def test_the_rich_mesh_exports_authorization_and_every_kind(rich: Export) -> None:
    kinds = {d["kind"] for d in all_documents(rich.documents)}
    assert "AuthorizationPolicy" in kinds


def test_the_strict_istio_check_rejects_what_istio_would(example: Export) -> None:
    vs = find(example, "VirtualService", "backend")
    for path, value, expected in (
        (("timeout",), "1500us", "finer than a millisecond"),
        (("timeout",), "0s", "under 1ms"),
        (("timeout",), "2 seconds", "not a Go duration"),
        (("timeot",), "2s", "'timeot' was unexpected"),
    ):
        bad = copy.deepcopy(vs)
        bad["spec"]["http"][0][path[0]] = value
        assert any(expected in e for e in errors(bad)), (path, value)
    bad = copy.deepcopy(find(example, "DestinationRule", "backend"))
    bad["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["idleTimeout"] = "0.5ms"
    assert errors(bad)
    bad["spec"]["trafficPolicy"]["connectionPool"]["tcp"]["idleTimeout"] = "0s"
    assert errors(bad) == []


def test_the_strict_kubernetes_check_rejects_unknown_fields(example: Export) -> None:
    bad = copy.deepcopy(find(example, "Deployment", "backend-v1"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("readinesProbe" in e for e in errors(bad))


# -- workloads ----------------------------------------------------------------------------


def test_the_namespace_asks_istio_for_sidecars(example: Export) -> None:
    ns = find(example, "Namespace", "demo")
    assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
    assert example.namespace == "demo"
    assert all(
        d["metadata"].get("namespace") == "demo"
        for d in all_documents(example.documents)
        if d["kind"] != "Namespace"
    )


def test_a_deployment_per_subset_with_labels_replicas_env_command_probe(example: Export) -> None:
    v1 = find(example, "Deployment", "backend-v1")
    assert v1["spec"]["replicas"] == 2
    labels = {"app": "backend", "version": "v1"}
    assert v1["spec"]["selector"]["matchLabels"] == labels
    assert v1["spec"]["template"]["metadata"]["labels"] == labels
    pod = v1["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "backend"
    (container,) = pod["containers"]
    assert container["image"] == "registry.local/demo-backend:latest"
    assert container["args"] == ["sh", "-c", "python app.py"]
    assert container["ports"] == [{"containerPort": 8080}]
    assert container["readinessProbe"] == {"httpGet": {"path": "/healthz", "port": 8080}}
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {
        "SERVICE": "backend",
        "VERSION": "v1",
        "HOST": "0.0.0.0",
        "PORT": "8080",
        "POD": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    assert find(example, "Deployment", "backend-v2")["spec"]["replicas"] == 1
    frontend = find(example, "Deployment", "frontend")
    assert "version" not in frontend["spec"]["template"]["metadata"]["labels"]
    (fc,) = frontend["spec"]["template"]["spec"]["containers"]
    assert {"name": "UPSTREAM", "value": "http://backend"} in fc["env"]
    # A gRPC app without health_path is ready when its port accepts, as in meshdev.
    (gc,) = find(example, "Deployment", "greeter")["spec"]["template"]["spec"]["containers"]
    assert gc["readinessProbe"] == {"tcpSocket": {"port": 50051}}
    assert find(example, "Deployment", "greeter")["spec"]["replicas"] == 2


def test_service_ports_are_named_by_protocol_as_istio_wants(example: Export, rich: Export) -> None:
    assert find(example, "Service", "backend")["spec"]["ports"] == [
        {"name": "http-80", "port": 80, "targetPort": 8080},
        {"name": "http-8080", "port": 8080, "targetPort": 8080},
    ]
    assert [p["name"] for p in find(example, "Service", "greeter")["spec"]["ports"]] == [
        "grpc-80",
        "grpc-50051",
    ]
    assert find(rich, "Service", "db")["spec"]["ports"] == [
        {"name": "tcp-5432", "port": 5432, "targetPort": 5432}
    ]
    assert find(rich, "Service", "api")["spec"]["ports"][0]["name"] == "http2-80"
    for name in ("backend", "frontend", "greeter"):
        assert find(example, "ServiceAccount", name)["metadata"]["namespace"] == "demo"


def test_images_built_named_or_kept(rich: Export) -> None:
    def image(name: str) -> str:
        return str(
            find(rich, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["image"]
        )

    assert image("web") == "ghcr.io/acme/web:1.2"
    assert image("api-v1") == "shop-api:latest"
    # A version with its own build folder gets its own image.
    assert image("api-v2") == "shop-api-v2:latest"
    assert rich.builds == {"shop-api:latest": "./api", "shop-api-v2:latest": "./api-next"}
    annotations = find(rich, "Deployment", "api-v2")["metadata"]["annotations"]
    assert annotations["meshdev.dev/build"] == "./api-next"


def test_excluded_ports_and_tcp_services_env(rich: Export) -> None:
    web = find(rich, "Deployment", "web")["spec"]["template"]
    assert web["metadata"]["annotations"] == {
        "traffic.sidecar.istio.io/excludeInboundPorts": "3306,9090",
        "traffic.sidecar.istio.io/excludeOutboundPorts": "3306,9090",
    }
    env = {e["name"]: e.get("value") for e in web["spec"]["containers"][0]["env"]}
    assert env["DB_SERVICE_HOST"] == "db"
    assert env["DB_SERVICE_PORT"] == "5432"
    assert env["MODE"] == "prod"


# -- traffic ------------------------------------------------------------------------------


def test_routes_become_a_virtual_service(example: Export) -> None:
    vs = find(example, "VirtualService", "backend")
    assert vs["spec"]["hosts"] == ["backend"]
    canary, items, default = vs["spec"]["http"]
    assert canary["name"] == "canary"
    assert canary["match"] == [
        {"uri": {"prefix": "/items"}, "headers": {"x-canary": {"exact": "1"}}}
    ]
    assert canary["route"] == [
        {"destination": {"host": "backend", "subset": "v1"}, "weight": 50},
        {"destination": {"host": "backend", "subset": "v2"}, "weight": 50},
    ]
    assert canary["timeout"] == "2s"
    assert canary["fault"] == {
        "delay": {"percentage": {"value": 10.0}, "fixedDelay": "300ms"},
        "abort": {"percentage": {"value": 5.0}, "httpStatus": 503},
    }
    # No retries in meshdev means none: Istio's default would retry twice.
    assert canary["retries"] == {"attempts": 0}
    assert items["retries"] == {
        "attempts": 2,
        "retryOn": "5xx,reset,connect-failure",
        "perTryTimeout": "500ms",
    }
    assert [r["weight"] for r in items["route"]] == [90, 10]
    assert default["route"] == [{"destination": {"host": "backend"}}]
    assert default["timeout"] == "15s"  # Envoy's default, which Istio does not apply
    # A destination without routes still gets meshdev's implicit one.
    (implicit,) = find(example, "VirtualService", "frontend")["spec"]["http"]
    assert implicit == {
        "name": "default",
        "route": [{"destination": {"host": "frontend"}}],
        "timeout": "15s",
        "retries": {"attempts": 0},
    }


def test_matches_headers_methods_grpc_abort_and_no_timeout(rich: Export) -> None:
    beta, rest = find(rich, "VirtualService", "api")["spec"]["http"]
    assert beta["match"] == [
        {"uri": {"prefix": "/api/v2"}, "headers": {"x-beta": {}}, "withoutHeaders": {"x-old": {}}}
    ]
    assert beta["fault"] == {"abort": {"percentage": {"value": 1.5}, "grpcStatus": "UNAVAILABLE"}}
    assert beta["retries"]["retryOn"] == "unavailable,retriable-status-codes,409"
    assert "timeout" not in rest  # meshdev's 0s: no timeout, Istio's default


def test_destination_rule_subsets_and_policy(example: Export, rich: Export) -> None:
    dr = find(example, "DestinationRule", "backend")["spec"]
    assert dr["host"] == "backend"
    assert dr["subsets"] == [
        {"name": "v1", "labels": {"version": "v1"}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]
    assert dr["trafficPolicy"] == {
        "loadBalancer": {"simple": "LEAST_REQUEST"},
        "connectionPool": {
            "tcp": {"maxConnections": 50, "connectTimeout": "1s"},
            "http": {"http1MaxPendingRequests": 5, "http2MaxRequests": 20, "maxRetries": 3},
        },
        "outlierDetection": {
            "consecutive5xxErrors": 5,
            "interval": "2s",
            "baseEjectionTime": "10s",
            "maxEjectionPercent": 50,
        },
    }
    # Without a policy, meshdev's (Envoy's) defaults, which differ from Istio's.
    greeter = find(example, "DestinationRule", "greeter")["spec"]["trafficPolicy"]
    assert greeter["loadBalancer"] == {"simple": "ROUND_ROBIN"}
    assert greeter["connectionPool"]["http"]["http1MaxPendingRequests"] == 1024
    api = find(rich, "DestinationRule", "api")["spec"]["trafficPolicy"]
    assert api["loadBalancer"] == {"consistentHash": {"httpHeaderName": "x-user"}}
    db = find(rich, "DestinationRule", "db")["spec"]["trafficPolicy"]
    assert db["loadBalancer"] == {"consistentHash": {"useSourceIp": True}}
    assert db["connectionPool"]["tcp"]["idleTimeout"] == "0s"
    tcp_vs = find(rich, "VirtualService", "db")["spec"]
    assert tcp_vs == {
        "hosts": ["db"],
        "tcp": [
            {
                "route": [
                    {"destination": {"host": "db", "subset": "a"}, "weight": 3},
                    {"destination": {"host": "db", "subset": "b"}, "weight": 1},
                ]
            }
        ],
    }


def test_ingress_is_a_gateway_and_a_virtual_service_bound_to_it(example: Export) -> None:
    gw = find(example, "Gateway", "ingress")["spec"]
    assert gw["selector"] == {"istio": "ingressgateway"}
    assert gw["servers"] == [
        {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}
    ]
    vs = find(example, "VirtualService", "ingress")["spec"]
    assert vs["gateways"] == ["ingress"]
    assert vs["hosts"] == ["*"]
    # meshdev's gateway applies the chosen service's routes: they are folded in.
    assert [r["name"] for r in vs["http"]] == ["grpc.hello", "grpc.default", "web"]
    hello = vs["http"][0]
    assert hello["match"] == [{"uri": {"prefix": "/greeter.Greeter/"}}]
    assert hello["route"] == [{"destination": {"host": "greeter", "port": {"number": 80}}}]
    assert hello["retries"] == {"attempts": 2, "retryOn": "unavailable", "perTryTimeout": "1s"}


def test_folded_ingress_matches_join_both_conditions(rich: Export) -> None:
    http = find(rich, "VirtualService", "ingress")["spec"]["http"]
    beta = next(r for r in http if r["name"] == "api.beta")
    # /api (GET or POST) and /api/v2 with its headers: both at once, per method.
    assert beta["match"] == [
        {
            "uri": {"prefix": "/api/v2"},
            "headers": {"x-beta": {}},
            "withoutHeaders": {"x-old": {}},
            "method": {"exact": method},
        }
        for method in ("GET", "POST")
    ]
    assert next(r for r in http if r["name"] == "api.rest")["match"][0]["uri"] == {"prefix": "/api"}


def test_an_ingress_match_istio_cannot_join_is_said() -> None:
    mesh = mesh_of(
        """
        name: m
        services: {a: {image: a, port: 8080}}
        ingress: {routes: [{match: {regex: "/a.*"}, to: a}]}
        routes: {a: [{match: {prefix: /x}, timeout: 1s}]}
        """
    )
    result = export_mesh(mesh)
    (route,) = find(result, "VirtualService", "ingress")["spec"]["http"]
    assert route["match"] == [{"uri": {"regex": "/a.*"}}]
    assert sorted(g.field for g in result.gaps) == ["ingress.port", "ingress.routes[0]"]


def test_local_rate_limits_are_an_envoy_filter_on_named_routes(
    example: Export, rich: Export
) -> None:
    ef = find(example, "EnvoyFilter", "local-ratelimit")
    patches = ef["spec"]["configPatches"]
    assert [p["applyTo"] for p in patches] == ["HTTP_FILTER", "HTTP_ROUTE", "HTTP_ROUTE"]
    assert patches[0]["patch"]["value"]["name"] == "envoy.filters.http.local_ratelimit"
    vhosts = [p["match"]["routeConfiguration"]["vhost"] for p in patches[1:]]
    assert vhosts == [
        {"name": "backend.demo.svc.cluster.local:80", "route": {"name": "items"}},
        {"name": "backend.demo.svc.cluster.local:8080", "route": {"name": "items"}},
    ]
    config = patches[1]["patch"]["value"]["typed_per_filter_config"]
    bucket = config["envoy.filters.http.local_ratelimit"]["token_bucket"]
    # 200/s with a burst of 50: 10 tokens every 50 ms (Envoy's shortest refill), so the
    # bucket, capped at 50, still lets 200 a second through.
    assert bucket == {"max_tokens": 50, "tokens_per_fill": 10, "fill_interval": "0.05s"}
    # Half a request a second: one token every two seconds, and the plan's burst of 1.
    rich_ef = find(rich, "EnvoyFilter", "local-ratelimit")["spec"]["configPatches"][1]
    rich_bucket = rich_ef["patch"]["value"]["typed_per_filter_config"][
        "envoy.filters.http.local_ratelimit"
    ]["token_bucket"]
    assert rich_bucket == {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "2s"}
    # The gateway's folded route is limited on the gateway, in Istio's namespace.
    gateway = find(rich, "EnvoyFilter", "shop-prod-local-ratelimit")
    assert gateway["metadata"]["namespace"] == "istio-system"
    assert gateway["spec"]["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
    routes = [p["match"].get("routeConfiguration") for p in gateway["spec"]["configPatches"]]
    assert routes[1] == {"portNumber": 8080, "vhost": {"route": {"name": "api.beta"}}}


def _envoy_allows(bucket: dict[str, Any], seconds: int) -> int:
    """Requests Envoy's stepped bucket lets through in `seconds` of a flood: full at the
    start, then `tokens_per_fill` added each `fill_interval` but never beyond `max_tokens`."""
    interval = parse_istio_duration(bucket["fill_interval"])
    assert interval is not None
    fills = math.floor(seconds / interval + 1e-9)
    return int(bucket["max_tokens"] + fills * min(bucket["tokens_per_fill"], bucket["max_tokens"]))


@pytest.mark.parametrize(
    ("rps", "burst"), [(200, 50), (1000, 50), (7, 3), (30, 5), (0.5, 1), (2.5, 10)]
)
def test_a_rate_limit_lets_through_its_rate_in_envoy_not_its_burst(rps: float, burst: int) -> None:
    mesh = mesh_of(
        f"""
        name: rl
        services: {{a: {{command: python a.py}}}}
        routes:
          a: [{{name: r, rate_limit: {{requests_per_second: {rps}, burst: {burst}}}}}]
        """
    )
    result = export_mesh(mesh)
    ef = find(result, "EnvoyFilter", "local-ratelimit")
    config = ef["spec"]["configPatches"][1]["patch"]["value"]["typed_per_filter_config"]
    limit = config["envoy.filters.http.local_ratelimit"]
    assert local_rate_limit_errors(limit) == []
    bucket = limit["token_bucket"]
    # Envoy refuses a shorter fill_interval.
    assert (parse_istio_duration(bucket["fill_interval"]) or 0) >= 0.05
    # Over 20 s of a flood, the burst plus 20 s at the rate (to a token), as meshdev allows.
    assert abs(_envoy_allows(bucket, 20) - (burst + 20 * rps)) <= 1


def test_a_rate_limited_answer_says_so_as_meshdev_s_does(example: Export) -> None:
    # meshdev answers 429 with x-envoy-ratelimited: true (README); Envoy's local rate limit
    # adds it only when told, and the EnvoyFilter did not tell it.
    ef = find(example, "EnvoyFilter", "local-ratelimit")
    for patch in ef["spec"]["configPatches"][1:]:
        limit = patch["patch"]["value"]["typed_per_filter_config"][
            "envoy.filters.http.local_ratelimit"
        ]
        assert local_rate_limit_errors(limit) == []
        assert limit["response_headers_to_add"] == [
            {
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "header": {"key": "x-envoy-ratelimited", "value": "true"},
            }
        ]


def test_a_rate_limit_envoy_cannot_refill_in_time_is_said() -> None:
    # 1000/s needs 50 tokens each 50 ms, more than a bucket of 10 holds.
    mesh = mesh_of(
        """
        name: rl
        services: {a: {command: python a.py}}
        routes:
          a: [{name: r, rate_limit: {requests_per_second: 1000, burst: 10}}]
        """
    )
    gaps = {g.field: g.message for g in export_mesh(mesh).gaps}
    assert "at most 200 requests/s, not 1000" in gaps["routes.a[0].rate_limit.burst"]


def test_rate_limit_configs_are_envoys_own_messages(example: Export, rich: Export) -> None:
    """An EnvoyFilter's patch values are opaque to its CRD: Envoy's protos check them."""
    checked = 0
    for result in (example, rich):
        for doc in all_documents(result.documents):
            if doc["kind"] != "EnvoyFilter":
                continue
            for patch in doc["spec"]["configPatches"]:
                value = patch["patch"]["value"]
                configs = [value["typed_config"]] if "typed_config" in value else []
                configs += list(value.get("typed_per_filter_config", {}).values())
                for config in configs:
                    assert local_rate_limit_errors(config) == []
                    checked += 1
    assert checked == 8  # 2 + 1 filters, 3 + 2 routes
    broken = {
        "@type": "type.googleapis.com/"
        + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
    }
    assert local_rate_limit_errors({**broken, "token_bucket": {"max_tokens": 0}})
    assert local_rate_limit_errors({**broken, "stat_prefx": "x"})


# -- security -----------------------------------------------------------------------------


def test_mutual_tls_modes(example: Export, rich: Export) -> None:
    # No security section in meshdev: plaintext, where Istio's default would be PERMISSIVE.
    assert find(example, "PeerAuthentication", "default")["spec"] == {"mtls": {"mode": "DISABLE"}}
    assert find(rich, "PeerAuthentication", "default")["spec"] == {"mtls": {"mode": "STRICT"}}
    assert find(rich, "PeerAuthentication", "api")["spec"] == {
        "selector": {"matchLabels": {"app": "api"}},
        "mtls": {"mode": "PERMISSIVE"},
    }


def test_authorization_policies_name_service_accounts_of_the_namespace(rich: Export) -> None:
    allow = find(rich, "AuthorizationPolicy", "api-from-web")["spec"]
    assert allow == {
        "selector": {"matchLabels": {"app": "api"}},
        "action": "ALLOW",
        "rules": [
            {
                "from": [
                    {
                        "source": {
                            "principals": [
                                "cluster.local/ns/shop-prod/sa/web",
                                "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
                            ]
                        }
                    }
                ],
                "to": [{"operation": {"methods": ["GET"], "paths": ["/api*"]}}],
            }
        ],
    }
    deny = find(rich, "AuthorizationPolicy", "api-no-delete")["spec"]
    assert deny["action"] == "DENY"
    assert deny["rules"] == [{"to": [{"operation": {"methods": ["DELETE"]}}]}]
    only = find(rich, "AuthorizationPolicy", "db-only-api")["spec"]["rules"][0]
    assert only["from"][0]["source"]["principals"] == [
        "cluster.local/ns/shop-prod/sa/api",
        "cluster.local/ns/other/*",
    ]


# -- what cannot be said ------------------------------------------------------------------


def test_the_example_warns_only_of_its_published_port_and_its_calls(example: Export) -> None:
    assert [g.field for g in example.gaps] == ["services.frontend.calls", "ingress.port"]
    assert "ingress.port: meshdev publishes the gateway on 127.0.0.1:8000" in str(example.gaps[1])


def test_knobs_istio_lacks_are_warnings_naming_the_field() -> None:
    mesh = mesh_of(
        """
        name: m
        security: {cert_ttl: 1h}
        services:
          a: {command: python a.py, port: 8080}
          g: {image: g, port: 50051, protocol: grpc}
        routes:
          a:
            - timeout: 2500us
              retries:
                attempts: 1
                retry_on: [retriable-status-codes]
                retriable_status_codes: [599]
              fault: {abort: {percent: 10, status: 500, grpc_status: 8}}
              rate_limit: {requests_per_second: 1234.5678}
          g:
            - fault: {abort: {percent: 10, status: 500, grpc_status: 8}}
        policies:
          a:
            idle_timeout: 30s
            outlier_detection: {max_ejection_percent: 12.5}
            include_attempt_count: true
        """
    )
    result = export_mesh(mesh)
    assert sorted(g.field for g in result.gaps) == [
        "policies.a.idle_timeout",
        "policies.a.include_attempt_count",
        "policies.a.outlier_detection.max_ejection_percent",
        "routes.a[0].fault.abort.grpc_status",
        "routes.a[0].rate_limit.requests_per_second",
        "routes.a[0].retries.retriable_status_codes[0]",
        "routes.a[0].timeout",
        "routes.g[0].fault.abort.status",
        "security.cert_ttl",
        "services.a.command",
    ]
    readme = result.files["README.txt"]
    for gap in result.gaps:
        assert f"  - {gap}" in readme
    (route,) = find(result, "VirtualService", "a")["spec"]["http"]
    assert route["timeout"] == "3ms"
    assert route["fault"]["abort"] == {"percentage": {"value": 10.0}, "httpStatus": 500}
    assert route["retries"]["retryOn"] == "retriable-status-codes"
    (grpc_route,) = find(result, "VirtualService", "g")["spec"]["http"]
    assert grpc_route["fault"]["abort"]["grpcStatus"] == "RESOURCE_EXHAUSTED"
    policy = find(result, "DestinationRule", "a")["spec"]["trafficPolicy"]
    assert "idleTimeout" not in policy["connectionPool"]["tcp"]
    assert policy["outlierDetection"]["maxEjectionPercent"] == 12
    for doc in all_documents(result.documents):
        assert errors(doc) == []


def test_names_kubernetes_cannot_hold_apart_are_refused() -> None:
    mesh = mesh_of(
        """
        name: m
        services:
          a-b: {image: x}
          a: {image: x, versions: {b: {}}}
        """
    )
    with pytest.raises(ExportError, match="Deployment a-b"):
        export_mesh(mesh)
    with pytest.raises(ExportError, match="starts with a letter"):
        export_mesh(mesh_of("name: m\nservices: {1a: {image: x}}\n"))


# -- files --------------------------------------------------------------------------------


def test_readme_says_how_to_build_push_apply_and_reach(example: Export) -> None:
    readme = example.files["README.txt"]
    assert readme.startswith("meshdev export kubernetes: mesh 'demo'")
    assert "cd examples/flask-app" in readme
    # One build of the folder, tagged for each service, as meshdev builds it.
    assert (
        "docker build --build-arg BASE_IMAGE=python:3.12-slim "
        "-t registry.local/demo-backend:latest -t registry.local/demo-frontend:latest "
        "-t registry.local/demo-greeter:latest ."
    ) in readme
    assert "docker push registry.local/demo-greeter:latest" in readme
    assert "kubectl apply -f k8s" in readme
    assert "kubectl -n istio-system port-forward svc/istio-ingressgateway 8000:80" in readme
    for name in example.files:
        assert name in readme


def test_files_per_service_and_the_namespace_first(example: Export) -> None:
    assert sorted(example.files) == [
        "00-namespace.yaml",
        "README.txt",
        "ingress.yaml",
        "ratelimit.yaml",
        "service-backend.yaml",
        "service-frontend.yaml",
        "service-greeter.yaml",
    ]
    kinds = [d["kind"] for d in example.documents["service-backend.yaml"]]
    assert kinds == [
        "ServiceAccount",
        "Service",
        "Deployment",
        "Deployment",
        "DestinationRule",
        "VirtualService",
    ]


def test_output_is_deterministic_whatever_the_mesh_files_order() -> None:
    one = mesh_of(RICH)
    services = dict(reversed(list(one.services.items())))
    two = Mesh.model_validate({**one.model_dump(by_alias=True), "services": services})
    assert export_mesh(one).files == export_mesh(one).files
    assert export_mesh(one).files == export_mesh(two).files


def test_calls_become_a_sidecar_resource_with_its_egress_hosts() -> None:
    mesh = mesh_of(
        "name: m\nservices:\n  a: {image: x, calls: [b]}\n  b: {image: x, calls: []}\n"
        "  c: {image: x}\n"
    )
    result = export_mesh(mesh, namespace="prod")
    a, b = find(result, "Sidecar", "a"), find(result, "Sidecar", "b")
    assert a["spec"] == {
        "workloadSelector": {"labels": {"app": "a"}},
        "egress": [{"hosts": ["./b.prod.svc.cluster.local"]}],
    }
    # Calling nothing: `~` is Istio's namespace of no service.
    assert b["spec"]["egress"] == [{"hosts": ["~/*"]}]
    assert not [
        d
        for d in all_documents(result.documents)
        if d["metadata"]["name"] == "c" and d["kind"] == "Sidecar"
    ]
    for doc in (a, b):
        assert errors(doc) == []
    assert [g.field for g in result.gaps if g.field.endswith(".calls")] == [
        "services.a.calls",
        "services.b.calls",
    ]


# -- tracing ------------------------------------------------------------------------------

TRACED = """
    name: shop
    services:
      web: {command: python app.py}
"""


def test_tracing_to_a_collector_is_a_telemetry_resource_and_its_provider_a_gap() -> None:
    result = export_mesh(
        mesh_of(
            TRACED + "    tracing: {sampling: 10, zipkin: 'http://zipkin.obs:9411/api/v2/spans',"
            " otlp: 'http://otel:4318/v1/traces'}\n"
        )
    )
    doc = find(result, "Telemetry", "tracing")
    assert errors(doc) == []
    assert doc["apiVersion"] == "telemetry.istio.io/v1"
    assert doc["metadata"]["namespace"] == "shop"
    assert doc["spec"] == {
        "tracing": [{"providers": [{"name": "meshdev-zipkin"}], "randomSamplingPercentage": 10.0}]
    }
    assert doc in result.documents["00-namespace.yaml"]
    gaps = {g.field: g.message for g in result.gaps}
    assert (
        "{name: meshdev-zipkin, zipkin: {service: zipkin.obs, port: 9411}}"
        in gaps["tracing.zipkin"]
    )
    assert "one tracing provider" in gaps["tracing.otlp"]


def test_otlp_alone_and_the_ring_alone() -> None:
    otlp = export_mesh(mesh_of(TRACED + "    tracing: {otlp: 'http://otel:4318/v1/traces'}\n"))
    doc = find(otlp, "Telemetry", "tracing")
    assert errors(doc) == []
    assert doc["spec"]["tracing"][0]["providers"] == [{"name": "meshdev-otlp"}]
    gap = next(g for g in otlp.gaps if g.field == "tracing.otlp")
    assert "opentelemetry: {service: otel, port: 4318, http: {path: /v1/traces}}" in gap.message
    # Written without a collector: said; not written (the default): nothing to say or export.
    ring = export_mesh(mesh_of(TRACED + "    tracing: {sampling: 50}\n"))
    plain = export_mesh(mesh_of(TRACED))
    assert [g.field for g in ring.gaps] == ["tracing", *(g.field for g in plain.gaps)]
    assert not [g for g in plain.gaps if g.field.startswith("tracing")]
    assert "Telemetry" not in {d["kind"] for d in all_documents(plain.documents)}


def test_tracing_off_is_a_telemetry_sampling_nothing() -> None:
    # Without a Telemetry, Istio traces the namespace at its mesh config's rate (1 %).
    result = export_mesh(mesh_of(TRACED + "    tracing: {sampling: 0}\n"))
    doc = find(result, "Telemetry", "tracing")
    assert errors(doc) == []
    assert doc["metadata"]["namespace"] == "shop"
    assert doc["spec"] == {"tracing": [{"randomSamplingPercentage": 0.0}]}
    assert doc in result.documents["00-namespace.yaml"]
    # Nothing is sent anywhere, so there is no provider to install.
    assert not [g for g in result.gaps if g.field.startswith("tracing")]
