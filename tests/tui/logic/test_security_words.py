"""The security view's pure parts: certificate countdowns, modes, policy lists, the notice,
and why a route's requests were refused (403 RBAC) or could not connect (mTLS)."""

from __future__ import annotations

import dataclasses

import pytest

from meshdev.config import load_mesh
from meshdev.config.model import Authorization, Match, Mesh
from meshdev.telemetry.aggregation.view import CertStatus, EdgeStats, PodSecurity
from meshdev.testing.sample_views import sample_view, secured_mesh
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.explain import (
    duration,
    explain,
    explain_denial,
    matching_denials,
    pattern_matches,
)
from meshdev.tui.logic.security import (
    denial_text,
    expiry_text,
    failures_text,
    mode_text,
    notice,
    policy_list,
    remaining,
)
from meshdev.tui.screens.route_detail import detail_text
from meshdev.tui.tables.security import edge_row, has_security, pod_security_row
from tests.support import DEMO_MESH

DAY = 86400.0
NO_ALLOW = "no ALLOW policy of backend matches this caller/path"
BY_NO_ADMIN = "denied by authorization policy no-admin (authorization.backend[1] in mesh.yaml)"


@pytest.fixture(scope="module")
def plain() -> Mesh:
    return load_mesh(DEMO_MESH)


@pytest.fixture(scope="module")
def mesh(plain: Mesh) -> Mesh:
    return secured_mesh(plain)


def with_policies(mesh: Mesh, *policies: dict[str, object]) -> Mesh:
    return mesh.model_copy(
        update={
            "authorization": {"backend": tuple(Authorization.model_validate(p) for p in policies)}
        }
    )


# -- certificates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (23 * 3600 + 41 * 60 + 59, "23h 41m"),
        (3 * DAY + 4 * 3600 + 5, "3d 4h"),
        (2 * DAY - 1, "47h 59m"),
        (12 * 60 + 5, "12m 5s"),
        (42.9, "42s"),
        (-5, "0s"),
    ],
)
def test_a_countdown_reads_in_its_two_largest_units(seconds: float, text: str) -> None:
    assert remaining(seconds) == text


def test_a_certificate_turns_yellow_in_its_last_tenth_and_red_once_expired() -> None:
    fresh = expiry_text(CertStatus("id", 23 * 3600 + 41 * 60, DAY), "id")
    assert (fresh.plain, str(fresh.style)) == ("expires in 23h 41m", "")
    late = expiry_text(CertStatus("id", 2 * 3600, DAY), "id")
    assert (late.plain, str(late.style)) == ("expires in 2h 0m", "bold yellow")
    # Its own life says what a tenth is; the mesh's cert_ttl when it does not say.
    short = CertStatus("id", 2 * 3600, 10 * 3600.0)
    assert str(expiry_text(short, "id").style) == ""
    undated = CertStatus("id", 2 * 3600, None)
    assert str(expiry_text(undated, "id").style) == ""
    assert str(expiry_text(undated, "id", ttl=DAY).style) == "bold yellow"
    gone = expiry_text(CertStatus("id", -300, DAY), "id")
    assert (gone.plain, str(gone.style)) == ("expired 5m 0s ago", "bold red")
    # An identity without its certificate is a pod that cannot talk mTLS; none at all, a dash.
    assert expiry_text(None, "id").plain == "no certificate"
    assert expiry_text(None, None).plain == fmt.DASH


# -- cells --------------------------------------------------------------------------------------


def test_modes_and_refusals_read_as_words() -> None:
    assert mode_text("mtls", secured=True).plain == "mTLS"
    # Plaintext in a mesh with a CA is a choice worth a colour; in a plaintext mesh it is all.
    assert str(mode_text("plaintext", secured=True).style) == "yellow"
    assert str(mode_text("plaintext", secured=False).style) == "dim"
    assert mode_text("mixed", secured=True).plain == "mixed"
    assert mode_text("unknown", secured=False).plain == "?"
    refused = failures_text({"no_filter_chain_match": 3, "fail_verify_no_cert": 5})
    assert refused.plain == "no cert 5  plaintext 3"


def test_an_edge_with_403s_names_what_may_refuse_its_caller(mesh: Mesh) -> None:
    # ingress is named by no ALLOW policy; a DENY for it alone comes first.
    assert denial_text(mesh, "backend", "ingress").plain == (
        "denied by no-admin DENY or no ALLOW for ingress"
    )
    only_deny = with_policies(
        mesh, {"name": "no-web", "action": "DENY", "from": {"services": ["web"]}}
    )
    assert denial_text(only_deny, "backend", "web").plain == "denied by no-web DENY"
    # A DENY that names another caller cannot be it: with nothing left, the list stands.
    assert denial_text(only_deny, "backend", "frontend").plain == "no-web DENY"
    assert denial_text(mesh, "frontend", "ingress").plain == "none: every caller allowed"


def test_a_destinations_policies_deny_first(mesh: Mesh, plain: Mesh) -> None:
    assert policy_list(mesh, "backend").plain == "no-admin DENY, frontend-reads ALLOW"
    assert policy_list(mesh, "frontend").plain == "none: every caller allowed"
    assert policy_list(None, "backend").plain == fmt.DASH


def test_rows_of_the_sample_views(mesh: Mesh) -> None:
    view = sample_view(4, secured=True)
    row = edge_row(view.edges[0], mesh, secured=True)
    assert [c if isinstance(c, str) else c.plain for c in row.cells] == [
        "frontend",
        "backend",
        "mTLS",
        "90",
        "2.5",
        "",
        # 403s on this edge: what may refuse frontend, not just the list.
        "denied by no-admin DENY or outside ALLOW frontend-reads",
    ]
    gateway = pod_security_row(view.pod_security[0])
    # The gateway has no inbound listener, policies or TLS of its own; it has an identity.
    assert [c if isinstance(c, str) else c.plain for c in gateway.cells] == [
        "ingress",
        "ingress",
        *[fmt.DASH] * 4,
        "",
        "expires in 20h 2m",
    ]
    assert has_security(view.pod_security)
    assert not has_security(sample_view(4).pod_security)
    assert not has_security([PodSecurity("backend-0", "backend", mtls="DISABLE")])


# -- the notice ---------------------------------------------------------------------------------


def test_the_notice_says_how_the_mesh_is_secured(mesh: Mesh) -> None:
    assert notice(mesh, (), ()).plain == (
        "mTLS STRICT mesh-wide (frontend PERMISSIVE)   certificates 24h, renewed at 12h"
        "   authorization: backend"
    )


def test_a_plaintext_mesh_is_told_how_to_turn_security_on(plain: Mesh) -> None:
    view = sample_view(0)
    text = notice(plain, view.edges, view.pod_security).plain
    assert text.startswith("plaintext mesh: add `security: {mtls: STRICT}` to mesh.yaml")
    # Watching, with no mesh file: what the traffic shows.
    assert notice(None, view.edges, view.pod_security).plain.startswith("no mutual TLS seen")
    tls = sample_view(0, secured=True)
    assert notice(None, tls.edges, tls.pod_security).plain.startswith(
        "mutual TLS on 2 of 2 edges seen"
    )


# -- 403 RBAC -----------------------------------------------------------------------------------


def test_a_deny_policy_that_fits_the_route_is_the_cause(mesh: Mesh) -> None:
    # backend's default route takes every path, /admin too.
    cause = explain(mesh, "backend", "default", "RBAC", callers=["frontend"])
    assert cause.meaning == BY_NO_ADMIN
    assert cause.headline() == (
        "403 RBAC <- authorization.backend[1]: "
        "{name: no-admin, action: DENY, to: {paths: [/admin*]}}"
    )
    assert cause.fields[1] == f"or: {NO_ALLOW}"


def test_when_no_deny_fits_no_allow_policy_matched(mesh: Mesh) -> None:
    # items' paths start with /items: no-admin (/admin*) cannot have refused them.
    cause = explain(mesh, "backend", "items", "RBAC", callers=["frontend"])
    assert cause.meaning == NO_ALLOW
    assert cause.fields == (
        "authorization.backend[0]: {name: frontend-reads, action: ALLOW, "
        "from: {services: [frontend]}, to: {methods: [GET], paths: [/items*]}}",
    )


def test_the_refused_caller_decides_which_deny_fits(mesh: Mesh) -> None:
    guarded = with_policies(
        mesh,
        {"name": "no-ingress", "action": "DENY", "from": {"services": ["ingress"]}},
        {
            "name": "not-ops",
            "action": "DENY",
            "from": {"not_principals": ["cluster.local/ns/demo/sa/ops-*"]},
        },
    )
    assert explain_denial(guarded, "backend", ["ingress"]).meaning.startswith(  # type: ignore[union-attr]
        "denied by authorization policy no-ingress (authorization.backend[0]"
    )
    by_frontend = explain_denial(guarded, "backend", ["frontend"])
    assert by_frontend is not None and "not-ops" in by_frontend.meaning
    # An ops-* caller is let by both: only DENY policies, none fits, all are shown.
    by_ops = explain_denial(guarded, "backend", ["ops-console"])
    assert by_ops is not None
    assert by_ops.meaning == "denied by an authorization policy of backend"
    assert len(by_ops.fields) == 2


def test_a_plaintext_caller_has_no_principal(mesh: Mesh) -> None:
    permissive = with_policies(
        mesh.model_copy(
            update={"security": mesh.security.model_copy(update={"mtls": "DISABLE"})}  # type: ignore[union-attr]
        ),
        {"name": "only-frontend", "action": "DENY", "from": {"not_services": ["frontend"]}},
    )
    # Under DISABLE even frontend comes without an identity: `not_services` refuses it.
    cause = explain_denial(permissive, "backend", ["frontend"])
    assert cause is not None and "only-frontend" in cause.meaning


def test_methods_and_exact_paths_narrow_what_a_policy_can_refuse(mesh: Mesh) -> None:
    guarded = with_policies(
        mesh,
        {"name": "no-writes", "action": "DENY", "to": {"methods": ["POST", "DELETE"]}},
        {"name": "no-health", "action": "DENY", "to": {"paths": ["/items/health"]}},
    )
    route = mesh.routes["backend"][1].match
    get_only = route.model_copy(update={"method": "GET"})
    cause = explain_denial(guarded, "backend", ["frontend"], get_only)
    assert cause is not None and "no-health" in cause.meaning
    assert "no-writes" not in " ".join(cause.fields)
    exact = route.model_copy(update={"prefix": None, "path": "/items/list", "method": "POST"})
    cause = explain_denial(guarded, "backend", ["frontend"], exact)
    assert cause is not None and "no-writes" in cause.meaning


def test_a_deny_limited_to_some_methods_says_which(mesh: Mesh) -> None:
    # The only policy denies POST: a 403 it explains is a POST's, and the words say so (they
    # read as if every request of the edge or route were refused).
    no_posts = with_policies(
        mesh, {"name": "no-posts", "action": "DENY", "to": {"methods": ["POST"]}}
    )
    assert denial_text(no_posts, "backend", "frontend").plain == "denied by no-posts DENY (POST)"
    cause = explain_denial(no_posts, "backend", ["frontend"], mesh.routes["backend"][1].match)
    assert cause is not None
    assert cause.meaning == (
        "denied by authorization policy no-posts (POST only; authorization.backend[0] in mesh.yaml)"
    )
    but_reads = with_policies(
        mesh, {"name": "reads-only", "action": "DENY", "to": {"not_methods": ["GET", "HEAD"]}}
    )
    assert denial_text(but_reads, "backend", "frontend").plain == (
        "denied by reads-only DENY (any method but GET, HEAD)"
    )
    # A GET is not what such a policy refuses.
    get = Match(path="/items", method="GET")
    assert matching_denials(but_reads, "backend", ["frontend"], get) == []


def test_a_service_without_policies_answered_403_itself(mesh: Mesh) -> None:
    assert explain_denial(mesh, "frontend", ["ingress"]) is None
    assert explain_denial(None, "backend", ["frontend"]) is None
    # Watching, without the file: the RBAC filter's own word.
    assert explain(None, "backend", "items", "RBAC").meaning == (
        "denied by an authorization policy of backend (RBAC: access denied)"
    )


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("*", "cluster.local/ns/demo/sa/frontend", True),
        ("*", "", False),
        ("/items*", "/items/1", True),
        ("*.json", "/a.json", True),
        ("/items", "/items/1", False),
    ],
)
def test_istios_patterns(pattern: str, value: str, matches: bool) -> None:
    assert pattern_matches(pattern, value) is matches


# -- mTLS -------------------------------------------------------------------------------------


def test_a_connect_failure_with_failed_handshakes_is_explained_as_mtls(mesh: Mesh) -> None:
    cause = explain(
        mesh,
        "backend",
        "items",
        "UF",
        upstream_tls={"fail_verify_san": 4},
        inbound_tls={"no_filter_chain_match": 1},
    )
    assert cause.meaning == (
        "mTLS handshake failed: backend's certificate names another identity than "
        "spiffe://cluster.local/ns/demo/sa/backend; and backend is STRICT and refused a "
        "plaintext connection"
    )
    assert cause.headline() == "503 UF <- security.mtls: STRICT"
    assert cause.fields[1:] == ("security.cert_ttl: 24h",)
    # The destination's own mode, when it overrides the mesh's, comes first.
    frontend = explain(mesh, "frontend", "default", "UF", inbound_tls={"fail_verify_no_cert": 2})
    assert frontend.meaning == (
        "mTLS handshake failed: frontend asked the caller for its certificate and got none"
    )
    assert frontend.fields[0] == "policies.frontend.mtls: PERMISSIVE"
    # Without failed handshakes a connect failure is a connect failure.
    assert explain(mesh, "backend", "items", "UF").meaning == "upstream connection failure"
    assert duration(DAY) == "24h" and duration(90) == "90s" and duration(0.3) == "300ms"


def test_the_route_detail_explains_403s_and_mtls_failures(mesh: Mesh) -> None:
    view = sample_view(4, secured=True)
    items = view.routes[0]
    text = detail_text(items, mesh, view).plain
    assert "     5  403 RBAC" in text and "authorization.backend[0]: {name: frontend-reads" in text
    assert NO_ALLOW in text
    failing = dataclasses.replace(view.edges[0], tls_failures={"fail_verify_error": 7})
    tls_view = dataclasses.replace(view, edges=(failing, *view.edges[1:]))
    broken = dataclasses.replace(items, flags={"UF": 7}, codes={"503": 7})
    text = detail_text(broken, mesh, tls_view).plain
    assert "7  503 UF" in text
    assert (
        "mTLS handshake failed: backend's certificate does not lead to the mesh's CA, "
        "or has expired" in text
    )
    # A 403 of a service without policies is the app's: no RBAC line.
    frontend = dataclasses.replace(items, vhost="frontend", route="default")
    assert "RBAC" not in detail_text(frontend, mesh, view).plain


def test_an_edge_with_no_traffic_yet_reads_zero() -> None:
    quiet = EdgeStats("frontend", "backend", "mtls", 0.0, 0.0)
    row = edge_row(quiet, None, secured=True)
    assert [c.plain for c in row.cells[3:5]] == ["0", "0"]  # type: ignore[union-attr]
