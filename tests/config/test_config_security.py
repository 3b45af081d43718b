"""`security`, `policies.<service>.mtls` and `authorization` in mesh.yaml (Istio's
PeerAuthentication and AuthorizationPolicy): what they parse to, and every misuse located."""

from __future__ import annotations

import textwrap

import jsonschema
import pytest
import yaml

from meshdev.config import Mesh, MeshInvalid, parse_mesh
from meshdev.config.model import CERT_TTL
from meshdev.config.schema import mesh_json_schema

BASE = """\
name: demo
services:
  frontend:
    command: python app.py
  backend:
    command: python app.py
  db:
    command: postgres
    port: 5432
    protocol: tcp
ingress: {routes: [{to: frontend}]}
"""
# BASE is 11 lines: what a case appends starts on line 12.


def parse(extra: str) -> Mesh:
    return parse_mesh((BASE + textwrap.dedent(extra)).encode(), "mesh.yaml")


def problems(extra: str) -> list[str]:
    with pytest.raises(MeshInvalid) as info:
        parse(extra)
    return [str(p) for p in info.value.problems]


def test_without_a_security_section_the_mesh_uses_no_tls() -> None:
    mesh = parse_mesh(BASE.encode(), "mesh.yaml")
    assert mesh.security is None
    assert mesh.authorization == {}
    assert {mesh.mtls_mode(s) for s in mesh.services} == {"DISABLE"}


def test_an_empty_security_section_takes_istios_defaults() -> None:
    mesh = parse_mesh((BASE + "security: {}\n").encode(), "mesh.yaml")
    assert mesh.security is not None
    assert (mesh.security.mtls, mesh.security.cert_ttl) == ("PERMISSIVE", 24 * 3600.0)
    assert CERT_TTL == 86400.0
    assert mesh.mtls_mode("backend") == "PERMISSIVE"


def test_a_service_policy_overrides_the_mesh_wide_mode() -> None:
    mesh = parse(
        """\
        security: {mtls: STRICT, cert_ttl: 1h}
        policies:
          backend: {mtls: PERMISSIVE}
          db: {mtls: DISABLE}
          frontend: {lb: random}
        """
    )
    assert mesh.security is not None and mesh.security.cert_ttl == 3600.0
    assert mesh.mtls_mode("backend") == "PERMISSIVE"
    assert mesh.mtls_mode("db") == "DISABLE"
    # A policy without mtls keeps the mesh-wide mode.
    assert mesh.mtls_mode("frontend") == "STRICT"


def test_disable_without_a_security_section_is_allowed_and_changes_nothing() -> None:
    mesh = parse("policies:\n  backend: {mtls: DISABLE}\n")
    assert mesh.mtls_mode("backend") == "DISABLE"


@pytest.mark.parametrize("ttl", ["10s", "8760h"])
def test_cert_ttl_bounds_are_inclusive(ttl: str) -> None:
    mesh = parse(f"security: {{cert_ttl: {ttl}}}\n")
    assert mesh.security is not None
    assert mesh.security.cert_ttl in (10.0, 8760 * 3600.0)


def test_authorization_parses_every_field() -> None:
    mesh = parse(
        """\
        security: {mtls: STRICT}
        authorization:
          backend:
            - name: frontend-reads
              action: ALLOW
              from: {services: [frontend, ingress], principals: ["cluster.local/ns/demo/sa/*"]}
              to: {methods: [GET], paths: ["/items*", "*.json", /exact, "*"]}
            - name: no-admin
              action: DENY
              from: {not_services: [frontend], not_principals: ["*"]}
              to: {not_methods: [DELETE], not_paths: [/admin*]}
            - name: everything
        """
    )
    reads, no_admin, everything = mesh.authorization["backend"]
    assert (reads.name, reads.action) == ("frontend-reads", "ALLOW")
    assert reads.from_ is not None and reads.to is not None
    assert reads.from_.services == ("frontend", "ingress")
    assert reads.from_.principals == ("cluster.local/ns/demo/sa/*",)
    assert reads.to.methods == ("GET",)
    assert reads.to.paths == ("/items*", "*.json", "/exact", "*")
    assert no_admin.action == "DENY"
    assert no_admin.from_ is not None and no_admin.to is not None
    assert (no_admin.from_.not_services, no_admin.from_.not_principals) == (("frontend",), ("*",))
    assert (no_admin.to.not_methods, no_admin.to.not_paths) == (("DELETE",), ("/admin*",))
    # Istio's default action is ALLOW; a policy with neither from nor to matches everything.
    assert (everything.action, everything.from_, everything.to) == ("ALLOW", None, None)


def test_method_and_path_rules_need_no_tls() -> None:
    mesh = parse("authorization:\n  backend:\n    - {name: reads, to: {methods: [GET]}}\n")
    assert mesh.security is None
    assert mesh.authorization["backend"][0].to is not None


def test_a_tcp_service_is_authorized_by_caller() -> None:
    mesh = parse(
        "security: {}\nauthorization:\n  db:\n    - {name: app, from: {services: [backend]}}\n"
    )
    assert mesh.authorization["db"][0].action == "ALLOW"


def test_the_model_dumps_from_as_the_file_writes_it() -> None:
    mesh = parse(
        "security: {mtls: STRICT, cert_ttl: 12h}\n"
        "authorization:\n  backend:\n    - {name: a, from: {services: [frontend]}}\n"
    )
    dumped = mesh.model_dump(mode="json", exclude_none=True)
    entry = dumped["authorization"]["backend"][0]
    assert "from" in entry and "from_" not in entry
    assert dumped["security"] == {"mtls": "STRICT", "cert_ttl": "12h"}
    again = parse_mesh(yaml.safe_dump(dumped).encode(), "mesh.yaml")
    assert again == mesh


# (what is wrong, YAML appended to BASE, the exact located problem)
CASES = [
    (
        "mtls value",
        "security: {mtls: STRICTER}\n",
        "mesh.yaml:12:18 security.mtls: unknown value 'STRICTER'; did you mean 'STRICT'?",
    ),
    (
        "mtls in lower case",
        "security: {mtls: strict}\n",
        "mesh.yaml:12:18 security.mtls: unknown value 'strict'; did you mean 'STRICT'?",
    ),
    (
        "unknown security key",
        "security: {mtl: STRICT}\n",
        "mesh.yaml:12:12 security.mtl: unknown key 'mtl'; did you mean 'mtls'?",
    ),
    (
        "cert_ttl not a duration",
        "security: {cert_ttl: 24}\n",
        "mesh.yaml:12:22 security.cert_ttl: expected a duration like 250ms or 2s",
    ),
    (
        "cert_ttl too short",
        "security: {cert_ttl: 9s}\n",
        "mesh.yaml:12:22 security.cert_ttl: must be at least 10s",
    ),
    (
        "cert_ttl too long",
        "security: {cert_ttl: 8761h}\n",
        "mesh.yaml:12:22 security.cert_ttl: must be at most 8760h (a year)",
    ),
    (
        "policy mtls value",
        "security: {}\npolicies:\n  backend: {mtls: PERMISIVE}\n",
        "mesh.yaml:14:19 policies.backend.mtls: unknown value 'PERMISIVE'; "
        "did you mean 'PERMISSIVE'?",
    ),
    (
        "policy mtls without security",
        "policies:\n  backend: {mtls: STRICT}\n",
        "mesh.yaml:13:19 policies.backend.mtls: mutual TLS needs the mesh's CA and workload "
        "certificates: add a security section (security: {} takes Istio's defaults)",
    ),
    (
        "policy mtls of an unknown service",
        "security: {}\npolicies:\n  backnd: {mtls: STRICT}\n",
        "mesh.yaml:14:3 policies.backnd: unknown service 'backnd'; did you mean 'backend'?",
    ),
    (
        "authorization of an unknown service",
        "authorization:\n  backnd:\n    - {name: a}\n",
        "mesh.yaml:13:3 authorization.backnd: unknown service 'backnd'; did you mean 'backend'?",
    ),
    (
        "authorization is a list",
        "authorization:\n  backend: {name: a}\n",
        "mesh.yaml:13:12 authorization.backend: expected a list",
    ),
    (
        "policy without a name",
        "authorization:\n  backend:\n    - {action: DENY}\n",
        "mesh.yaml:14:7 authorization.backend[0].name: required key is missing",
    ),
    (
        "policy name not a DNS label",
        "authorization:\n  backend:\n    - {name: Reads}\n",
        "mesh.yaml:14:14 authorization.backend[0].name: expected a name of lower-case letters",
    ),
    (
        "action in lower case",
        "authorization:\n  backend:\n    - {name: a, action: deny}\n",
        "mesh.yaml:14:25 authorization.backend[0].action: unknown value 'deny'; "
        "did you mean 'DENY'?",
    ),
    (
        "action Istio lacks here",
        "authorization:\n  backend:\n    - {name: a, action: AUDIT}\n",
        "mesh.yaml:14:25 authorization.backend[0].action: expected one of: ALLOW, DENY",
    ),
    (
        "misspelt from",
        "authorization:\n  backend:\n    - {name: a, form: {services: [frontend]}}\n",
        "mesh.yaml:14:17 authorization.backend[0].form: unknown key 'form'; did you mean 'from'?",
    ),
    (
        "misspelt source key",
        "security: {}\nauthorization:\n  backend:\n    - {name: a, from: {service: [frontend]}}\n",
        "mesh.yaml:15:24 authorization.backend[0].from.service: unknown key 'service'; "
        "did you mean 'services'?",
    ),
    (
        "misspelt operation key",
        "authorization:\n  backend:\n    - {name: a, to: {method: [GET]}}\n",
        "mesh.yaml:14:22 authorization.backend[0].to.method: unknown key 'method'; "
        "did you mean 'methods'?",
    ),
    (
        "services not a list",
        "security: {}\nauthorization:\n  backend:\n    - {name: a, from: {services: frontend}}\n",
        "mesh.yaml:15:34 authorization.backend[0].from.services: expected a list",
    ),
    (
        "to not a mapping",
        "authorization:\n  backend:\n    - {name: a, to: GET}\n",
        "mesh.yaml:14:21 authorization.backend[0].to: expected a mapping of keys to values",
    ),
    (
        "duplicate policy name",
        "authorization:\n  backend:\n    - {name: a}\n    - {name: b}\n    - {name: a}\n",
        "mesh.yaml:16:14 authorization.backend[2].name: duplicate policy name 'a' (also policy 0)",
    ),
    (
        "unknown calling service",
        "security: {}\nauthorization:\n  backend:\n    - {name: a, from: {services: [frontnd]}}\n",
        "mesh.yaml:15:35 authorization.backend[0].from.services[0]: unknown service 'frontnd'; "
        "did you mean 'frontend'?",
    ),
    (
        "unknown excluded service",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {not_services: [ingres]}}\n",
        "mesh.yaml:15:39 authorization.backend[0].from.not_services[0]: unknown service "
        "'ingres'; did you mean 'ingress'?",
    ),
    (
        "unknown service without a close one",
        "security: {}\nauthorization:\n  backend:\n    - {name: a, from: {services: [zzz]}}\n",
        "mesh.yaml:15:35 authorization.backend[0].from.services[0]: unknown service 'zzz'; "
        "known: backend, db, frontend, ingress",
    ),
    (
        "empty from",
        "security: {}\nauthorization:\n  backend:\n    - {name: a, from: {}}\n",
        "mesh.yaml:15:23 authorization.backend[0].from: give services, principals, not_services "
        "or not_principals; leave `from` out to match every caller",
    ),
    (
        "from with empty lists",
        "security: {}\nauthorization:\n  backend:\n    - {name: a, from: {services: []}}\n",
        "mesh.yaml:15:23 authorization.backend[0].from: give services, principals",
    ),
    (
        "empty to",
        "authorization:\n  backend:\n    - {name: a, to: {}}\n",
        "mesh.yaml:14:21 authorization.backend[0].to: give methods, paths, not_methods or "
        "not_paths; leave `to` out to match every request",
    ),
    (
        "identity rule without security",
        "authorization:\n  backend:\n    - {name: a, from: {services: [frontend]}}\n",
        "mesh.yaml:14:23 authorization.backend[0].from: names callers by identity, which only "
        "mutual TLS proves, but backend takes plaintext only: the mesh has no security section "
        "(security: {} turns mTLS on)",
    ),
    (
        "identity rule with mesh-wide DISABLE",
        "security: {mtls: DISABLE}\n"
        "authorization:\n  backend:\n    - {name: a, from: {principals: ['*']}}\n",
        "mesh.yaml:15:23 authorization.backend[0].from: names callers by identity, which only "
        "mutual TLS proves, but backend takes plaintext only: security.mtls is DISABLE",
    ),
    (
        "identity rule with DISABLE for the service",
        "security: {mtls: STRICT}\npolicies:\n  backend: {mtls: DISABLE}\n"
        "authorization:\n  backend:\n    - {name: a, from: {not_services: [frontend]}}\n",
        "mesh.yaml:17:23 authorization.backend[0].from: names callers by identity, which only "
        "mutual TLS proves, but backend takes plaintext only: policies.backend.mtls is DISABLE",
    ),
    (
        "principal with the scheme",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {principals: ['spiffe://cluster.local/ns/demo/sa/frontend']}}\n",
        "mesh.yaml:15:37 authorization.backend[0].from.principals[0]: principals are SPIFFE IDs "
        "without the scheme, as Istio writes them; did you mean "
        "'cluster.local/ns/demo/sa/frontend'?",
    ),
    (
        "principal of another namespace",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {principals: [cluster.local/ns/prod/sa/frontend]}}\n",
        "mesh.yaml:15:37 authorization.backend[0].from.principals[0]: no workload of mesh "
        "'demo' has this principal; theirs are cluster.local/ns/demo/sa/<service>",
    ),
    (
        "principal of an unknown service",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {not_principals: [cluster.local/ns/demo/sa/fronted]}}\n",
        "mesh.yaml:15:41 authorization.backend[0].from.not_principals[0]: unknown service "
        "'fronted'; did you mean 'frontend'?",
    ),
    (
        "principal wildcard in the middle",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {principals: ['cluster.local/*/sa/frontend']}}\n",
        "mesh.yaml:15:37 authorization.backend[0].from.principals[0]: "
        "'cluster.local/*/sa/frontend': a principal is exact, prefix*, *suffix or *",
    ),
    (
        "empty principal",
        "security: {}\nauthorization:\n  backend:\n    - {name: a, from: {principals: ['']}}\n",
        "mesh.yaml:15:37 authorization.backend[0].from.principals[0]: must not be empty",
    ),
    (
        "lower-case method",
        "authorization:\n  backend:\n    - {name: a, to: {methods: [GET, get]}}\n",
        "mesh.yaml:14:37 authorization.backend[0].to.methods[1]: 'get' is not an HTTP method; "
        "methods are upper case, like GET",
    ),
    (
        "unknown method",
        "authorization:\n  backend:\n    - {name: a, to: {methods: [GET, FETCH]}}\n",
        "mesh.yaml:14:37 authorization.backend[0].to.methods[1]: unknown method 'FETCH' (did "
        "you mean 'PATCH'?): a sidecar answers any method but the standard ones",
    ),
    (
        "unknown excluded method",
        "authorization:\n  backend:\n    - {name: a, to: {not_methods: [DELET]}}\n",
        "mesh.yaml:14:36 authorization.backend[0].to.not_methods[0]: unknown method 'DELET' "
        "(did you mean 'DELETE'?)",
    ),
    (
        "a wildcard method",
        "authorization:\n  backend:\n    - {name: a, to: {methods: ['*']}}\n",
        "mesh.yaml:14:32 authorization.backend[0].to.methods[0]: '*' is not an HTTP method: "
        "leave the methods out to match every method",
    ),
    (
        "query string in a path",
        "authorization:\n  backend:\n    - {name: a, to: {paths: [/a, '/items?x=1']}}\n",
        "mesh.yaml:14:34 authorization.backend[0].to.paths[1]: '/items?x=1' never matches: a "
        "request's path is matched without its query string (as Istio's), and authorization "
        "cannot look at the query; give '/items'",
    ),
    (
        "query string in an excluded path",
        "authorization:\n  backend:\n    - {name: a, to: {not_paths: ['/items?x=1*']}}\n",
        "mesh.yaml:14:34 authorization.backend[0].to.not_paths[0]: '/items?x=1*' excludes "
        "nothing: a request's path is matched without its query string (as Istio's), and "
        "authorization cannot look at the query; give '/items*'",
    ),
    (
        "a service both wanted and excluded",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {services: [frontend], not_services: [frontend]}}\n",
        "mesh.yaml:15:35 authorization.backend[0].from.services[0]: 'frontend' is also excluded "
        "by not_services[0]: this `from` matches no caller at all, so the policy never applies",
    ),
    (
        "a service excluded by its principal",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {services: [ingress, frontend], "
        "not_principals: ['cluster.local/ns/demo/sa/front*']}}\n",
        "mesh.yaml:15:44 authorization.backend[0].from.services[1]: 'frontend' is also excluded "
        "by not_principals[0] ('cluster.local/ns/demo/sa/front*'): no caller matches it here",
    ),
    (
        "a principal pattern inside an excluded one",
        "security: {}\nauthorization:\n  backend:\n"
        "    - {name: a, from: {principals: ['cluster.local/ns/demo/sa/fr*'], "
        "not_principals: ['*']}}\n",
        "mesh.yaml:15:37 authorization.backend[0].from.principals[0]: "
        "'cluster.local/ns/demo/sa/fr*' is also excluded by not_principals[0] ('*'): this "
        "`from` matches no caller at all",
    ),
    (
        "a method both wanted and excluded",
        "authorization:\n  backend:\n    - {name: a, to: {methods: [GET], not_methods: [GET]}}\n",
        "mesh.yaml:14:32 authorization.backend[0].to.methods[0]: 'GET' is also excluded by "
        "not_methods[0]: this `to` matches no request at all, so the policy never applies",
    ),
    (
        "a path inside an excluded prefix",
        "authorization:\n  backend:\n"
        "    - {name: a, to: {paths: ['/a/b', '/c'], not_paths: ['/a*']}}\n",
        "mesh.yaml:14:30 authorization.backend[0].to.paths[0]: '/a/b' is also excluded by "
        "not_paths[0] ('/a*'): no request matches it here",
    ),
    (
        "a suffix inside an excluded suffix",
        "authorization:\n  backend:\n"
        "    - {name: a, to: {paths: ['*.png'], not_paths: ['*.png']}}\n",
        "mesh.yaml:14:30 authorization.backend[0].to.paths[0]: '*.png' is also excluded by "
        "not_paths[0]: this `to` matches no request at all",
    ),
    (
        "lower-case excluded method",
        "authorization:\n  backend:\n    - {name: a, to: {not_methods: [delete]}}\n",
        "mesh.yaml:14:36 authorization.backend[0].to.not_methods[0]: 'delete' is not an HTTP "
        "method",
    ),
    (
        "path without a slash",
        "authorization:\n  backend:\n    - {name: a, to: {paths: [items*]}}\n",
        "mesh.yaml:14:30 authorization.backend[0].to.paths[0]: must start with / "
        "(or be a *suffix pattern)",
    ),
    (
        "path wildcard in the middle",
        "authorization:\n  backend:\n    - {name: a, to: {not_paths: ['/a/*/b']}}\n",
        "mesh.yaml:14:34 authorization.backend[0].to.not_paths[0]: '/a/*/b': a path is exact, "
        "prefix*, *suffix or *",
    ),
    (
        "path wildcards at both ends",
        "authorization:\n  backend:\n    - {name: a, to: {paths: ['*items*']}}\n",
        "mesh.yaml:14:30 authorization.backend[0].to.paths[0]: '*items*': a path is exact",
    ),
    (
        "operation on a tcp service",
        "authorization:\n  db:\n    - {name: a, to: {paths: [/]}}\n",
        "mesh.yaml:14:21 authorization.db[0].to: db is a tcp service: its connections have no "
        "method or path, only a caller; leave `to` out",
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_security_is_located(extra: str, expected: str) -> None:
    found = problems(extra)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_service_may_not_take_the_gateways_identity() -> None:
    text = (
        "name: demo\nservices:\n  ingress: {command: x}\n"
        "ingress: {routes: [{to: ingress}]}\nsecurity: {}\n"
    )
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(text.encode(), "mesh.yaml")
    assert [str(p) for p in info.value.problems] == [
        "mesh.yaml:3:3 services.ingress: with security, cluster.local/ns/demo/sa/ingress is "
        "the ingress gateway's identity: give this service another name"
    ]
    # Without TLS there are no identities to confuse, and without a gateway no clash.
    parse_mesh(text.replace("security: {}\n", "").encode(), "mesh.yaml")
    no_gateway = "name: demo\nservices:\n  ingress: {command: x}\nsecurity: {}\n"
    parse_mesh(no_gateway.encode(), "mesh.yaml")


def test_every_security_problem_comes_at_once() -> None:
    found = problems(
        "authorization:\n  backend:\n"
        "    - {name: a, from: {services: [nope]}, to: {methods: [get]}}\n    - {name: a}\n"
    )
    assert [p.split(" ", 2)[1] for p in found] == [
        "authorization.backend[0].from:",
        "authorization.backend[0].from.services[0]:",
        "authorization.backend[0].to.methods[0]:",
        "authorization.backend[1].name:",
    ]


def test_the_schema_publishes_the_security_keys() -> None:
    schema = mesh_json_schema()
    assert {"security", "authorization"} <= set(schema["properties"])
    defs = schema["$defs"]
    assert defs["Security"]["properties"]["mtls"]["enum"] == ["STRICT", "PERMISSIVE", "DISABLE"]
    assert "24h" in defs["Security"]["properties"]["cert_ttl"]["description"]
    assert "PeerAuthentication" in defs["Policy"]["properties"]["mtls"]["description"]
    assert set(defs["Authorization"]["properties"]) == {"name", "action", "from", "to"}
    assert set(defs["AuthzSource"]["properties"]) == {
        "services",
        "not_services",
        "principals",
        "not_principals",
    }
    assert set(defs["AuthzOperation"]["properties"]) == {
        "methods",
        "not_methods",
        "paths",
        "not_paths",
    }
    doc = yaml.safe_load(
        BASE + "security: {mtls: STRICT, cert_ttl: 24h}\npolicies: {backend: {mtls: PERMISSIVE}}\n"
        "authorization:\n  backend:\n    - name: r\n      action: DENY\n"
        "      from: {services: [frontend]}\n      to: {methods: [GET], paths: ['/items*']}\n"
    )
    jsonschema.validate(doc, schema)
    for bad in (
        {**doc, "security": {"mtls": "strict"}},
        {**doc, "authorization": {"backend": [{"name": "r", "from_": {}}]}},
        {**doc, "authorization": {"backend": [{"name": "r", "action": "AUDIT"}]}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_a_refused_policy_name_does_not_hide_the_other_problems() -> None:
    # A name like Web_Reads is refused by its type; the policy then had no name, the whole
    # file failed to validate without it, and every other problem waited for the next run.
    found = problems(
        """\
        security:
          mtls: strict
          cert_ttl: 5s
        authorization:
          backnd:
            - {name: x, from: {services: [frontnd]}}
          backend:
            - {name: Web_Reads, actoin: DENY}
            - {name: Web_Reads, to: {methods: [get]}}
            - {name: ok, from: {principals: ["spiffe://cluster.local/ns/demo/sa/frontend"]}}
        """
    )
    assert found == [
        "mesh.yaml:13:9 security.mtls: unknown value 'strict'; did you mean 'STRICT'?",
        "mesh.yaml:14:13 security.cert_ttl: must be at least 10s",
        "mesh.yaml:16:3 authorization.backnd: unknown service 'backnd'; did you mean 'backend'?",
        "mesh.yaml:17:35 authorization.backnd[0].from.services[0]: unknown service 'frontnd'; "
        "did you mean 'frontend'?",
        "mesh.yaml:19:14 authorization.backend[0].name: expected a name of lower-case letters, "
        "digits and '-' (a DNS label, at most 40)",
        "mesh.yaml:19:25 authorization.backend[0].actoin: unknown key 'actoin'; did you mean "
        "'action'?",
        "mesh.yaml:20:14 authorization.backend[1].name: expected a name of lower-case letters, "
        "digits and '-' (a DNS label, at most 40)",
        "mesh.yaml:20:40 authorization.backend[1].to.methods[0]: 'get' is not an HTTP method; "
        "methods are upper case, like GET",
        "mesh.yaml:21:38 authorization.backend[2].from.principals[0]: principals are SPIFFE IDs "
        "without the scheme, as Istio writes them; did you mean "
        "'cluster.local/ns/demo/sa/frontend'?",
    ]


def test_a_route_missing_a_required_value_leaves_only_its_section_unchecked() -> None:
    # A fault's delay without `fixed` cannot be stood in for: the routes are left out, and
    # the authorization's rules are still checked.
    found = problems(
        """\
        routes:
          backend:
            - {fault: {delay: {percent: 10}}}
        authorization:
          backend:
            - {name: a, to: {methods: [get]}}
        """
    )
    assert [p.split(" ", 2)[1] for p in found] == [
        "routes.backend[0].fault.delay.fixed:",
        "authorization.backend[0].to.methods[0]:",
    ]


def test_an_exclusion_that_leaves_something_is_no_contradiction() -> None:
    # Istio's idioms: every service of the mesh but one, every path under /a but /a/admin,
    # any verified caller but the gateway.
    mesh = parse(
        """\
        security: {}
        authorization:
          backend:
            - name: a
              from: {principals: ['cluster.local/ns/demo/*'], not_services: [ingress]}
              to: {paths: ['/a*'], not_paths: [/a/admin, '*.png'], not_methods: [DELETE]}
            - {name: b, from: {principals: ['*'], not_principals: ['cluster.local/ns/demo/sa/fr*']}}
            - {name: c, from: {services: [frontend], not_principals: ['*suffix']}}
        """
    )
    assert [p.name for p in mesh.authorization["backend"]] == ["a", "b", "c"]
