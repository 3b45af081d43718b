"""The request pipeline: one `Proxy` per listener, called by the HTTP server per request.

    route -> local rate limit -> fault (delay, then abort) -> tries under the route timeout:
        { circuit breaker (max_requests), pick a host (balancer), send with the per-try
          timeout, outlier accounting, retry decision + jittered backoff }

Envoy's answers and flags when something goes wrong (flags as in %RESPONSE_FLAGS%):
no route 404 `NR` (`http.<listener>.no_route`); rate limited 429 `RL` with
`x-envoy-ratelimited: true`; fault abort `FI`, fault delay `DI`; no healthy host 503 `UH`;
circuit breaker overflow 503 `UO` at once with `x-envoy-overloaded: true`; connect failure 503
`UF`; reset before the answer 503 `UC`; route timeout 504 `UT` (`upstream_rq_timeout`), also
when it strikes during a backoff; retries exhausted `URX`; a retry refused by `max_retries`
`UO` (the last upstream answer goes back).

The per-try timeout runs until the answer's head arrives; the route timeout covers every try,
the backoffs and the streaming of the answer's body (a timeout after the head has gone out
resets the downstream connection, as Envoy does).

Headers: hop-by-hop headers (and those named in `Connection`) are dropped both ways;
`x-request-id` is kept or created; `traceparent`/`tracestate` pass through; the client's
address is appended to `x-forwarded-for`; answers carry `x-envoy-upstream-service-time` and
`x-envoy-attempt-count`.

The path is kept lean because it runs for every request: no task is created per request
(timeouts are timer handles that cancel the handler's own task), policies and stat objects
were compiled at config apply, and the request body goes to the pool as a stream (or, when the
route retries, as bytes read up to RETRY_BUFFER_LIMIT; a longer body is streamed and not
retried, as Envoy does past its buffer limit, counting `retry_or_shadow_abandoned`).
"""

from __future__ import annotations

import asyncio
import time
from asyncio import CancelledError, current_task
from random import getrandbits
from typing import Final

from meshdev.sidecar.accesslog import (
    DELAY_INJECTED,
    DOWNSTREAM_CONNECTION_TERMINATION,
    FAULT_INJECTED,
    NO_HEALTHY_UPSTREAM,
    NO_ROUTE_FOUND,
    RATE_LIMITED,
    UPSTREAM_CONNECTION_FAILURE,
    UPSTREAM_CONNECTION_TERMINATION,
    UPSTREAM_OVERFLOW,
    UPSTREAM_REQUEST_TIMEOUT,
    UPSTREAM_RETRY_LIMIT_EXCEEDED,
    Record,
)
from meshdev.sidecar.breaker import Breaker
from meshdev.sidecar.deadline import Deadline, Deadlines
from meshdev.sidecar.fault import decide_abort, decide_delay
from meshdev.sidecar.http1 import BodyStream, Request, ResponseWriter
from meshdev.sidecar.retry import Backoff, Failure, RetryRules
from meshdev.sidecar.state import ClusterSnapshot, Compiled, DataPlane, ListenerEntry, RouteEntry
from meshdev.sidecar.statsets import ClusterStats, RouteStats
from meshdev.sidecar.upstream import (
    ConnectFailure,
    PendingOverflow,
    UpstreamReset,
    UpstreamResponse,
)

RETRY_BUFFER_LIMIT: Final = 1024 * 1024  # Envoy's per_connection_buffer_limit_bytes default
# Latencies are timed on this clock, not loop.time(): uvloop's counts whole milliseconds, which
# would put every sub-millisecond request into the 0 or 1 ms bucket of the histograms.
# Deadlines stay on loop.time(), the clock their sweep reads.
_now: Final = time.monotonic

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_RESPONSE_DROP: Final = _HOP_BY_HOP | {"content-length"}
# Statuses whose answers have no body, so their content-length passes through as it is.
_BODILESS: Final = frozenset({204, 304})
_TEXT: Final = ("content-type", "text/plain")
_OVERLOADED: Final = ("x-envoy-overloaded", "true")
_OVERFLOW_BODY: Final = (
    b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
)


class HeaderView:
    """Header look-ups for the matchers; several values of one name are joined with ","."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def get(self, name: str, /) -> str | None:
        found: str | None = None
        for k, v in self.items:
            if k == name:
                found = v if found is None else f"{found},{v}"
        return found


def new_request_id() -> str:
    """A random (version 4, variant 10) UUID, as Envoy generates for x-request-id."""
    h = "%032x" % getrandbits(128)  # noqa: UP031 (the fastest formatting of the three)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def upstream_headers(req: Request) -> tuple[list[tuple[str, str]], str]:
    """The headers to send upstream, and the request id."""
    out: list[tuple[str, str]] = []
    rid: str | None = None
    xff: str | None = None
    named: str | None = None
    proto = False
    hop = _HOP_BY_HOP
    for k, v in req.headers:
        if k in hop:
            if k == "connection":
                named = v if named is None else f"{named},{v}"
            continue
        if k == "host":
            continue
        if k[0] == "x":
            if k == "x-request-id":
                if rid is None:
                    rid = v
            elif k == "x-forwarded-for":
                xff = v if xff is None else f"{xff}, {v}"
                continue
            elif k == "x-forwarded-proto":
                proto = True
        out.append((k, v))
    if named is not None:
        drop = {t.strip().lower() for t in named.split(",")} - {
            "close",
            "keep-alive",
            "host",
            "x-request-id",
        }
        if drop:
            out = [(k, v) for k, v in out if k not in drop]
    if rid is None:
        rid = new_request_id()
        out.append(("x-request-id", rid))
    # An absolute-form target's authority wins over a Host header (RFC 9112 section 3.2.2).
    if req.authority:
        out.append(("host", req.authority))
    client = req.client[0]
    out.append(("x-forwarded-for", f"{xff}, {client}" if xff else client))
    if not proto:
        out.append(("x-forwarded-proto", "http"))
    return out, rid


def _vetoed(headers: list[tuple[str, str]]) -> bool:
    """Envoy never retries an answer that says the upstream is overloaded or rate limited."""
    return any(k in ("x-envoy-overloaded", "x-envoy-ratelimited") for k, _ in headers)


class _Reply:
    """A local answer (no upstream response to relay)."""

    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers if headers is not None else []


class Proxy:
    """The HTTP server's handler for one listener."""

    __slots__ = (
        "_compiled",
        "_entry",
        "_loop",
        "_rate_limit_ok",
        "_rate_limited",
        "listener",
        "plane",
    )

    def __init__(self, plane: DataPlane, listener: str) -> None:
        self.plane = plane
        self.listener = listener
        store = plane.stats_store
        self._rate_limited = store.counter("http_local_rate_limit.rate_limited")
        self._rate_limit_ok = store.counter("http_local_rate_limit.ok")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._compiled: Compiled | None = None
        self._entry: ListenerEntry | None = None

    async def __call__(self, req: Request, w: ResponseWriter) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        started = _now()
        plane = self.plane
        # The config this request runs on, whatever swaps happen meanwhile.
        compiled = plane.current
        if compiled is not self._compiled:
            self._compiled = compiled
            self._entry = compiled.listeners.get(self.listener)
        entry = self._entry
        method = req.method
        target = req.origin_form
        rec = Record(time.time(), method, target)
        if entry is None:
            # A listener that left the config but still drains its connections.
            rec.add_flag(NO_ROUTE_FOUND)
            await _local(w, rec, _Reply(404, b""))
            return
        ls = entry.stats
        ls.downstream_rq_total.value += 1
        ls.rq_total.value += 1
        ls.downstream_rq_active.value += 1
        route: RouteEntry | None = None
        try:
            headers = HeaderView(req.headers)
            kind = entry.kind
            if kind == "inbound":
                route = entry.inbound
            else:
                if kind == "outbound":
                    vhost = compiled.vhosts.lookup(req.authority)
                else:
                    assert entry.ingress is not None
                    vhost = entry.ingress.match(method, target, headers)
                if vhost is not None:
                    route = vhost.routes.match(method, target, headers)
            if route is None:
                ls.no_route.value += 1
                rec.add_flag(NO_ROUTE_FOUND)
                await _local(w, rec, _Reply(404, b""))
                return
            rec.route = route.name
            route.stats.downstream_rq_total.value += 1

            bucket = route.bucket
            if bucket is not None:
                if not bucket.try_take():
                    self._rate_limited.value += 1
                    rec.add_flag(RATE_LIMITED)
                    reply = _Reply(429, b"local_rate_limited", [("x-envoy-ratelimited", "true")])
                    await _local(w, rec, reply)
                    return
                self._rate_limit_ok.value += 1

            fault = route.fault
            if fault is not None:
                delay = decide_delay(fault, headers)
                if delay > 0:
                    rec.add_flag(DELAY_INJECTED)
                    ls.delays_injected.value += 1
                    await asyncio.sleep(delay)
                abort = decide_abort(fault, headers)
                if abort is not None:
                    rec.add_flag(FAULT_INJECTED)
                    ls.aborts_injected.value += 1
                    await _local(w, rec, _Reply(abort, b"fault filter abort"))
                    return

            await self._forward(req, w, rec, route, loop)
        except CancelledError:
            rec.add_flag(DOWNSTREAM_CONNECTION_TERMINATION)
            raise
        finally:
            ls.downstream_rq_active.value -= 1
            status = rec.status
            if status:
                ls.downstream.charge(status)
                if route is not None:
                    route.stats.downstream.charge(status)
            if route is not None and rec.flags:
                route.stats.count_flags(rec.flags)
            elapsed = (_now() - started) * 1000.0
            ls.downstream_rq_time.record(elapsed)
            log = plane.access_log
            if log.enabled:
                rec.duration_ms = int(elapsed)
                log.log(rec)

    async def _forward(
        self,
        req: Request,
        w: ResponseWriter,
        rec: Record,
        route: RouteEntry,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        snap = route.clusters.pick()
        cs = snap.stats
        retry = route.retry
        body: bytes | BodyStream | None = None
        if req.body.has_body:
            body = req.body
            if retry is not None and retry.num_retries > 0:
                data = await req.body.read_all(RETRY_BUFFER_LIMIT)
                if data is None:
                    cs.retry_or_shadow_abandoned.value += 1
                    retry = None
                else:
                    body = data
        up_headers, rec.request_id = upstream_headers(req)
        deadlines = self.plane.deadlines
        # With its loop given, current_task skips get_running_loop, which on Python 3.11
        # costs a getpid() system call: one of the five a proxied request made.
        task = current_task(loop)
        assert task is not None
        timer = deadlines.arm(task, loop.time() + route.timeout) if route.timeout > 0 else None
        try:
            reply = await self._tries(
                req, w, rec, route, retry, snap, up_headers, body, task, timer
            )
        except CancelledError:
            if timer is None or not timer.fired:
                raise
            timer.absorb()
            # The route timeout: Envoy answers 504 unless the answer has already started.
            cs.upstream_rq_timeout.value += 1
            route.stats.upstream_rq_timeout.value += 1
            cs.upstream.charge(504)
            rec.add_flag(UPSTREAM_REQUEST_TIMEOUT)
            if w.started:
                w.abort()
                return
            reply = _Reply(504, b"upstream request timeout")
        finally:
            if timer is not None:
                deadlines.disarm(timer)
        if reply is not None:
            if rec.attempts:
                reply.headers.append(("x-envoy-attempt-count", str(rec.attempts)))
            await _local(w, rec, reply)

    async def _tries(
        self,
        req: Request,
        w: ResponseWriter,
        rec: Record,
        route: RouteEntry,
        retry: RetryRules | None,
        snap: ClusterSnapshot,
        up_headers: list[tuple[str, str]],
        body: bytes | BodyStream | None,
        task: asyncio.Task[object],
        route_timer: Deadline | None,
    ) -> _Reply | None:
        """Run the tries; relay the final upstream answer, or return a local one."""
        loop = self._loop
        assert loop is not None
        cs = snap.stats
        rs = route.stats
        breaker = snap.breaker
        detector = snap.detector
        balancer = snap.balancer
        retries_left = retry.num_retries if retry is not None else 0
        per_try = retry.per_try_timeout if retry is not None else None
        backoff: Backoff | None = None
        hash_key = HeaderView(req.headers).get(snap.hash_header) if snap.hash_header else None
        method = req.method
        target = req.origin_form
        connect_timeout = snap.connect_timeout
        deadlines: Deadlines = self.plane.deadlines
        while True:
            host = balancer.pick(hash_key)
            if host is None:
                cs.upstream_cx_none_healthy.value += 1
                rec.add_flag(NO_HEALTHY_UPSTREAM)
                return _Reply(503, b"no healthy upstream")
            if not breaker.try_request():
                cs.upstream.charge(503)
                rec.add_flag(UPSTREAM_OVERFLOW)
                return _Reply(503, _OVERFLOW_BODY, [_OVERLOADED])
            rec.attempts += 1
            rec.upstream = host.key
            cs.upstream_rq_total.value += 1
            rs.upstream_rq_total.value += 1
            host.rq_total += 1
            host.rq_active += 1
            held = True
            t0 = _now()
            try:
                failure: Failure | None = None
                try_timer = (
                    deadlines.arm(task, loop.time() + per_try) if per_try is not None else None
                )
                try:
                    resp = await host.pool.request(
                        method, target, up_headers, body, connect_timeout=connect_timeout
                    )
                except ConnectFailure:
                    failure = Failure.CONNECT_FAILURE
                except UpstreamReset:
                    failure = Failure.RESET
                except PendingOverflow:
                    # A local overflow: never retried, never held against the host.
                    rec.add_flag(UPSTREAM_OVERFLOW)
                    cs.upstream_rq_pending_overflow.value += 1
                    cs.upstream.charge(503)
                    return _Reply(503, _OVERFLOW_BODY, [_OVERLOADED])
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
                        if route_timer is not None and route_timer.fired:
                            host.rq_error += 1
                            if detector is not None:
                                detector.report(host, 504)
                        raise
                    try_timer.absorb()
                    failure = Failure.PER_TRY_TIMEOUT
                    cs.upstream_rq_per_try_timeout.value += 1
                finally:
                    if try_timer is not None:
                        deadlines.disarm(try_timer)

                if failure is not None:
                    host.rq_error += 1
                    if detector is not None:
                        detector.report(host, 504 if failure is Failure.PER_TRY_TIMEOUT else 503)
                    if retry is not None and retry.retry_failure(failure):
                        if retries_left > 0:
                            retries_left -= 1
                            if breaker.try_retry():
                                held = False
                                host.rq_active -= 1
                                breaker.end_request()
                                backoff = backoff or Backoff(
                                    retry.base_interval, retry.max_interval
                                )
                                await _backoff(breaker, backoff, cs, rs)
                                continue
                            rec.add_flag(UPSTREAM_OVERFLOW)
                        else:
                            cs.upstream_rq_retry_limit_exceeded.value += 1
                            rec.add_flag(UPSTREAM_RETRY_LIMIT_EXCEEDED)
                    return _failure_reply(failure, rec, cs)

                status = resp.status
                if detector is not None:
                    detector.report(host, status)
                if retry is not None:
                    if retry.retry_status(status) and not _vetoed(resp.headers):
                        if retries_left > 0:
                            retries_left -= 1
                            if breaker.try_retry():
                                host.rq_error += 1
                                cs.retry.charge(status)
                                resp.close()
                                held = False
                                host.rq_active -= 1
                                breaker.end_request()
                                backoff = backoff or Backoff(
                                    retry.base_interval, retry.max_interval
                                )
                                await _backoff(breaker, backoff, cs, rs)
                                continue
                            rec.add_flag(UPSTREAM_OVERFLOW)
                        else:
                            cs.upstream_rq_retry_limit_exceeded.value += 1
                            rec.add_flag(UPSTREAM_RETRY_LIMIT_EXCEEDED)
                    elif rec.attempts > 1:
                        cs.upstream_rq_retry_success.value += 1
                if status >= 500:
                    host.rq_error += 1
                else:
                    host.rq_success += 1
                cs.upstream.charge(status)
                rs.upstream.charge(status)
                rec.status = status
                out = _response_headers(resp, rec, (_now() - t0) * 1000.0)
                data = None if method == "HEAD" else resp.buffered()
                if data is not None and status >= 200 and status not in _BODILESS:
                    # The whole answer is here already: one write downstream.
                    out.append(("content-length", str(len(data))))
                    rec.bytes_sent = len(data)
                    await w.start(status, out)
                    if data:
                        await w.write(data)
                    await w.end()
                else:
                    await _stream(w, rec, resp, out, data)
                elapsed = (_now() - t0) * 1000.0
                cs.upstream_rq_time.record(elapsed)
                rs.upstream_rq_time.record(elapsed)
                return None
            finally:
                if held:
                    host.rq_active -= 1
                    breaker.end_request()


async def _local(w: ResponseWriter, rec: Record, reply: _Reply) -> None:
    rec.status = reply.status
    body = reply.body
    rec.bytes_sent = len(body)
    await w.start(reply.status, [_TEXT, ("content-length", str(len(body))), *reply.headers])
    if body:
        await w.write(body)
    await w.end()


def _failure_reply(failure: Failure, rec: Record, cs: ClusterStats) -> _Reply:
    if failure is Failure.PER_TRY_TIMEOUT:
        cs.upstream.charge(504)
        rec.add_flag(UPSTREAM_REQUEST_TIMEOUT)
        return _Reply(504, b"upstream request timeout")
    cs.upstream.charge(503)
    if failure is Failure.CONNECT_FAILURE:
        rec.add_flag(UPSTREAM_CONNECTION_FAILURE)
        reason = b"connection failure"
    else:
        rec.add_flag(UPSTREAM_CONNECTION_TERMINATION)
        reason = b"connection termination"
    retried = b"retried and the latest " if rec.attempts > 1 else b""
    return _Reply(
        503,
        b"upstream connect error or disconnect/reset before headers. "
        + retried
        + b"reset reason: "
        + reason,
    )


async def _backoff(breaker: Breaker, backoff: Backoff, cs: ClusterStats, rs: RouteStats) -> None:
    """Wait before a retry, holding a `max_retries` slot meanwhile (as Envoy does)."""
    cs.upstream_rq_retry.value += 1
    rs.upstream_rq_retry.value += 1
    try:
        await asyncio.sleep(backoff.next_delay())
    finally:
        breaker.end_retry()


def _response_headers(
    resp: UpstreamResponse, rec: Record, service_ms: float
) -> list[tuple[str, str]]:
    drop = _RESPONSE_DROP
    out = [(k, v) for k, v in resp.headers if k not in drop]
    out.append(("x-envoy-upstream-service-time", str(int(service_ms))))
    out.append(("x-envoy-attempt-count", str(rec.attempts)))
    return out


async def _stream(
    w: ResponseWriter,
    rec: Record,
    resp: UpstreamResponse,
    out: list[tuple[str, str]],
    data: bytes | None,
) -> None:
    """Relay an answer whose body is still arriving (or has none): streamed with
    back-pressure both ways, keeping the upstream's content-length when it gave one."""
    for k, v in resp.headers:
        if k == "content-length":
            out.append((k, v))
            break
    await w.start(rec.status, out)
    if data is not None:
        # A bodiless status (or HEAD): nothing more to send.
        await w.end()
        return
    sent = 0
    try:
        async for chunk in resp:
            sent += len(chunk)
            await w.write(chunk)
    except UpstreamReset:
        # The upstream died mid-body: all Envoy can do is reset the downstream too.
        rec.bytes_sent = sent
        rec.add_flag(UPSTREAM_CONNECTION_TERMINATION)
        w.abort()
        return
    finally:
        # Cancelled while a slow client held back a write (route timeout, client gone):
        # the half-read upstream connection must not go back to the pool. A no-op when the
        # body arrived whole.
        resp.close()
    rec.bytes_sent = sent
    await w.end()
