"""The RBAC engine on its own (principals given directly): Istio's evaluation order, every
pattern kind, the `not_*` fields, and the path normalization the check sees."""

from __future__ import annotations

from typing import Any

import pytest

from meshdev.common.sidecar_config import AuthzPolicy
from meshdev.sidecar.filters.rbac import NO_POLICY_MATCHED, Patterns, RbacEngine, normalize_path

FRONTEND = "cluster.local/ns/shop/sa/frontend"
BACKEND = "cluster.local/ns/shop/sa/backend"


def policy(name: str, action: str, *rules: dict[str, Any]) -> AuthzPolicy:
    return AuthzPolicy.model_validate({"name": name, "action": action, "rules": list(rules)})


def engine(*policies: AuthzPolicy) -> RbacEngine:
    return RbacEngine(policies)


def check(
    e: RbacEngine, method: str = "GET", path: str = "/", principal: str | None = None
) -> str | None:
    return e.check(method, path, principal)


# -- evaluation order ------------------------------------------------------------------------


def test_no_policies_at_all_allow() -> None:
    assert check(engine()) is None


def test_without_an_allow_policy_what_no_deny_matches_is_allowed() -> None:
    e = engine(policy("no-delete", "DENY", {"methods": ["DELETE"]}))
    assert check(e, "GET") is None
    assert check(e, "DELETE") == "rbac_access_denied_matched_policy[no-delete]"


def test_with_an_allow_policy_only_what_it_matches_is_allowed() -> None:
    e = engine(policy("reads", "ALLOW", {"methods": ["GET"]}))
    assert check(e, "GET") is None
    assert check(e, "POST") == NO_POLICY_MATCHED == "rbac_access_denied_matched_policy[none]"


def test_a_matching_deny_beats_a_matching_allow() -> None:
    e = engine(
        policy("everyone", "ALLOW", {}),
        policy("no-admin", "DENY", {"paths": ["/admin*"]}),
    )
    assert check(e, path="/items") is None
    assert check(e, path="/admin/users") == "rbac_access_denied_matched_policy[no-admin]"


def test_the_first_matching_deny_policy_is_the_one_named() -> None:
    e = engine(
        policy("first", "DENY", {"methods": ["POST"]}),
        policy("second", "DENY", {"methods": ["GET"]}, {"methods": ["POST"]}),
    )
    assert check(e, "POST") == "rbac_access_denied_matched_policy[first]"
    assert check(e, "GET") == "rbac_access_denied_matched_policy[second]"


def test_an_allow_policy_without_rules_allows_nothing() -> None:
    e = engine(policy("allow-nothing", "ALLOW"))
    assert check(e, "GET", "/", FRONTEND) == NO_POLICY_MATCHED


def test_a_deny_policy_without_rules_denies_nothing() -> None:
    e = engine(policy("deny-nothing", "DENY"))
    assert check(e) is None


def test_allow_nothing_beside_another_allow_adds_nothing() -> None:
    e = engine(policy("allow-nothing", "ALLOW"), policy("gets", "ALLOW", {"methods": ["GET"]}))
    assert check(e, "GET") is None
    assert check(e, "PUT") == NO_POLICY_MATCHED


def test_a_rule_without_fields_matches_everything() -> None:
    e = engine(policy("deny-all", "DENY", {}))
    assert check(e, "OPTIONS", "/anything", None) == "rbac_access_denied_matched_policy[deny-all]"


def test_a_policy_matches_when_any_rule_does_and_a_rule_when_every_field_does() -> None:
    e = engine(
        policy(
            "p",
            "ALLOW",
            {"methods": ["GET"], "paths": ["/read/*"]},
            {"methods": ["POST"], "paths": ["/write"], "principals": [FRONTEND]},
        )
    )
    assert check(e, "GET", "/read/x") is None
    assert check(e, "GET", "/write") == NO_POLICY_MATCHED  # second field of rule 1 fails
    assert check(e, "POST", "/write", FRONTEND) is None
    assert check(e, "POST", "/write", BACKEND) == NO_POLICY_MATCHED
    assert check(e, "POST", "/write", None) == NO_POLICY_MATCHED


# -- patterns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("/exact", "/exact", True),
        ("/exact", "/exact/", False),
        ("/exact", "/EXACT", False),
        ("/api/*", "/api/", True),
        ("/api/*", "/api/v1/items", True),
        ("/api/*", "/api", False),
        ("*.json", "/a/b.json", True),
        ("*.json", "/a/b.json5", False),
        ("*", "/whatever", True),
        # Istio reads a leading "*" first: "*mid*" is a suffix "mid*", literally.
        ("*mid*", "/a/mid*", True),
        ("*mid*", "/a/mid/b", False),
        # A "*" inside a value is a literal character.
        ("/a*b", "/a*b", True),
        ("/a*b", "/axb", False),
    ],
)
def test_path_patterns(pattern: str, value: str, matches: bool) -> None:
    assert Patterns([pattern]).matches(value) is matches


def test_several_values_of_each_kind_in_one_field() -> None:
    p = Patterns(["/a", "/b", "/c/*", "/d/*", "*.png", "*.jpg"])
    hits = ["/a", "/b", "/c/1", "/d/", "/x.png", "/y.jpg"]
    misses = ["/ab", "/c", "/e/1", "/x.gif"]
    assert [p.matches(v) for v in hits] == [True] * len(hits)
    assert [p.matches(v) for v in misses] == [False] * len(misses)


@pytest.mark.parametrize(
    ("pattern", "principal", "matches"),
    [
        (FRONTEND, FRONTEND, True),
        (FRONTEND, BACKEND, False),
        ("cluster.local/ns/shop/*", FRONTEND, True),
        ("cluster.local/ns/other/*", FRONTEND, False),
        ("*/sa/frontend", FRONTEND, True),
        ("*/sa/frontend", BACKEND, False),
        ("*", FRONTEND, True),
        # "*" is any principal that is there: not a plaintext peer, not an empty SAN.
        ("*", None, False),
        ("*", "", False),
        (FRONTEND, None, False),
        ("cluster.local/*", None, False),
        ("*frontend", None, False),
    ],
)
def test_principal_patterns(pattern: str, principal: str | None, matches: bool) -> None:
    assert Patterns([pattern]).matches_principal(principal) is matches


# -- fields ----------------------------------------------------------------------------------


def test_principals_through_the_engine() -> None:
    e = engine(policy("from-shop", "ALLOW", {"principals": ["cluster.local/ns/shop/*"]}))
    assert check(e, principal=FRONTEND) is None
    assert check(e, principal="cluster.local/ns/evil/sa/x") == NO_POLICY_MATCHED
    assert check(e, principal=None) == NO_POLICY_MATCHED


def test_not_principals_is_satisfied_by_a_plaintext_peer() -> None:
    e = engine(policy("p", "ALLOW", {"not_principals": [BACKEND]}))
    assert check(e, principal=FRONTEND) is None
    assert check(e, principal=None) is None
    assert check(e, principal=BACKEND) == NO_POLICY_MATCHED


def test_deny_not_principals_any_refuses_plaintext_only() -> None:
    """Istio's "require mutual TLS" policy: DENY when the principal is not any principal."""
    e = engine(policy("require-mtls", "DENY", {"not_principals": ["*"]}))
    assert check(e, principal=None) == "rbac_access_denied_matched_policy[require-mtls]"
    assert check(e, principal=FRONTEND) is None


def test_methods_are_exact() -> None:
    e = engine(policy("p", "ALLOW", {"methods": ["GET", "HEAD"]}))
    assert [check(e, m) for m in ("GET", "HEAD")] == [None, None]
    assert check(e, "get") == NO_POLICY_MATCHED
    assert check(e, "POST") == NO_POLICY_MATCHED


def test_not_methods() -> None:
    e = engine(policy("p", "ALLOW", {"not_methods": ["DELETE", "PUT"]}))
    assert check(e, "GET") is None
    assert check(e, "PUT") == NO_POLICY_MATCHED
    assert check(e, "DELETE") == NO_POLICY_MATCHED


def test_paths_and_not_paths_together() -> None:
    e = engine(policy("p", "ALLOW", {"paths": ["/api/*"], "not_paths": ["/api/internal/*"]}))
    assert check(e, path="/api/items") is None
    assert check(e, path="/api/internal/keys") == NO_POLICY_MATCHED
    assert check(e, path="/other") == NO_POLICY_MATCHED


def test_a_grpc_method_is_a_post_to_its_path() -> None:
    e = engine(policy("p", "ALLOW", {"methods": ["POST"], "paths": ["/test.Echo/Unary"]}))
    assert check(e, "POST", "/test.Echo/Unary") is None
    assert check(e, "POST", "/test.Echo/Stream") == NO_POLICY_MATCHED


# -- what the check reads ------------------------------------------------------------------


def test_the_engine_says_whether_it_reads_the_principal() -> None:
    assert not engine(policy("p", "ALLOW", {"paths": ["/a"]})).reads_principal
    assert engine(policy("p", "DENY", {"not_principals": ["*"]})).reads_principal
    assert engine(policy("p", "ALLOW", {"principals": [FRONTEND]})).reads_principal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/items", "/items"),
        ("/a.b/c.json", "/a.b/c.json"),
        ("/public/../admin", "/admin"),
        ("/./admin", "/admin"),
        ("/a/b/../../../admin", "/admin"),
        ("/admin/.", "/admin/"),
        ("/admin/x/..", "/admin/"),
        ("/..", "/"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2E/admin", "/admin"),
        ("/%61dmin", "/admin"),
        ("/%7Euser%5F1", "/~user_1"),
        ("/public\\..\\admin", "/admin"),
        # Reserved characters stay encoded, and slashes are not merged (Istio's BASE).
        ("/a%2Fb", "/a%2Fb"),
        ("/a%20b", "/a%20b"),
        ("//admin", "//admin"),
        ("/.well-known/x", "/.well-known/x"),
    ],
)
def test_path_normalization(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


def test_a_dot_segment_does_not_slip_past_a_deny() -> None:
    e = engine(policy("no-admin", "DENY", {"paths": ["/admin", "/admin/*"]}))
    for raw in ("/public/../admin", "/%61dmin/users", "/x/%2e%2e/admin", "/public\\..\\admin"):
        assert check(e, path=raw) == "rbac_access_denied_matched_policy[no-admin]", raw
    assert check(e, path="/public/admin") is None


# -- connections (a tcp_proxy listener) ------------------------------------------------------


def connections(*policies: AuthzPolicy) -> RbacEngine:
    return RbacEngine(policies, connections=True)


def test_a_connection_is_checked_by_its_principal() -> None:
    e = connections(
        policy("from-shop", "ALLOW", {"principals": ["cluster.local/ns/shop/*"]}),
        policy("not-backend", "DENY", {"principals": [BACKEND]}),
    )
    assert e.check_connection(FRONTEND) is None
    assert e.check_connection(BACKEND) == "rbac_access_denied_matched_policy[not-backend]"
    assert e.check_connection(None) == NO_POLICY_MATCHED


def test_on_a_connection_a_deny_rule_loses_its_http_fields_and_denies_more() -> None:
    e = connections(policy("no-posts", "DENY", {"methods": ["POST"], "principals": [BACKEND]}))
    assert e.check_connection(BACKEND) == "rbac_access_denied_matched_policy[no-posts]"
    assert e.check_connection(FRONTEND) is None
    only_http = connections(policy("no-admin", "DENY", {"paths": ["/admin"]}))
    assert only_http.check_connection(FRONTEND) == "rbac_access_denied_matched_policy[no-admin]"


def test_on_a_connection_an_allow_rule_with_http_fields_is_dropped_and_allows_less() -> None:
    reads = policy("reads", "ALLOW", {"methods": ["GET"], "principals": [FRONTEND]})
    e = connections(reads, policy("backend", "ALLOW", {"principals": [BACKEND]}))
    assert e.check_connection(FRONTEND) == NO_POLICY_MATCHED
    assert e.check_connection(BACKEND) is None
    # The same policy on HTTP keeps every field.
    assert engine(reads).check("GET", "/", FRONTEND) is None
