"""gRPC's rules in the proxy on plain data: grpc-timeout parsing and capping, the grpc-status
of an answer, Envoy's HTTP -> gRPC status map for local replies, and gRPC retry_on."""

from __future__ import annotations

import pytest

from meshdev.common.sidecar_config import RetryPolicy
from meshdev.sidecar.http import EMPTY_BODY, Request
from meshdev.sidecar.proxy import grpc
from meshdev.sidecar.router.retry import RetryRules


def call(headers: list[tuple[str, str]]) -> Request:
    return Request("POST", "/a.B/C", "/a.B/C", "", "b", headers, True, EMPTY_BODY, ("", 0), 0.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1S", 1.0), ("250m", 0.25), ("2M", 120.0), ("1H", 3600.0), ("100u", 1e-4), ("5n", 5e-9)],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert grpc.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "1s", "-1S", "123456789S", "1.5S"])
def test_malformed_grpc_timeouts_are_ignored(value: str) -> None:
    assert grpc.parse_timeout(value) is None
    assert grpc.deadline(call([("grpc-timeout", value)]), 15.0) == 15.0


def test_grpc_timeout_caps_the_route_timeout_only_when_shorter() -> None:
    assert grpc.deadline(call([("grpc-timeout", "300m")]), 15.0) == pytest.approx(0.3)
    assert grpc.deadline(call([("grpc-timeout", "60S")]), 15.0) == 15.0
    # A route without a timeout (0) takes the call's.
    assert grpc.deadline(call([("grpc-timeout", "2S")]), 0.0) == 2.0
    assert grpc.deadline(call([]), 15.0) == 15.0


def test_local_replies_map_as_envoy() -> None:
    def status(http: int) -> str:
        return dict(grpc.local_reply(http, b""))["grpc-status"]

    assert status(503) == "14"
    assert status(429) == "14"
    assert status(404) == "12"
    assert status(504) == "4"  # the route timeout: DEADLINE_EXCEEDED
    assert status(418) == "2"
    # grpc-message: printable ASCII (space included) as is, the rest percent-encoded.
    assert dict(grpc.local_reply(503, "no upstream: ü".encode(), 9)) == {
        "content-type": "application/grpc",
        "grpc-status": "9",
        "grpc-message": "no upstream: %C3%BC",
    }


def test_answer_status_reads_trailers_then_head() -> None:
    assert grpc.answer_status([], [("grpc-status", "5")], 200) == 5
    assert grpc.answer_status([("grpc-status", "14")], None, 200) == 14
    assert grpc.answer_status([], None, 503) == 14
    assert grpc.answer_status([], None, 200) == 0


def test_grpc_retry_on_reads_the_head() -> None:
    rules = RetryRules(RetryPolicy(attempts=2, retry_on=("unavailable", "deadline-exceeded")))
    assert rules.retry_grpc([("grpc-status", "14")])
    assert rules.retry_grpc([("grpc-status", "4")])
    assert not rules.retry_grpc([("grpc-status", "13")])
    assert not rules.retry_grpc([])
    assert not rules.retry_status(200)
    assert not RetryRules(RetryPolicy(attempts=2, retry_on=("5xx",))).retry_grpc(
        [("grpc-status", "14")]
    )
