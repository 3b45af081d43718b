"""`protocol: tcp` services in mesh.yaml: what they accept, and every misuse located.

A tcp destination is Envoy's tcp_proxy: its one route may split connections among subsets,
and nothing that reads a request (matches, retries, faults, rate limits, timeouts) applies.
Its port is listened on in every other pod, so it must not meet another service's app port.
"""

from __future__ import annotations

import textwrap

import pytest

from meshdev.config import MeshInvalid, parse_mesh
from meshdev.config.model import env_prefix

BASE = """\
name: demo
services:
  web:
    command: python app.py
  cache:
    command: redis-server --port $PORT
    port: 6379
    protocol: tcp
    versions: {a: {}, b: {}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(textwrap.dedent(text).encode(), "mesh.yaml")
    return [str(p) for p in info.value.problems]


def test_protocol_defaults_to_http_and_takes_tcp() -> None:
    extra = (
        "routes:\n  cache:\n    - {to: {cache.a: 90, cache.b: 10}}\n"
        "policies:\n  cache:\n    lb: ring_hash\n    idle_timeout: 10m\n"
        "    circuit_breaker: {max_connections: 10}\n"
        "    outlier_detection: {consecutive_5xx: 3}\n"
    )
    mesh = parse_mesh((BASE + extra).encode(), "mesh.yaml")
    assert mesh.services["web"].protocol == "http"
    assert mesh.services["cache"].protocol == "tcp"
    assert mesh.policies["cache"].idle_timeout == 600.0
    # A route with nothing but its destinations is what a tcp destination may have.
    assert mesh.routes["cache"][0].to == {"cache.a": 90, "cache.b": 10}


def test_unknown_protocol_is_located() -> None:
    found = problems("name: d\nservices:\n  a: {command: x, protocol: udp}\n")
    assert found == ["mesh.yaml:3:29 services.a.protocol: expected one of: http, http2, grpc, tcp"]


def test_env_prefix_is_kubernetes_spelling() -> None:
    assert env_prefix("my-db") == "MY_DB"
    assert env_prefix("redis") == "REDIS"


# (what is wrong, YAML appended to BASE, the expected "line:col path: message" fragment)
CASES = [
    (
        "http match on tcp",
        "routes:\n  cache:\n    - match: {prefix: /}\n",
        "mesh.yaml:12:14 routes.cache[0].match: cache is a tcp service: connections are "
        "relayed as bytes (Envoy's tcp_proxy), with no path or method to match",
    ),
    (
        "method match on tcp",
        "routes:\n  cache:\n    - match: {method: GET}\n",
        "mesh.yaml:12:14 routes.cache[0].match: cache is a tcp service",
    ),
    (
        "header match on tcp",
        "routes:\n  cache:\n    - match: {headers: {x: {exact: a}}}\n",
        "mesh.yaml:12:24 routes.cache[0].match.headers: cache is a tcp service: connections "
        "are relayed as bytes (Envoy's tcp_proxy), with no headers to match",
    ),
    (
        "retries on tcp",
        "routes:\n  cache:\n    - retries: {attempts: 2}\n",
        "mesh.yaml:12:16 routes.cache[0].retries: cache is a tcp service: connections are "
        "relayed as bytes (Envoy's tcp_proxy), with no request to retry (a failed connect "
        "closes the connection)",
    ),
    (
        "fault on tcp",
        "routes:\n  cache:\n    - fault: {abort: {percent: 5, status: 503}}\n",
        "mesh.yaml:12:14 routes.cache[0].fault: cache is a tcp service: connections are "
        "relayed as bytes (Envoy's tcp_proxy), with no request to abort or delay",
    ),
    (
        "rate limit on tcp",
        "routes:\n  cache:\n    - rate_limit: {requests_per_second: 5}\n",
        "mesh.yaml:12:19 routes.cache[0].rate_limit: cache is a tcp service: connections are "
        "relayed as bytes (Envoy's tcp_proxy), with no request to count",
    ),
    (
        "timeout on tcp",
        "routes:\n  cache:\n    - timeout: 2s\n",
        "mesh.yaml:12:16 routes.cache[0].timeout: cache is a tcp service: connections are "
        "relayed as bytes (Envoy's tcp_proxy), with no request to time; "
        "policies.cache.idle_timeout closes idle ones",
    ),
    (
        "second route on tcp",
        "routes:\n  cache:\n    - to: cache.a\n    - to: cache.b\n",
        "mesh.yaml:13:7 routes.cache[1]: cache is a tcp service: connections are relayed as "
        "bytes (Envoy's tcp_proxy), so its first route takes every connection; give one route",
    ),
    (
        "tcp destination to an http service",
        "routes:\n  cache:\n    - to: {cache.a: 1, web: 1}\n",
        "mesh.yaml:12:24 routes.cache[0].to.web: cache is a tcp service; its connections "
        "cannot go to http web",
    ),
    (
        "http destination to a tcp service",
        "routes:\n  web:\n    - to: cache\n",
        "mesh.yaml:12:11 routes.web[0].to: cache is a tcp service; web's HTTP requests cannot "
        "go to it",
    ),
    (
        "ingress to a tcp service",
        "ingress: {routes: [{to: cache}]}\n",
        "mesh.yaml:10:25 ingress.routes[0].to: cache is a tcp service: the gateway routes "
        "HTTP by path, and other pods reach cache at $CACHE_SERVICE_HOST instead",
    ),
    (
        "hash header on tcp",
        "policies:\n  cache: {lb: ring_hash, hash_header: x-user}\n",
        "mesh.yaml:11:39 policies.cache.hash_header: cache is a tcp service: connections have "
        "no headers; lb: ring_hash hashes the client's address (Envoy's hash_policy source_ip)",
    ),
    (
        "negative idle timeout",
        "policies:\n  cache: {idle_timeout: -1s}\n",
        "mesh.yaml:11:25 policies.cache.idle_timeout: expected a duration like 250ms or 2s",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tcp_misuse_is_located(extra: str, expected: str) -> None:
    found = problems(BASE + extra)
    assert any(expected in p for p in found), found


def test_ring_hash_on_tcp_needs_no_header() -> None:
    parse_mesh((BASE + "policies:\n  cache: {lb: ring_hash}\n").encode(), "mesh.yaml")


def test_health_path_on_tcp() -> None:
    found = problems(BASE.replace("    protocol: tcp\n", "    protocol: tcp\n    health_path: /\n"))
    assert found == [
        "mesh.yaml:9:18 services.cache.health_path: a tcp service is not asked over HTTP: it "
        "is ready when its port accepts"
    ]


def test_tcp_port_clashing_with_the_sidecar() -> None:
    found = problems("name: d\nservices:\n  db: {command: x, port: 15001, protocol: tcp}\n")
    assert found == [
        "mesh.yaml:3:26 services.db.port: port 15001 clashes with the sidecar's outbound port "
        "in the same pod"
    ]


def test_tcp_port_clashing_with_another_app_port() -> None:
    # web's pods would listen for cache on their own address at 8080, where web's app is.
    found = problems(BASE.replace("port: 6379", "port: 8080"))
    assert found == [
        "mesh.yaml:7:11 services.cache.port: port 8080 is also web's port: web's pods reach "
        "tcp service cache at their own address on this port, where web's app listens"
    ]


def test_two_tcp_services_on_one_port_are_reported_once() -> None:
    text = BASE + "  db:\n    command: pg\n    port: 6379\n    protocol: tcp\n"
    assert problems(text) == [
        "mesh.yaml:7:11 services.cache.port: port 6379 is also db's port: db's pods reach "
        "tcp service cache at their own address on this port, where db's app listens"
    ]


def test_http_services_may_share_a_port() -> None:
    text = "name: d\nservices:\n  a: {command: x}\n  b: {command: y}\n"
    parse_mesh(text.encode(), "mesh.yaml")


def test_tcp_port_may_equal_the_ingress_port() -> None:
    # The gateway has no app, so no tcp listener shares its address: nothing to clash with.
    extra = "ingress: {port: 6379, routes: [{to: web}]}\n"
    parse_mesh((BASE + extra).encode(), "mesh.yaml")
