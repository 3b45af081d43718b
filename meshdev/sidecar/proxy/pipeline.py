"""The request pipeline: one `Proxy` per listener, called by the HTTP server per request.

    route -> authorization (inbound listeners with policies) -> local rate limit -> fault
    (delay, then abort) -> forward (proxy/forward.py: the tries under the route timeout)

Envoy's answers and flags when something goes wrong (flags as in %RESPONSE_FLAGS%):
no route 404 `NR` (`http.<listener>.no_route`; for a service outside the app's `calls:`,
with a body and a log line saying so, router/scope.py); denied by the listener's authorization
policies (Envoy's RBAC filter, filters/rbac.py) 403 `RBAC: access denied`, flag `RBAC`, details
`rbac_access_denied_matched_policy[<policy>|none]`, counted in `http.<listener>.rbac.denied`
(and a request let through in `.rbac.allowed`); rate limited 429 `RL` with
`x-envoy-ratelimited: true`; fault abort `FI`, fault delay `DI`; no healthy host 503 `UH`;
circuit breaker overflow 503 `UO` at once with `x-envoy-overloaded: true`; connect failure 503
`UF`; reset before the answer 503 `UC`; route timeout 504 `UT` (`upstream_rq_timeout`), also
when it strikes during a backoff; retries exhausted `URX`; a retry refused by `max_retries`
`UO` (the last upstream answer goes back).

An upgrade request (WebSocket) takes the same path: routing, filters, breakers and retries
apply to it as to any request, until its 101; then its stream is relayed (proxy/upgrade.py).
It counts in Envoy's `http.<listener>.downstream_cx_upgrades_total` / `_active` from its head
on (a 429 or 404 included, as in Envoy), and per route in meshdev's
`vhost.<v>.route.<r>.downstream_cx_upgrades_total` / `_active`; a stream closed by the idle
timeout counts in `http.<listener>.downstream_rq_idle_timeout`, flagged `SI`.

A gRPC call (an HTTP/2 stream with content-type application/grpc, `Request.grpc`) takes the
same path with gRPC's semantics (proxy/grpc.py): its local answers are trailers-only
grpc-status, its grpc-timeout caps the route timeout, retry_on reads grpc-status, and the
grpc-status its caller got counts per route (meshdev's `vhost.<v>.route.<r>.grpc.<code>`) and
per cluster and method (Envoy's grpc_stats names).

A sampled request (sidecar/tracing/) carries its spans in `rec.trace`: a SERVER span on an
inbound or ingress listener, a CLIENT span per try on an outbound or ingress one (forward.py),
each finished here when the request ends; with tracing off the path tests one flag.

The path is kept lean because it runs for every request: policies and stat objects were
compiled at config apply (sidecar/compiler.py), and the stages run inline rather than as a call
each, since every call is paid on every request.
"""

from __future__ import annotations

import asyncio
import time
from asyncio import CancelledError

from meshdev.sidecar.compiled import Compiled, ListenerEntry, RouteEntry
from meshdev.sidecar.dataplane import DataPlane
from meshdev.sidecar.filters.fault import decide_abort, decide_delay
from meshdev.sidecar.filters.rbac import DENIED_BODY
from meshdev.sidecar.http import Request, ResponseWriter
from meshdev.sidecar.http2 import H2StreamWriter
from meshdev.sidecar.proxy.accesslog import (
    DELAY_INJECTED,
    DOWNSTREAM_CONNECTION_TERMINATION,
    FAULT_INJECTED,
    NO_ROUTE_FOUND,
    RATE_LIMITED,
    RBAC_ACCESS_DENIED,
    STREAM_IDLE_TIMEOUT,
    Record,
)
from meshdev.sidecar.proxy.forward import forward, now
from meshdev.sidecar.proxy.grpc import PERMISSION_DENIED
from meshdev.sidecar.proxy.headers import HeaderView
from meshdev.sidecar.proxy.replies import Reply, send_local
from meshdev.sidecar.stats.sets import ListenerStatSet
from meshdev.sidecar.tls.peer import peer_principal
from meshdev.sidecar.tracing import RequestTrace


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
        started = now()
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
            await send_local(w, rec, Reply(404, b""))
            return
        ls = entry.stats
        ls.downstream_rq_total.value += 1
        if req.version == "2":
            ls.downstream_rq_http2_total.value += 1
        else:
            ls.downstream_rq_http1_total.value += 1
        ls.rq_total.value += 1
        ls.downstream_rq_active.value += 1
        upgrade = req.upgrade
        if upgrade is not None:
            ls.downstream_cx_upgrades_total.value += 1
            ls.downstream_cx_upgrades_active.value += 1
        route: RouteEntry | None = None
        trace: RequestTrace | None = None
        try:
            tracer = plane.tracer
            if tracer.enabled:
                trace = rec.trace = tracer.start(req, entry.kind)
                if trace is None:
                    ls.tracing_not_traceable.value += 1
                else:
                    ls.tracing_random_sampling.value += 1
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
                scope = compiled.egress
                dest = scope.hidden(req.authority) if scope is not None else None
                if scope is not None and dest is not None and kind == "outbound":
                    # A service outside the app's `calls:`: say so, or the 404 looks like
                    # a broken route.
                    scope.tell(dest)
                    rec.details = scope.details(dest)
                    await send_local(w, rec, Reply(404, f"{scope.why(dest)}\n".encode()))
                    return
                await send_local(w, rec, Reply(404, b""))
                return
            rec.route = route.name
            if trace is not None:
                # trace.routed(), inline: this runs for every sampled request.
                trace.vhost = route.vhost
                trace.route = route.name
            route.stats.downstream_rq_total.value += 1
            if upgrade is not None:
                route.stats.upgrade_began()

            rbac = entry.rbac
            if rbac is not None:
                principal = peer_principal(_transport(w)) if rbac.engine.reads_principal else None
                details = rbac.engine.check(method, req.path, principal)
                if details is not None:
                    rbac.stats.denied.value += 1
                    rec.add_flag(RBAC_ACCESS_DENIED)
                    rec.details = details
                    reply = Reply(403, DENIED_BODY, None, PERMISSION_DENIED)
                    await send_local(w, rec, reply)
                    return
                rbac.stats.allowed.value += 1

            bucket = route.bucket
            if bucket is not None:
                if not bucket.try_take():
                    self._rate_limited.value += 1
                    rec.add_flag(RATE_LIMITED)
                    reply = Reply(429, b"local_rate_limited", [("x-envoy-ratelimited", "true")])
                    await send_local(w, rec, reply)
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
                    reply = Reply(abort, b"fault filter abort", None, fault.abort_grpc_status)
                    await send_local(w, rec, reply)
                    return

            await forward(req, w, rec, route, loop, plane.deadlines)
        except CancelledError:
            rec.add_flag(DOWNSTREAM_CONNECTION_TERMINATION)
            raise
        finally:
            ls.downstream_rq_active.value -= 1
            if upgrade is not None:
                _upgrade_ended(ls, route, rec)
            status = rec.status
            if status:
                ls.downstream.charge(status)
                if route is not None:
                    route.stats.downstream.charge(status)
            if route is not None and rec.flags:
                route.stats.count_flags(rec.flags)
            if req.grpc and route is not None and isinstance(w, H2StreamWriter):
                code = w.grpc_status
                if code is not None:
                    route.stats.grpc_status(code)
            if trace is not None:
                trace.finish(rec.status, rec.flags, rec.upstream, rec.request_id)
            elapsed = (now() - started) * 1000.0
            ls.downstream_rq_time.record(elapsed)
            log = plane.access_log
            if log.enabled:
                rec.duration_ms = int(elapsed)
                log.log(rec)


def _transport(w: ResponseWriter) -> asyncio.BaseTransport:
    """The connection a request came on, whose peer certificate names its principal.

    The HTTP engines expose it only to their writers (`WriterOwner._transport`, an HTTP/2
    stream's `StreamOwner._transport`), so it is read through them, and only for listeners
    whose policies name principals."""
    owner = w._h2 if isinstance(w, H2StreamWriter) else w._conn
    return owner._transport


def _upgrade_ended(ls: ListenerStatSet, route: RouteEntry | None, rec: Record) -> None:
    """An upgrade request ended: refused, answered without a 101, or its stream closed."""
    ls.downstream_cx_upgrades_active.value -= 1
    if route is not None:
        route.stats.upgrade_ended()
    if STREAM_IDLE_TIMEOUT in rec.flags.split(","):
        ls.downstream_rq_idle_timeout.value += 1
