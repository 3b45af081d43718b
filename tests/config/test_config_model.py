"""The mesh model: every field parses to its typed, immutable value; defaults are Envoy's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from meshdev.config import parse_mesh
from meshdev.config.durations import format_duration, parse_duration

FULL = b"""\
name: full
base_image: registry.local/python:3.12
services:
  api:
    build: .
    command: [python, app.py]
    port: 9000
    env: {A: x, N: 3}
    health_path: /healthz
    versions:
      v1: {replicas: 2, env: {VERSION: v1}}
      v2: {replicas: 0, image: api:v2, command: run-v2}
  db:
    image: redis
    replicas: 3
ingress:
  port: 8100
  routes:
    - {name: api, match: {path: /api, method: [GET, POST]}, to: api}
    - {match: {regex: "/db/.*"}, to: db}
routes:
  api:
    - name: canary
      match:
        prefix: /items
        method: GET
        headers:
          x-canary: {exact: 1}
          x-user: {prefix: admin-}
          x-trace: {regex: "[a-f0-9]+"}
          x-debug: {present: true}
      to: {api.v1: 90, api.v2: 10}
      timeout: 1500ms
      retries:
        attempts: 3
        retry_on:
          [5xx, gateway-error, reset, connect-failure, retriable-4xx, retriable-status-codes]
        retriable_status_codes: [409, 429]
        per_try_timeout: 250ms
      fault:
        abort: {percent: 5.5, status: 503}
        delay: {percent: 10, fixed: 300ms}
      rate_limit: {requests_per_second: 50, burst: 10}
    - {to: api.v1}
policies:
  api:
    lb: ring_hash
    hash_header: x-user
    connect_timeout: 250ms
    circuit_breaker:
      {max_connections: 50, max_pending_requests: 0, max_requests: 20, max_retries: 0}
    outlier_detection:
      consecutive_5xx: 3
      interval: 1m
      base_ejection_time: 30s
      max_ejection_percent: 50
"""


def test_every_field_parses() -> None:
    mesh = parse_mesh(FULL, "mesh.yaml")
    assert mesh.name == "full"
    assert mesh.base_image == "registry.local/python:3.12"
    api = mesh.services["api"]
    assert api.build == "."
    assert api.command == ("python", "app.py")
    assert api.port == 9000
    assert dict(api.env) == {"A": "x", "N": "3"}
    assert api.health_path == "/healthz"
    assert api.versions["v1"].replicas == 2
    assert dict(api.versions["v1"].env) == {"VERSION": "v1"}
    assert api.versions["v2"].image == "api:v2"
    assert api.versions["v2"].command == "run-v2"
    assert api.pod_count() == 2
    assert mesh.services["db"].pod_count() == 3
    assert mesh.pod_count() == 2 + 3 + 1
    assert mesh.ingress is not None
    assert mesh.ingress.port == 8100
    first = mesh.ingress.routes[0]
    assert (first.name, first.match.path, first.match.method, first.to) == (
        "api",
        "/api",
        ("GET", "POST"),
        "api",
    )
    assert mesh.ingress.routes[1].match.regex == "/db/.*"
    route = mesh.routes["api"][0]
    assert route.name == "canary"
    assert route.match.prefix == "/items"
    assert route.match.method == "GET"
    headers = route.match.headers
    assert headers["x-canary"].exact == "1"
    assert headers["x-user"].prefix == "admin-"
    assert headers["x-trace"].regex == "[a-f0-9]+"
    assert headers["x-debug"].present is True
    assert dict(route.to) == {"api.v1": 90, "api.v2": 10}  # type: ignore[arg-type]
    assert route.timeout == pytest.approx(1.5)
    assert route.retries is not None
    assert route.retries.attempts == 3
    assert "retriable-4xx" in route.retries.retry_on
    assert route.retries.retriable_status_codes == (409, 429)
    assert route.retries.per_try_timeout == pytest.approx(0.25)
    assert route.fault is not None and route.fault.abort is not None
    assert route.fault.abort.percent == 5.5
    assert route.fault.abort.status == 503
    assert route.fault.delay is not None and route.fault.delay.fixed == pytest.approx(0.3)
    assert route.rate_limit is not None
    assert (route.rate_limit.requests_per_second, route.rate_limit.burst) == (50, 10)
    assert mesh.routes["api"][1].to == "api.v1"
    pol = mesh.policies["api"]
    assert (pol.lb, pol.hash_header, pol.connect_timeout) == ("ring_hash", "x-user", 0.25)
    cb = pol.circuit_breaker
    assert (cb.max_connections, cb.max_pending_requests, cb.max_requests, cb.max_retries) == (
        50,
        0,
        20,
        0,
    )
    od = pol.outlier_detection
    assert od is not None
    assert (od.consecutive_5xx, od.interval, od.base_ejection_time, od.max_ejection_percent) == (
        3,
        60.0,
        30.0,
        50,
    )
    assert mesh.route_count() == 4


def test_defaults_follow_envoy() -> None:
    mesh = parse_mesh(
        b"name: d\nservices: {a: {command: x}}\nroutes: {a: [{retries: {}}]}\n"
        b"policies: {a: {outlier_detection: {}}}\n",
        "mesh.yaml",
    )
    route = mesh.routes["a"][0]
    assert route.timeout == 15.0  # Envoy's route timeout
    assert route.to is None  # the destination itself
    assert route.retries is not None and route.retries.attempts == 1  # Envoy's num_retries
    pol = mesh.policies["a"]
    assert pol.lb == "round_robin"
    assert pol.connect_timeout == 5.0
    cb = pol.circuit_breaker
    assert (cb.max_connections, cb.max_pending_requests, cb.max_requests, cb.max_retries) == (
        1024,
        1024,
        1024,
        3,
    )
    od = pol.outlier_detection
    assert od is not None
    assert (od.consecutive_5xx, od.interval, od.base_ejection_time, od.max_ejection_percent) == (
        5,
        10.0,
        30.0,
        10,
    )
    svc = mesh.services["a"]
    assert (svc.port, svc.pod_count(), svc.health_path) == (8080, 1, None)
    assert mesh.ingress is None


def test_model_is_immutable() -> None:
    mesh = parse_mesh(FULL, "mesh.yaml")
    with pytest.raises(ValidationError):
        mesh.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        mesh.services["new"] = mesh.services["api"]  # type: ignore[index]
    with pytest.raises(TypeError):
        mesh.services["api"].env["A"] = "changed"  # type: ignore[index]
    assert isinstance(mesh.routes["api"], tuple)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0), ("1.5s", 1.5), ("500us", 0.0005)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["2", "2 sec", "-1s", "s", "", "1d"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 250ms or 2s"):
        parse_duration(bad)
