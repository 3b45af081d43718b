"""`import istio` on Istio's own bookinfo samples (tests/fixtures/istio, see NOTICE): the
mesh.yaml must load with meshdev's loader, say what the samples say, and list what it cannot
by document and path."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshdev.bridges.kube.importer import Imported, ImportFailed, import_istio
from meshdev.config import load_mesh
from meshdev.config.model import HeaderMatch, Route

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "istio"
BOOKINFO = ("bookinfo.yaml", "bookinfo-gateway.yaml", "destination-rule-all.yaml")


def imported(*names: str, **options: str) -> Imported:
    return import_istio([(n, (FIXTURES / n).read_text(encoding="utf-8")) for n in names], **options)


def notes(result: Imported) -> list[str]:
    return [str(n) for n in result.notes]


def test_bookinfo_becomes_a_mesh_meshdevs_loader_takes(tmp_path: Path) -> None:
    result = imported(*BOOKINFO, "virtual-service-all-v1.yaml")
    written = tmp_path / "mesh.yaml"
    written.write_text(result.text, encoding="utf-8")
    mesh = load_mesh(written)
    assert mesh == result.mesh
    assert mesh.name == "default"  # the namespace: principals stay cluster.local/ns/default
    assert sorted(mesh.services) == ["details", "productpage", "ratings", "reviews"]
    reviews = mesh.services["reviews"]
    assert reviews.port == 9080
    assert reviews.protocol == "http"
    assert sorted(reviews.versions) == ["v1", "v2", "v3"]
    assert reviews.versions["v3"].image is not None
    assert reviews.versions["v3"].image.endswith("examples-bookinfo-reviews-v3:1.20.3")
    assert dict(reviews.env) == {"LOG_DIR": "/tmp/logs"}
    assert all(v.replicas == 1 for v in reviews.versions.values())
    for name in ("details", "productpage", "ratings", "reviews"):
        (route,) = mesh.routes[name]
        assert route.to == f"{name}.v1"
        # Istio's default: no timeout, which is meshdev's 0s.
        assert route.timeout == 0


def test_the_gateway_becomes_the_ingress() -> None:
    mesh = imported(*BOOKINFO).mesh
    assert mesh.ingress is not None
    assert mesh.ingress.port == 8080
    matches = [(r.match.path, r.match.prefix, r.to) for r in mesh.ingress.routes]
    assert matches == [
        ("/productpage", None, "productpage"),
        (None, "/static", "productpage"),
        ("/login", None, "productpage"),
        ("/logout", None, "productpage"),
        (None, "/api/v1/products", "productpage"),
    ]


def test_the_end_user_jason_header_match_comes_through() -> None:
    mesh = imported(*BOOKINFO, "virtual-service-reviews-test-v2.yaml").mesh
    jason, rest = mesh.routes["reviews"]
    assert dict(jason.match.headers) == {"end-user": HeaderMatch(exact="jason")}
    assert jason.to == "reviews.v2"
    assert rest.match.headers == {}
    assert rest.to == "reviews.v1"


def test_the_seven_second_delay_for_jason_comes_through() -> None:
    mesh = imported(*BOOKINFO, "virtual-service-ratings-test-delay.yaml").mesh
    delayed, rest = mesh.routes["ratings"]
    assert dict(delayed.match.headers) == {"end-user": HeaderMatch(exact="jason")}
    assert delayed.fault is not None and delayed.fault.delay is not None
    assert delayed.fault.delay.fixed == 7.0
    assert delayed.fault.delay.percent == 100.0
    assert delayed.fault.abort is None
    assert rest.fault is None


def test_aborts_come_through() -> None:
    mesh = imported(*BOOKINFO, "virtual-service-ratings-test-abort.yaml").mesh
    aborted = mesh.routes["ratings"][0]
    assert aborted.fault is not None and aborted.fault.abort is not None
    assert (aborted.fault.abort.status, aborted.fault.abort.percent) == (500, 100.0)
    # This sample brings its own DestinationRule for details.
    details = imported("bookinfo.yaml", "fault-injection-details-v1.yaml").mesh
    assert details.routes["details"][0].fault is not None
    assert details.routes["details"][0].fault.abort is not None
    assert details.routes["details"][0].fault.abort.status == 555


@pytest.mark.parametrize(
    ("sample", "weights"),
    [
        ("virtual-service-reviews-90-10.yaml", {"reviews.v1": 90, "reviews.v2": 10}),
        ("virtual-service-reviews-50-v3.yaml", {"reviews.v1": 50, "reviews.v3": 50}),
        ("virtual-service-reviews-v2-v3.yaml", {"reviews.v2": 50, "reviews.v3": 50}),
    ],
)
def test_traffic_splits_come_through(sample: str, weights: dict[str, int]) -> None:
    (route,) = imported(*BOOKINFO, sample).mesh.routes["reviews"]
    assert route.to is not None and not isinstance(route.to, str)
    assert dict(route.to) == weights
    assert list(route.to) == list(weights)  # in the sample's order


def test_what_mesh_yaml_cannot_say_is_listed_by_document_and_path() -> None:
    result = imported(*BOOKINFO, "virtual-service-reviews-test-v2.yaml")
    listed = notes(result)
    reviews_v1 = "bookinfo.yaml#9 Deployment/reviews-v1"
    assert f"{reviews_v1} spec.template.spec.volumes: mesh.yaml has no such field" in listed
    assert (
        f"{reviews_v1} spec.template.spec.containers[0].volumeMounts: mesh.yaml has no such field"
    ) in listed
    assert any("Deployment/productpage-v1 spec.template.metadata.annotations" in n for n in listed)
    # Subsets no Deployment runs.
    assert any(
        n.startswith("destination-rule-all.yaml#3 DestinationRule/ratings spec.subsets[1].name")
        for n in listed
    )
    # Istio's default retries, which a mesh file without retries does not have.
    assert any(
        "VirtualService/reviews spec.http: routes [0, 1] give no retries" in n for n in listed
    )
    # Nothing the mesh file does say is listed: the header match, the destinations.
    assert not any("VirtualService/reviews spec.http[0]" in n for n in listed)
    assert not any(".image:" in n or "replicas" in n for n in listed)
    # Listed atop the written file, too.
    for note in listed:
        assert f"#   {note}\n" in result.text


def test_destination_rule_tls_is_listed_not_lost() -> None:
    listed = notes(imported("bookinfo.yaml", "destination-rule-all-mtls.yaml"))
    assert any(
        "DestinationRule/reviews spec.trafficPolicy.tls: meshdev's callers" in n for n in listed
    )


def test_security_policies_come_through() -> None:
    result = imported(*BOOKINFO, "security.yaml")
    mesh = result.mesh
    assert mesh.security is not None and mesh.security.mtls == "STRICT"
    assert mesh.policies["ratings"].mtls == "PERMISSIVE"
    (viewer,) = mesh.authorization["productpage"]
    assert viewer.name == "viewer"
    assert viewer.from_ is not None and viewer.from_.services == ("ingress",)
    assert viewer.to is not None and viewer.to.methods == ("GET",)
    (reviews,) = mesh.authorization["reviews"]
    # bookinfo-productpage is productpage's pods' service account.
    assert reviews.from_ is not None and reviews.from_.services == ("productpage",)
    assert reviews.to is not None and reviews.to.paths == ("/reviews/*",)
    # The DENY's first rule comes through; its second (by namespace) cannot, nor `when`.
    (deny,) = mesh.authorization["ratings"]
    assert (deny.action, deny.to.methods if deny.to else None) == ("DENY", ("DELETE",))
    # details' only ALLOW rule has a `when`: left out, but details must keep refusing what
    # no rule allows (without any ALLOW policy it would take every request, where Istio
    # refuses all but productpage's with version: v1): an ALLOW that matches nothing.
    (nothing,) = mesh.authorization["details"]
    assert nothing.action == "ALLOW" and nothing.from_ is None
    assert nothing.to is not None and nothing.to.not_paths == ("*",)
    listed = notes(result)
    assert any(
        "details-viewer spec.rules: every rule is left out: kept as an ALLOW no request "
        "matches, so details refuses what these rules allow too (Istio allows it)" in n
        for n in listed
    )
    assert any("ratings-deny-delete spec.rules[1].from[0].source.namespaces" in n for n in listed)
    assert any("details-viewer spec.rules[0].when" in n for n in listed)


def test_without_peer_authentication_istios_default_is_said() -> None:
    result = imported(*BOOKINFO)
    assert result.mesh.security is not None
    assert result.mesh.security.mtls == "PERMISSIVE"
    assert any("no PeerAuthentication" in n for n in notes(result))


def test_a_rate_limit_on_a_services_inbound_is_listed() -> None:
    result = imported("bookinfo.yaml", "local-rate-limit-service.yaml")
    assert all(r.rate_limit is None for rs in result.mesh.routes.values() for r in rs)
    assert any(
        "EnvoyFilter/filter-local-ratelimit-svc spec.configPatches[1]: not a per-route" in n
        for n in notes(result)
    )


def test_foreign_kinds_and_namespaces_are_listed() -> None:
    extra = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: elsewhere, namespace: other}
spec: {template: {metadata: {labels: {app: x}}}}
"""
    bookinfo = (FIXTURES / "bookinfo.yaml").read_text(encoding="utf-8")
    result = import_istio([("bookinfo.yaml", bookinfo), ("extra.yaml", extra)])
    listed = notes(result)
    assert "extra.yaml#1 ConfigMap/settings: mesh.yaml has no place for a ConfigMap" in listed
    assert "extra.yaml#2 Deployment/elsewhere: in namespace other, not default: left out" in listed
    assert "x" not in result.mesh.services


def test_name_and_namespace_options() -> None:
    assert imported(*BOOKINFO, name="books").mesh.name == "books"
    # Documents that name no namespace are the given one's (as kubectl applies them).
    assert imported(*BOOKINFO, namespace="shop").mesh.name == "shop"
    with pytest.raises(ImportFailed, match="no workload"):
        import_istio([("c.yaml", "kind: ConfigMap\nmetadata: {name: c}\n")])


def test_a_route_that_goes_nowhere_meshdev_runs_is_listed() -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v2}
  - route:
    - destination: {host: ratings.default.svc.cluster.local, subset: v1}
      headers: {request: {set: {x-a: b}}}
"""
    texts = [(n, (FIXTURES / n).read_text(encoding="utf-8")) for n in BOOKINFO]
    result = import_istio([*texts, ("vs.yaml", vs)])
    (route,) = result.mesh.routes["ratings"]
    assert route == Route.model_validate({"to": "ratings.v1", "timeout": "0s"})
    listed = notes(result)
    assert any(
        "vs.yaml#1 VirtualService/ratings spec.http[0].route[0]: subset v2" in n for n in listed
    )
    assert any(
        n.startswith("vs.yaml#1 VirtualService/ratings spec.http[0]: routes to nothing")
        for n in listed
    )
    headers = "vs.yaml#1 VirtualService/ratings spec.http[1].route[0].headers"
    assert f"{headers}: mesh.yaml has no such field" in listed


SIDECARS = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress:
    - hosts: [./reviews.default.svc.cluster.local, default/details, istio-system/*, ./nosuch]
      port: {number: 9080, protocol: HTTP, name: http}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: ratings}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: ["~/*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: ["./*", "istio-system/*"]}]
"""


def test_sidecars_become_calls_and_what_they_cannot_say_is_listed() -> None:
    bookinfo = (FIXTURES / "bookinfo.yaml").read_text(encoding="utf-8")
    result = import_istio([("bookinfo.yaml", bookinfo), ("sidecars.yaml", SIDECARS)])
    calls = {name: svc.calls for name, svc in result.mesh.services.items()}
    assert calls == {
        "details": None,
        "productpage": ("reviews", "details"),
        "ratings": (),  # `~/*`: no service at all
        "reviews": None,  # every service of its namespace: meshdev's default
    }
    listed = notes(result)
    for expected in (
        "sidecars.yaml#1 Sidecar/productpage spec.egress[0].hosts[2]: names no service of "
        "these files: left out",
        "sidecars.yaml#1 Sidecar/productpage spec.egress[0].hosts[3]: names no service of "
        "these files: left out",
        "sidecars.yaml#1 Sidecar/productpage spec.egress[0].port: mesh.yaml has no such field",
        "sidecars.yaml#4 Sidecar/default spec.workloadSelector: selects no one service of "
        "these files (meshdev's calls: is per service): left out",
    ):
        assert expected in listed, listed


def test_a_liveness_probe_is_a_liveness_path_and_other_timings_are_said() -> None:
    text = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: a}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec:
      containers:
      - name: a
        image: x
        ports: [{containerPort: 8080}]
        livenessProbe: {httpGet: {path: /alive, port: 8080}, periodSeconds: 10}
"""
    result = import_istio([("a.yaml", text)])
    assert result.mesh.services["a"].liveness_path == "/alive"
    assert [str(n) for n in result.notes if "livenessProbe" in str(n)] == [
        "a.yaml#1 Deployment/a spec.template.spec.containers[0].livenessProbe.periodSeconds: "
        "meshdev asks every 2s, allows 2s, and restarts after 3 failures in a row"
    ]


UNMATCHABLE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {exact: "/ratings?x=1"}, method: {exact: FETCH}}]
    route: [{destination: {host: ratings, subset: v1}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-reads}
spec:
  selector: {matchLabels: {app: ratings}}
  rules:
  - to: [{operation: {methods: [GET, FETCH]}}]
  - to: [{operation: {paths: ["/ratings?x=1"]}}]
  - to: [{operation: {methods: [GET]}}]
"""


def test_a_method_or_a_path_no_request_can_have_is_listed_not_imported() -> None:
    # Istio takes them, meshdev's validation does not: the import leaves them out and says so
    # instead of writing a mesh.yaml that does not validate.
    texts = [(n, (FIXTURES / n).read_text(encoding="utf-8")) for n in BOOKINFO]
    result = import_istio([*texts, ("odd.yaml", UNMATCHABLE)])
    (route,) = result.mesh.routes["ratings"]
    assert route.match.path is None and route.match.method is None
    (policy,) = result.mesh.authorization["ratings"]
    assert policy.to is not None and policy.to.methods == ("GET",)
    listed = notes(result)
    vs = "odd.yaml#1 VirtualService/ratings spec.http[0].match[0]"
    uri = f"{vs}.uri: an exact path is compared without the query string"
    assert any(n.startswith(uri) for n in listed), listed
    assert any(
        n.startswith(f"{vs}.method: unknown method 'FETCH' (did you mean 'PATCH'?)") for n in listed
    ), listed
    ap = "odd.yaml#2 AuthorizationPolicy/ratings-reads spec.rules"
    assert any(n.startswith(f"{ap}[0].to[0].operation.methods: 'FETCH'") for n in listed), listed
    assert any(n.startswith(f"{ap}[1].to[0].operation.paths: '/ratings?x=1'") for n in listed)
