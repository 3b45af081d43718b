"""The plan for a mesh with security: each pod's identity, its inbound listener's mTLS mode and
authorization, and mutual TLS on every caller's clusters of a destination that takes it
(Istio's auto mTLS); and none of it in a mesh without a security section."""

from __future__ import annotations

from meshdev import plan
from meshdev.common import sidecar_config as sc
from meshdev.config import Mesh, parse_mesh

BASE = """\
name: shop
services:
  web:
    command: python app.py
  api:
    command: python app.py
    versions: {v1: {}, v2: {}}
  ratings:
    command: python server.py
    protocol: grpc
  pg:
    command: postgres
    port: 5432
    protocol: tcp
ingress:
  routes: [{to: web}]
"""


def mesh(extra: str = "") -> Mesh:
    return parse_mesh((BASE + extra).encode(), "mesh.yaml")


def render(m: Mesh, pod: str) -> sc.SidecarConfig:
    pairs = [
        (s, plan.Placement(s.name, f"127.0.7.{i + 1}", f"127.0.7.{i + 1}", f"127.0.7.{i + 1}"))
        for i, s in enumerate(plan.pods(m))
    ]
    spec, where = next((s, p) for s, p in pairs if s.name == pod)
    return plan.render(m, spec, where, pairs, version=1, defaults={})


def inbound(cfg: sc.SidecarConfig) -> sc.Listener:
    (lst,) = [lst for lst in cfg.listeners if lst.kind == "inbound"]
    return lst


def tls_of(cfg: sc.SidecarConfig) -> dict[str, tuple[str, ...] | None]:
    return {c.name: c.tls.spiffe_ids if c.tls else None for c in cfg.clusters}


def sid(service: str) -> tuple[str, ...]:
    return (f"spiffe://cluster.local/ns/shop/sa/{service}",)


PODS = ["ingress", "web-0", "api-v1-0", "api-v2-0", "ratings-0", "pg-0"]


def test_without_a_security_section_no_pod_has_tls() -> None:
    m = mesh()
    assert plan.cert_ttl(m) is None
    for pod in PODS:
        cfg = render(m, pod)
        assert cfg.spiffe_id is None
        assert all(c.tls is None for c in cfg.clusters)
        assert all(lst.mtls == "DISABLE" and not lst.authorization for lst in cfg.listeners)
    assert {plan.mtls_mode(m, s) for s in m.services} == {"DISABLE"}


def test_every_pod_has_its_services_identity_and_the_gateway_is_ingress() -> None:
    m = mesh("security: {}\n")
    assert {pod: render(m, pod).spiffe_id for pod in PODS} == {
        "ingress": "spiffe://cluster.local/ns/shop/sa/ingress",
        "web-0": "spiffe://cluster.local/ns/shop/sa/web",
        "api-v1-0": "spiffe://cluster.local/ns/shop/sa/api",
        "api-v2-0": "spiffe://cluster.local/ns/shop/sa/api",
        "ratings-0": "spiffe://cluster.local/ns/shop/sa/ratings",
        "pg-0": "spiffe://cluster.local/ns/shop/sa/pg",
    }
    specs = {s.name: s for s in plan.pods(m)}
    assert plan.spiffe_id(m, specs["ingress"]) == "spiffe://cluster.local/ns/shop/sa/ingress"
    assert plan.spiffe_id(mesh(), specs["web-0"]) is None


def test_cert_ttl_in_seconds() -> None:
    assert plan.cert_ttl(mesh("security: {}\n")) == 86400.0
    assert plan.cert_ttl(mesh("security: {cert_ttl: 90m}\n")) == 5400.0


def test_strict_mesh_every_destination_is_called_with_mtls() -> None:
    m = mesh("security: {mtls: STRICT}\n")
    expected = {
        "web": sid("web"),
        "api": sid("api"),
        "api.v1": sid("api"),
        "api.v2": sid("api"),
        "ratings": sid("ratings"),
        "pg": sid("pg"),
    }
    # The gateway calls like any other caller.
    assert tls_of(render(m, "ingress")) == expected
    # A pod's own app is reached in the clear inside its pod (the inbound cluster).
    assert tls_of(render(m, "web-0")) == {**expected, "inbound|8080": None}
    assert tls_of(render(m, "pg-0")) == {**expected, "inbound|5432": None}
    for pod in PODS[1:]:
        assert inbound(render(m, pod)).mtls == "STRICT"


def test_permissive_destinations_are_called_with_mtls_too() -> None:
    m = mesh("security: {}\n")
    cfg = render(m, "web-0")
    assert inbound(cfg).mtls == "PERMISSIVE"
    assert tls_of(cfg)["api.v2"] == sid("api")
    assert tls_of(cfg)["pg"] == sid("pg")


def test_a_disabled_mesh_keeps_identities_but_sends_plaintext() -> None:
    m = mesh("security: {mtls: DISABLE}\n")
    cfg = render(m, "api-v1-0")
    assert cfg.spiffe_id == sid("api")[0]
    assert inbound(cfg).mtls == "DISABLE"
    assert set(tls_of(cfg).values()) == {None}


def test_per_service_modes_override_the_mesh_wide_one() -> None:
    m = mesh(
        "security: {mtls: STRICT}\n"
        "policies:\n  api: {mtls: PERMISSIVE}\n  pg: {mtls: DISABLE, idle_timeout: 1m}\n"
    )
    assert (plan.mtls_mode(m, "api"), plan.mtls_mode(m, "pg")) == ("PERMISSIVE", "DISABLE")
    assert plan.mtls_mode(m, "web") == "STRICT"
    assert inbound(render(m, "api-v2-0")).mtls == "PERMISSIVE"
    assert inbound(render(m, "pg-0")).mtls == "DISABLE"
    assert inbound(render(m, "web-0")).mtls == "STRICT"
    tls = tls_of(render(m, "web-0"))
    assert (tls["api"], tls["api.v1"], tls["pg"], tls["web"]) == (
        sid("api"),
        sid("api"),
        None,
        sid("web"),
    )
    # A mesh-wide DISABLE with one service turned on: only that one is called with mTLS.
    on = mesh("security: {mtls: DISABLE}\npolicies:\n  ratings: {mtls: STRICT}\n")
    tls = tls_of(render(on, "ingress"))
    assert {name for name, ids in tls.items() if ids} == {"ratings"}


def test_authorization_becomes_the_services_rbac_policies() -> None:
    m = mesh(
        """\
security: {mtls: STRICT}
authorization:
  api:
    - name: web-reads
      from: {services: [web, ingress], principals: ["cluster.local/ns/shop/sa/rat*"]}
      to: {methods: [GET], paths: ["/items*"]}
    - name: no-admin
      action: DENY
      from: {not_services: [web], not_principals: ["*"]}
      to: {not_methods: [GET, HEAD], not_paths: ["*.json"]}
    - name: ops-only
      action: DENY
      to: {paths: [/admin*]}
    - name: everyone
"""
    )
    for pod in ("api-v1-0", "api-v2-0"):
        assert inbound(render(m, pod)).authorization == (
            sc.AuthzPolicy(
                name="web-reads",
                action="ALLOW",
                rules=(
                    sc.AuthzRule(
                        principals=(
                            "cluster.local/ns/shop/sa/web",
                            "cluster.local/ns/shop/sa/ingress",
                            "cluster.local/ns/shop/sa/rat*",
                        ),
                        methods=("GET",),
                        paths=("/items*",),
                    ),
                ),
            ),
            sc.AuthzPolicy(
                name="no-admin",
                action="DENY",
                rules=(
                    sc.AuthzRule(
                        not_principals=("cluster.local/ns/shop/sa/web", "*"),
                        not_methods=("GET", "HEAD"),
                        not_paths=("*.json",),
                    ),
                ),
            ),
            sc.AuthzPolicy(
                name="ops-only", action="DENY", rules=(sc.AuthzRule(paths=("/admin*",)),)
            ),
            # Neither from nor to: one rule with no field, which matches every request.
            sc.AuthzPolicy(name="everyone", action="ALLOW", rules=(sc.AuthzRule(),)),
        )
    # Other services' inbound hops carry none of them.
    assert inbound(render(m, "web-0")).authorization == ()


def test_method_and_path_policies_render_without_tls() -> None:
    m = mesh("authorization:\n  web:\n    - {name: reads, to: {methods: [GET]}}\n")
    lst = inbound(render(m, "web-0"))
    assert (lst.mtls, lst.authorization) == (
        "DISABLE",
        (sc.AuthzPolicy(name="reads", action="ALLOW", rules=(sc.AuthzRule(methods=("GET",)),)),),
    )


def test_a_tcp_service_is_authorized_by_caller_on_its_tcp_listener() -> None:
    m = mesh("security: {}\nauthorization:\n  pg:\n    - {name: api, from: {services: [api]}}\n")
    lst = inbound(render(m, "pg-0"))
    assert lst.tcp_proxy is not None
    assert lst.authorization == (
        sc.AuthzPolicy(
            name="api",
            action="ALLOW",
            rules=(sc.AuthzRule(principals=("cluster.local/ns/shop/sa/api",)),),
        ),
    )


def test_the_gateway_has_no_inbound_and_so_no_mode_or_policies() -> None:
    m = mesh(
        "security: {mtls: STRICT}\n"
        "authorization:\n  web:\n    - {name: gw, from: {services: [ingress]}}\n"
    )
    cfg = render(m, "ingress")
    assert [(lst.kind, lst.mtls, lst.authorization) for lst in cfg.listeners] == [
        ("ingress", "DISABLE", ())
    ]
