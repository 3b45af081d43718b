"""Forwarding a routed request: the tries under the route timeout.

    route timeout { circuit breaker (max_requests), pick a host (balancer), send with the
                    per-try timeout, outlier accounting, retry decision + jittered backoff }

The per-try timeout runs until the answer's head arrives; the route timeout covers every try,
the backoffs and the streaming of the answer's body (a timeout after the head has gone out
resets the downstream connection, as Envoy does). A retry refused by `max_retries` is flagged
`UO` and the last upstream answer goes back; retries exhausted is `URX`.

An upgrade request goes to `UpstreamPool.upgrade` instead (a connection of its own) and is
retried like any request, which can only happen before a 101; its 101 stops the route timeout
and hands over to proxy/upgrade.py, holding the breaker's request slot until the stream ends.

No task is created per request (timeouts are timer handles that cancel the handler's own
task), and the request body goes to the pool as a stream (or, when the route retries, as bytes
read up to RETRY_BUFFER_LIMIT; a longer body is streamed and not retried, as Envoy does past
its buffer limit, counting `retry_or_shadow_abandoned`).
"""

from __future__ import annotations

import asyncio
import time
from asyncio import CancelledError, current_task
from typing import Final

from meshdev.common.backoff import Backoff
from meshdev.sidecar.compiled import ClusterEntry, RouteEntry
from meshdev.sidecar.http import BodyStream, Request, ResponseWriter
from meshdev.sidecar.proxy import grpc
from meshdev.sidecar.proxy.accesslog import (
    NO_HEALTHY_UPSTREAM,
    UPSTREAM_CONNECTION_FAILURE,
    UPSTREAM_CONNECTION_TERMINATION,
    UPSTREAM_OVERFLOW,
    UPSTREAM_REQUEST_TIMEOUT,
    UPSTREAM_RETRY_LIMIT_EXCEEDED,
    Record,
)
from meshdev.sidecar.proxy.headers import HeaderView, response_headers, upstream_headers, vetoed
from meshdev.sidecar.proxy.relay import BODILESS, stream
from meshdev.sidecar.proxy.replies import (
    TIMEOUT_BODY,
    Reply,
    failure_reply,
    overflow_reply,
    send_local,
)
from meshdev.sidecar.proxy.upgrade import relay_upgraded
from meshdev.sidecar.router.deadline import Deadline, Deadlines
from meshdev.sidecar.router.retry import Failure, RetryRules
from meshdev.sidecar.stats.sets import ClusterStatSet, RouteStatSet, StatusCounters
from meshdev.sidecar.upstream import (
    ConnectFailure,
    PendingOverflow,
    UpgradedResponse,
    UpstreamReset,
)
from meshdev.sidecar.upstream.breaker import Breaker

RETRY_BUFFER_LIMIT: Final = 1024 * 1024  # Envoy's per_connection_buffer_limit_bytes default
# Latencies are timed on this clock, not loop.time(): uvloop's counts whole milliseconds, which
# would put every sub-millisecond request into the 0 or 1 ms bucket of the histograms.
# Deadlines stay on loop.time(), the clock their sweep reads.
now: Final = time.monotonic
# What ended a try without an answer, as the flag on its span (the request's own flags say
# what became of it, once all tries are done).
_FAILURE_FLAGS: Final = {
    Failure.CONNECT_FAILURE: UPSTREAM_CONNECTION_FAILURE,
    Failure.RESET: UPSTREAM_CONNECTION_TERMINATION,
    Failure.PER_TRY_TIMEOUT: UPSTREAM_REQUEST_TIMEOUT,
}


async def forward(
    req: Request,
    w: ResponseWriter,
    rec: Record,
    route: RouteEntry,
    loop: asyncio.AbstractEventLoop,
    deadlines: Deadlines,
) -> None:
    cluster = route.clusters.pick()
    cs = cluster.stats
    retry = route.retry
    upgrade = req.upgrade
    body: bytes | BodyStream | None = None
    # An upgrade request's body, if it declared one, is the upgraded stream's (as in Envoy).
    if req.body.has_body and upgrade is None:
        body = req.body
        if retry is not None and retry.num_retries > 0:
            data = await req.body.read_all(RETRY_BUFFER_LIMIT)
            if data is None:
                cs.retry_or_shadow_abandoned.value += 1
                retry = None
            else:
                body = data
    up_headers, rec.request_id, internal = upstream_headers(req)
    trace = rec.trace
    if trace is not None:
        trace.cluster = cluster.name
        if not trace.per_try:
            # An inbound hop's app gets the SERVER span as its parent.
            up_headers = trace.upstream_headers(up_headers)
    # Envoy's router charges each answer under the request's category too.
    answers = cs.upstream_internal if internal else cs.upstream
    if upgrade is not None:
        # Hop-by-hop, so stripped above like any; an upgrade passes it on (Envoy's
        # upgrade_configs, which Istio enables for websocket on every HTTP route).
        up_headers.append(("upgrade", req.header("upgrade") or upgrade))
    # With its loop given, current_task skips get_running_loop, which on Python 3.11
    # costs a getpid() system call: one of the five a proxied request made.
    task = current_task(loop)
    assert task is not None
    timeout = route.timeout
    if req.grpc:
        # A call's own grpc-timeout caps the route's (Envoy's max_grpc_timeout behaviour).
        timeout = grpc.deadline(req, timeout)
    timer = deadlines.arm(task, loop.time() + timeout) if timeout > 0 else None
    try:
        reply = await _tries(
            req,
            w,
            rec,
            route,
            retry,
            cluster,
            answers,
            up_headers,
            body,
            upgrade is not None,
            task,
            timer,
            loop,
            deadlines,
        )
    except CancelledError:
        if timer is None or not timer.fired:
            raise
        timer.absorb()
        # The route timeout: Envoy answers 504 unless the answer has already started.
        cs.upstream_rq_timeout.value += 1
        route.stats.upstream_rq_timeout.value += 1
        answers.charge(504)
        rec.add_flag(UPSTREAM_REQUEST_TIMEOUT)
        if w.started:
            w.abort()
            return
        reply = Reply(504, TIMEOUT_BODY)
    finally:
        if timer is not None:
            deadlines.disarm(timer)
    if reply is not None:
        # A request answered before its first try has no attempt count to send (Envoy's
        # attempt_count_ of 0).
        if rec.attempts and route.attempt_count:
            reply.headers.append(("x-envoy-attempt-count", str(rec.attempts)))
        await send_local(w, rec, reply)


async def _tries(
    req: Request,
    w: ResponseWriter,
    rec: Record,
    route: RouteEntry,
    retry: RetryRules | None,
    cluster: ClusterEntry,
    answers: StatusCounters,
    up_headers: list[tuple[str, str]],
    body: bytes | BodyStream | None,
    upgrade: bool,
    task: asyncio.Task[object],
    route_timer: Deadline | None,
    loop: asyncio.AbstractEventLoop,
    deadlines: Deadlines,
) -> Reply | None:
    """Run the tries; relay the final upstream answer, or return a local one."""
    cs = cluster.stats
    rs = route.stats
    breaker = cluster.breaker
    detector = cluster.detector
    balancer = cluster.balancer
    retries_left = retry.num_retries if retry is not None else 0
    per_try = retry.per_try_timeout if retry is not None else None
    backoff: Backoff | None = None
    hash_key = HeaderView(req.headers).get(cluster.hash_header) if cluster.hash_header else None
    method = req.method
    target = req.origin_form
    connect_timeout = cluster.connect_timeout
    # A CLIENT span per try (outbound and ingress hops of a sampled request), else None.
    trace = rec.trace if rec.trace is not None and rec.trace.per_try else None
    while True:
        host = balancer.pick(hash_key)
        if host is None:
            cs.upstream_cx_none_healthy.value += 1
            rec.add_flag(NO_HEALTHY_UPSTREAM)
            return Reply(503, b"no healthy upstream")
        while host.successor is not None:
            # The request read a config older than its endpoint's pool (TLS was turned on or
            # off since): the endpoint is reached as the newest config says.
            host = host.successor
        if not breaker.try_request():
            return overflow_reply(rec, answers)
        rec.attempts += 1
        rec.upstream = host.key
        cs.upstream_rq_total.value += 1
        rs.upstream_rq_total.value += 1
        host.rq_total += 1
        host.rq_active += 1
        held = True
        t0 = now()
        sent = up_headers if trace is None else trace.begin_try(up_headers)
        try:
            failure: Failure | None = None
            try_timer = deadlines.arm(task, loop.time() + per_try) if per_try is not None else None
            try:
                if upgrade:
                    resp = await host.pool.upgrade(
                        method, target, sent, connect_timeout=connect_timeout
                    )
                else:
                    resp = await host.pool.request(
                        method, target, sent, body, connect_timeout=connect_timeout
                    )
            except ConnectFailure:
                failure = Failure.CONNECT_FAILURE
            except UpstreamReset:
                failure = Failure.RESET
                cs.upstream_rq_rx_reset.value += 1
            except PendingOverflow:
                # A local overflow: never retried, never held against the host.
                cs.upstream_rq_pending_overflow.value += 1
                return overflow_reply(rec, answers)
            except CancelledError:
                if (
                    try_timer is None
                    or not try_timer.fired
                    or (route_timer is not None and route_timer.fired)
                ):
                    # The route timeout (or the client leaving) struck during this try.
                    # Envoy holds a route timeout against the host (LocalOriginTimeout);
                    # a client that leaves says nothing about it, and counting it would
                    # eject a healthy host whenever clients hang up on slow answers.
                    # Either way the exchange is reset by us.
                    cs.upstream_rq_tx_reset.value += 1
                    if route_timer is not None and route_timer.fired:
                        host.rq_error += 1
                        if detector is not None:
                            detector.report(host, 504)
                    raise
                try_timer.absorb()
                failure = Failure.PER_TRY_TIMEOUT
                cs.upstream_rq_per_try_timeout.value += 1
                cs.upstream_rq_tx_reset.value += 1
            finally:
                if try_timer is not None:
                    deadlines.disarm(try_timer)

            if trace is not None and failure is not None:
                trace.end_try(0, _FAILURE_FLAGS[failure], host.key, rec.request_id)
            if failure is None:
                status = resp.status
                if detector is not None:
                    detector.report(host, status)
                retriable = retry is not None and (
                    (retry.retry_status(status) and not vetoed(resp.headers))
                    or (req.grpc and retry.retry_grpc(resp.headers))
                )
            else:
                host.rq_error += 1
                if detector is not None:
                    detector.report(host, 504 if failure is Failure.PER_TRY_TIMEOUT else 503)
                retriable = retry is not None and retry.retry_failure(failure)
            if retriable:
                assert retry is not None
                if retries_left > 0:
                    retries_left -= 1
                    if breaker.try_retry():
                        if trace is not None and failure is None:
                            trace.end_try(status, "", host.key, rec.request_id)
                        if failure is None:
                            # The answer is dropped for the retry: an error of its host, and
                            # charged to the cluster's `retry.` scope instead of `upstream_rq_`.
                            host.rq_error += 1
                            cs.retry.charge(status)
                            resp.close()
                        held = False
                        host.rq_active -= 1
                        breaker.end_request()
                        backoff = backoff or Backoff(retry.base_interval, retry.max_interval)
                        await _backoff(breaker, backoff, cs, rs)
                        continue
                    rec.add_flag(UPSTREAM_OVERFLOW)
                else:
                    cs.upstream_rq_retry_limit_exceeded.value += 1
                    rec.add_flag(UPSTREAM_RETRY_LIMIT_EXCEEDED)
            elif failure is None and rec.attempts > 1:
                cs.upstream_rq_retry_success.value += 1
            if failure is not None:
                return failure_reply(failure, rec, answers)

            if status >= 500:
                host.rq_error += 1
            else:
                host.rq_success += 1
            answers.charge(status)
            rs.upstream.charge(status)
            rec.status = status
            out = response_headers(
                resp, (now() - t0) * 1000.0, rec.attempts if route.attempt_count else None
            )
            if upgrade and isinstance(resp, UpgradedResponse):
                # Timed to the 101: a stream's life is no latency (Envoy's upstream_rq_time
                # spans the stream; the dashboard reads this histogram as the route's latency).
                elapsed = (now() - t0) * 1000.0
                cs.upstream_rq_time.record(elapsed)
                rs.upstream_rq_time.record(elapsed)
                if trace is not None:
                    # The try's span ends at its 101; the stream's life is the request's span.
                    trace.end_try(status, "", host.key, rec.request_id)
                assert resp.tunnel is not None  # UpstreamPool.upgrade raises otherwise
                await relay_upgraded(
                    w,
                    rec,
                    resp.tunnel,
                    resp.headers,
                    out,
                    route_timer,
                    deadlines,
                    cluster.stream_idle_timeout,
                )
                return None
            data = None if method == "HEAD" else resp.buffered()
            if data is not None and status >= 200 and status not in BODILESS:
                # The whole answer is here already: one write downstream.
                out.append(("content-length", str(len(data))))
                rec.bytes_sent = len(data)
                await w.start(status, out)
                if data:
                    await w.write(data)
                await w.end(resp.trailers)
            else:
                await stream(w, rec, resp, out, data)
            if req.grpc:
                cs.grpc.charge(target, grpc.answer_status(resp.headers, resp.trailers, status))
            elapsed = (now() - t0) * 1000.0
            cs.upstream_rq_time.record(elapsed)
            rs.upstream_rq_time.record(elapsed)
            return None
        finally:
            if held:
                host.rq_active -= 1
                breaker.end_request()


async def _backoff(
    breaker: Breaker, backoff: Backoff, cs: ClusterStatSet, rs: RouteStatSet
) -> None:
    """Wait before a retry, holding a `max_retries` slot meanwhile (as Envoy does)."""
    cs.upstream_rq_retry.value += 1
    rs.upstream_rq_retry.value += 1
    try:
        await asyncio.sleep(backoff.next_delay())
    finally:
        breaker.end_retry()
