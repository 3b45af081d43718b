"""Local replies: the answers the proxy makes itself, with Envoy's bodies, headers and flags."""

from __future__ import annotations

from typing import Final

from meshdev.sidecar.http import ResponseWriter
from meshdev.sidecar.proxy import grpc
from meshdev.sidecar.proxy.accesslog import (
    UPSTREAM_CONNECTION_FAILURE,
    UPSTREAM_CONNECTION_TERMINATION,
    UPSTREAM_OVERFLOW,
    UPSTREAM_REQUEST_TIMEOUT,
    Record,
)
from meshdev.sidecar.router.retry import Failure
from meshdev.sidecar.stats.sets import StatusCounters

_TEXT: Final = ("content-type", "text/plain")
_OVERLOADED: Final = ("x-envoy-overloaded", "true")
_RESET_BEFORE_HEADERS: Final = b"upstream connect error or disconnect/reset before headers. "
_OVERFLOW_BODY: Final = _RESET_BEFORE_HEADERS + b"reset reason: overflow"
TIMEOUT_BODY: Final = b"upstream request timeout"


class Reply:
    """A local answer (no upstream response to relay); `grpc_status` is what a gRPC caller
    gets instead of the mapped HTTP status (a fault's grpc_status abort)."""

    __slots__ = ("body", "grpc_status", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]] | None = None,
        grpc_status: int | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []
        self.grpc_status = grpc_status


async def send_local(w: ResponseWriter, rec: Record, reply: Reply) -> None:
    if w._req.grpc:
        # As Envoy's sendLocalReply to a gRPC caller: HTTP 200, trailers-only, grpc-status.
        rec.status = 200
        rec.bytes_sent = 0
        head = grpc.local_reply(reply.status, reply.body, reply.grpc_status)
        await w.start(200, [*head, *reply.headers])
        await w.end()
        return
    rec.status = reply.status
    body = reply.body
    rec.bytes_sent = len(body)
    await w.start(reply.status, [_TEXT, ("content-length", str(len(body))), *reply.headers])
    if body:
        await w.write(body)
    await w.end()


def overflow_reply(rec: Record, answers: StatusCounters) -> Reply:
    """A circuit breaker's overflow: 503 at once, `UO`, `x-envoy-overloaded: true`; charged
    to the cluster's `answers` (its `upstream`, or `upstream_internal`)."""
    answers.charge(503)
    rec.add_flag(UPSTREAM_OVERFLOW)
    return Reply(503, _OVERFLOW_BODY, [_OVERLOADED])


def failure_reply(failure: Failure, rec: Record, answers: StatusCounters) -> Reply:
    """The answer to a last try that ended without an upstream answer (charged as
    `overflow_reply` charges)."""
    if failure is Failure.PER_TRY_TIMEOUT:
        answers.charge(504)
        rec.add_flag(UPSTREAM_REQUEST_TIMEOUT)
        return Reply(504, TIMEOUT_BODY)
    answers.charge(503)
    if failure is Failure.CONNECT_FAILURE:
        rec.add_flag(UPSTREAM_CONNECTION_FAILURE)
        reason = b"connection failure"
    else:
        rec.add_flag(UPSTREAM_CONNECTION_TERMINATION)
        reason = b"connection termination"
    retried = b"retried and the latest " if rec.attempts > 1 else b""
    return Reply(503, _RESET_BEFORE_HEADERS + retried + b"reset reason: " + reason)
