"""Every error class of mesh.yaml: its message and its line:col."""

from __future__ import annotations

import textwrap

import pytest

from meshdev.config import MeshInvalid, parse_mesh

BASE = """\
name: demo
services:
  api:
    command: python app.py
    versions: {v1: {replicas: 2}, v2: {}}
  web:
    image: nginx
"""


def problems(text: str) -> list[str]:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(textwrap.dedent(text).encode(), "mesh.yaml")
    return [str(p) for p in info.value.problems]


# (what is wrong, extra YAML appended to BASE, expected "line:col path: message" fragment)
CASES = [
    (
        "bad duration",
        "routes:\n  api:\n    - {timeout: 2}\n",
        "mesh.yaml:10:17 routes.api[0].timeout: expected a duration like 250ms or 2s",
    ),
    (
        "unknown key",
        "routes:\n  api:\n    - {timout: 2s}\n",
        "mesh.yaml:10:8 routes.api[0].timout: unknown key 'timout'; did you mean 'timeout'?",
    ),
    (
        "unknown top-level key",
        "polices: {}\n",
        "mesh.yaml:8:1 polices: unknown key 'polices'; did you mean 'policies'?",
    ),
    (
        "unknown enum value",
        "policies:\n  api: {lb: least_requests}\n",
        "mesh.yaml:9:13 policies.api.lb: unknown value 'least_requests'; "
        "did you mean 'least_request'?",
    ),
    (
        "percent over 100",
        "routes:\n  api:\n    - fault: {abort: {percent: 150, status: 503}}\n",
        "mesh.yaml:10:32 routes.api[0].fault.abort.percent: must be at most 100",
    ),
    (
        "negative percent",
        "routes:\n  api:\n    - fault: {delay: {percent: -1, fixed: 1s}}\n",
        "mesh.yaml:10:32 routes.api[0].fault.delay.percent: must be at least 0",
    ),
    (
        "zero limit",
        "policies:\n  api: {circuit_breaker: {max_requests: 0}}\n",
        "mesh.yaml:9:41 policies.api.circuit_breaker.max_requests: must be at least 1",
    ),
    (
        "negative retries",
        "routes:\n  api:\n    - retries: {attempts: -1}\n",
        "mesh.yaml:10:27 routes.api[0].retries.attempts: must be at least 0",
    ),
    (
        "zero rate",
        "routes:\n  api:\n    - rate_limit: {requests_per_second: 0}\n",
        "mesh.yaml:10:41 routes.api[0].rate_limit.requests_per_second: must be greater than 0",
    ),
    (
        "missing required",
        "ingress: {routes: [{match: {prefix: /}}]}\n",
        "mesh.yaml:8:20 ingress.routes[0].to: required key is missing",
    ),
    (
        "empty ingress routes",
        "ingress: {routes: []}\n",
        "mesh.yaml:8:19 ingress.routes: must not be empty",
    ),
    ("wrong type list", "routes:\n  api: {name: x}\n", "mesh.yaml:9:8 routes.api: expected a list"),
    (
        "wrong type mapping",
        "policies:\n  api: [1]\n",
        "mesh.yaml:9:8 policies.api: expected a mapping of keys to values",
    ),
    (
        "duplicate key",
        "services:\n  x: {command: a}\n",
        "mesh.yaml:8:1 services: duplicate key 'services' (first at line 2)",
    ),
    (
        "wrong type number",
        "routes:\n  api:\n    - {retries: {attempts: two}}\n",
        "mesh.yaml:10:28 routes.api[0].retries.attempts: expected a whole number",
    ),
    (
        "wrong type bool",
        "routes:\n  api:\n    - match: {headers: {x: {present: maybe}}}\n",
        "mesh.yaml:10:38 routes.api[0].match.headers.x.present: expected true or false",
    ),
    (
        "unknown service in route",
        "routes:\n  api:\n    - {to: apii}\n",
        "mesh.yaml:10:12 routes.api[0].to: unknown service 'apii'; did you mean 'api'?",
    ),
    (
        "unknown subset",
        "routes:\n  api:\n    - {to: {api.v1: 1, api.v3: 1}}\n",
        "mesh.yaml:10:24 routes.api[0].to.api.v3: unknown version 'v3' of api; known: v1, v2",
    ),
    (
        "subset of unversioned",
        "routes:\n  web:\n    - {to: web.v1}\n",
        "mesh.yaml:10:12 routes.web[0].to: service 'web' has no versions",
    ),
    (
        "unknown destination key",
        "routes:\n  apx: []\n",
        "mesh.yaml:9:3 routes.apx: unknown service 'apx'; did you mean 'api'?",
    ),
    (
        "unknown policy key",
        "policies:\n  wbe: {}\n",
        "mesh.yaml:9:3 policies.wbe: unknown service 'wbe'; did you mean 'web'?",
    ),
    (
        "weights sum to zero",
        "routes:\n  api:\n    - {to: {api.v1: 0, api.v2: 0}}\n",
        "mesh.yaml:10:12 routes.api[0].to: weights sum to 0",
    ),
    (
        "negative weight",
        "routes:\n  api:\n    - {to: {api.v1: -5}}\n",
        "mesh.yaml:10:21 routes.api[0].to.api.v1: must be at least 0",
    ),
    (
        "duplicate route names",
        "routes:\n  api:\n    - {name: a}\n    - {name: a}\n",
        "mesh.yaml:11:14 routes.api[1].name: duplicate route name 'a' (also route 0)",
    ),
    (
        "bad regex",
        "routes:\n  api:\n    - match: {regex: '(['}\n",
        "mesh.yaml:10:22 routes.api[0].match.regex: regex does not compile",
    ),
    (
        "bad header regex",
        "routes:\n  api:\n    - match: {headers: {x: {regex: '*'}}}\n",
        "mesh.yaml:10:36 routes.api[0].match.headers.x.regex: regex does not compile",
    ),
    (
        "two path kinds",
        "routes:\n  api:\n    - match: {prefix: /a, path: /b}\n",
        "mesh.yaml:10:14 routes.api[0].match: give one of prefix, path, regex (not "
        "prefix and path)",
    ),
    (
        "prefix without slash",
        "routes:\n  api:\n    - match: {prefix: items}\n",
        "mesh.yaml:10:23 routes.api[0].match.prefix: must start with /",
    ),
    (
        "lower-case method",
        "routes:\n  api:\n    - match: {method: get}\n",
        "mesh.yaml:10:23 routes.api[0].match.method: 'get' is not an HTTP method",
    ),
    (
        "query string in an exact path",
        "routes:\n  api:\n    - match: {path: '/items?x=1'}\n",
        "mesh.yaml:10:21 routes.api[0].match.path: '/items?x=1' never matches: a path is "
        "compared with the request's path once its query string is removed (as Envoy's); give "
        "'/items'. mesh.yaml has no query-parameter match; only a prefix is compared with the "
        "query included (prefix: /items?x=1 takes /items?x=1&b=2, not /items?b=2&x=1)",
    ),
    (
        "query string in an ingress path",
        "ingress: {routes: [{match: {path: /a?b=c}, to: api}]}\n",
        "mesh.yaml:8:35 ingress.routes[0].match.path: '/a?b=c' never matches",
    ),
    (
        "unknown method",
        "routes:\n  api:\n    - match: {method: FETCH}\n",
        "mesh.yaml:10:23 routes.api[0].match.method: unknown method 'FETCH' (did you mean "
        "'PATCH'?): a sidecar answers any method but the standard ones (GET, HEAD, POST, PUT, "
        "DELETE, CONNECT, OPTIONS, TRACE, PATCH)",
    ),
    (
        "unknown method in a list",
        "routes:\n  api:\n    - match: {method: [GET, POTS]}\n",
        "mesh.yaml:10:29 routes.api[0].match.method[1]: unknown method 'POTS' (did you mean "
        "'POST'?)",
    ),
    (
        "lower-case method in a list",
        "routes:\n  api:\n    - match: {method: [GET, delete]}\n",
        "mesh.yaml:10:29 routes.api[0].match.method[1]: 'delete' is not an HTTP method; "
        "methods are upper case, like DELETE",
    ),
    (
        "unknown method at the ingress",
        "ingress: {routes: [{match: {method: FETCH}, to: api}]}\n",
        "mesh.yaml:8:37 ingress.routes[0].match.method: unknown method 'FETCH' (did you mean "
        "'PATCH'?)",
    ),
    (
        "header with two kinds",
        "routes:\n  api:\n    - match: {headers: {x: {exact: a, prefix: b}}}\n",
        "mesh.yaml:10:28 routes.api[0].match.headers.x: give exactly one of exact, "
        "prefix, regex, present",
    ),
    (
        "port clash with sidecar",
        "ingress: {port: 15000, routes: [{to: api}]}\n",
        "mesh.yaml:8:17 ingress.port: port 15000 clashes with the gateway's admin port",
    ),
    (
        "ring hash without header",
        "policies:\n  api: {lb: ring_hash}\n",
        "mesh.yaml:9:13 policies.api.lb: ring_hash needs hash_header",
    ),
    (
        "per-try longer than route",
        "routes:\n  api:\n    - {timeout: 1s, retries: {per_try_timeout: 2s}}\n",
        "mesh.yaml:10:48 routes.api[0].retries.per_try_timeout: is longer than the route's timeout",
    ),
    (
        "codes without retry_on",
        "routes:\n  api:\n    - retries: {retriable_status_codes: [409]}\n",
        "mesh.yaml:10:41 routes.api[0].retries.retriable_status_codes: has no effect "
        "unless retry_on",
    ),
    (
        "empty fault",
        "routes:\n  api:\n    - fault: {}\n",
        "mesh.yaml:10:14 routes.api[0].fault: give abort, delay, or both",
    ),
    (
        "status out of range",
        "routes:\n  api:\n    - fault: {abort: {percent: 1, status: 700}}\n",
        "mesh.yaml:10:43 routes.api[0].fault.abort.status: must be at most 599",
    ),
    (
        "ingress to unknown",
        "ingress: {routes: [{to: ap}]}\n",
        "mesh.yaml:8:25 ingress.routes[0].to: unknown service 'ap'; did you mean 'api'?",
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [(c[1], c[2]) for c in CASES if c[2]], ids=[c[0] for c in CASES if c[2]]
)
def test_bad_input_is_located(extra: str, expected: str) -> None:
    found = problems(BASE + extra)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    text = BASE + "routes:\n  api:\n    - {timeout: 2, to: nope, timout: 1s}\n  apx: []\n"
    found = problems(text)
    # The type errors of the route come together, with the rules' problems of the rest.
    assert len(found) >= 2
    assert any("timeout" in p for p in found)
    assert any("timout" in p for p in found)


def test_the_rules_problems_come_with_the_type_problems() -> None:
    # `validate` said `apx` (a service that does not exist) only once the timeout was fixed.
    text = BASE + "routes:\n  api:\n    - {timeout: 2}\n  apx: []\n"
    assert problems(text) == [
        "mesh.yaml:10:17 routes.api[0].timeout: expected a duration like 250ms or 2s",
        "mesh.yaml:11:3 routes.apx: unknown service 'apx'; did you mean 'api'?",
    ]


def test_what_a_default_stands_in_for_is_no_rule_problem() -> None:
    # Without its bad `grpc_status` the abort gives nothing: that is not said twice.
    text = BASE + (
        "routes:\n  api:\n    - fault: {abort: {percent: 5, grpc_status: 99}}\n      to: nope\n"
    )
    found = problems(text)
    assert found[0] == "mesh.yaml:10:48 routes.api[0].fault.abort.grpc_status: must be at most 16"
    assert not any("give status" in p for p in found), found


def test_a_missing_required_key_leaves_the_rules_unchecked() -> None:
    # Nothing can stand in for a required key: the type problems alone, none made up.
    text = BASE + "ingress:\n  routes:\n    - {match: {prefix: /}}\n  port: x\n"
    found = problems(text)
    assert all("ingress.routes[0].to" in p or "ingress.port" in p for p in found), found


def test_problems_are_in_file_order() -> None:
    text = BASE + "policies:\n  api: {lb: x}\nroutes:\n  api:\n    - {timeout: 2}\n"
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(text.encode(), "m.yaml")
    lines = [p.pos.line for p in info.value.problems]
    assert lines == sorted(lines)
    assert len(lines) == 2


def test_bad_names() -> None:
    found = problems("name: Demo_1\nservices:\n  API: {command: x, versions: {V1: {}}}\n")
    assert found == [
        f"mesh.yaml:{pos} {path}: expected a name of lower-case letters, digits and '-' "
        "(a DNS label, at most 40)"
        for pos, path in [
            ("1:7", "name"),
            ("3:3", "services.API"),
            ("3:32", "services.API.versions.V1"),
        ]
    ]


def test_versions_must_add_up() -> None:
    text = "name: d\nservices:\n  a:\n    command: x\n    replicas: 4\n    versions: {v1: {}}\n"
    assert problems(text) == [
        "mesh.yaml:5:15 services.a.replicas: replicas is 4 but the versions add up to 1; "
        "give replicas per version"
    ]


def test_service_needs_something_to_run() -> None:
    found = problems("name: d\nservices:\n  a: {port: 80}\n")
    assert found == ["mesh.yaml:3:6 services.a: give build (a folder), image, or command"]


def test_build_and_image_together() -> None:
    found = problems("name: d\nservices:\n  a: {build: ., image: x}\n")
    assert any("services.a.image: give build or image, not both" in p for p in found)


def test_build_folder_must_exist(tmp_path: object) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    (base / "app").mkdir()
    ok = "name: d\nservices:\n  a: {build: ./app}\n"
    parse_mesh(ok.encode(), "mesh.yaml", base)
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(ok.replace("./app", "./nope").encode(), "mesh.yaml", base)
    assert "services.a.build: folder not found" in str(info.value)


def test_app_port_clashing_with_sidecar() -> None:
    found = problems("name: d\nservices:\n  a: {command: x, port: 15001}\n")
    assert found == [
        "mesh.yaml:3:25 services.a.port: port 15001 clashes with the sidecar's outbound port "
        "in the same pod"
    ]


@pytest.mark.parametrize("method", ["GET", "PATCH", "CONNECT", "PURGE", "PROPFIND", "M-SEARCH"])
def test_standard_and_extension_methods_the_sidecars_parse_are_taken(method: str) -> None:
    text = BASE + f"routes:\n  api:\n    - match: {{method: [{method}]}}\n"
    mesh = parse_mesh(text.encode(), "mesh.yaml")
    assert mesh.routes["api"][0].match.method == (method,)


def test_a_prefix_may_hold_a_query_string() -> None:
    # Envoy compares a prefix with the whole request target, query included: it can match.
    text = BASE + "routes:\n  api:\n    - match: {prefix: '/items?x=1'}\n"
    mesh = parse_mesh(text.encode(), "mesh.yaml")
    assert mesh.routes["api"][0].match.prefix == "/items?x=1"
