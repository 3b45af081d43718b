"""Pooled HTTP/1.1 client to upstream endpoints, with Envoy's per-cluster connection budget.

Interface (the request pipeline builds on exactly this):

- ``ConnectionBudget(max_connections, max_pending_requests)``: one per cluster, shared by the
  pools of the cluster's endpoints. ``cx_active`` counts the cluster's open (and opening)
  connections. A request that needs a new connection while ``cx_active >= max_connections``
  counts ``cx_overflow`` (Envoy's ``upstream_cx_overflow``) and waits as pending
  (``rq_pending_active``, ``rq_pending_total``) for a connection of its endpoint to be released
  or for budget to free up; when ``rq_pending_active >= max_pending_requests`` it raises
  ``PendingOverflow`` at once and counts ``rq_pending_overflow``. As in Envoy, an endpoint with
  no connection at all may open one even over the limit (so it cannot starve), counting the
  overflow. ``update(max_connections, max_pending_requests)`` changes the limits in place
  (config hot swap keeps the object and its counts). ``cx_open`` / ``rq_pending_open`` are
  Envoy's ``circuit_breakers.default.{cx_open,rq_pending_open}``. Counters are plain ints.
- ``UpstreamPool(address, port, budget, *, tls=None)``: one per endpoint, reusable across
  config swaps. With ``tls`` (a ``sidecar.tls.upstream.TlsOrigin``) every connection is mutual
  TLS, and an endpoint whose certificate names no accepted SPIFFE ID is a connect failure.
  Readable ints: ``cx_active``, ``cx_total``, ``cx_connect_fail``, ``rq_active``, ``rq_total``,
  ``cx_idle``; ``authority`` is ``address:port``.
  ``await request(method, target, headers, body, *, connect_timeout)`` sends one request and
  returns an ``UpstreamResponse`` once its head has arrived. ``target`` goes on the request line
  as given (origin-form). Hop-by-hop headers are the caller's to strip, but framing is ours: a
  caller's ``transfer-encoding`` / ``connection`` are dropped; a ``bytes`` body gets its
  Content-Length; an async-iterator body is sent with the caller's ``content-length`` if given,
  else chunked, streamed with back-pressure while the response is awaited; ``None`` sends no
  body. A ``host`` header is added when missing. Idle keep-alive connections are reused (most
  recent first); one found closed (or closing) when taken is replaced before anything is sent,
  and one idle for over ``STALE_AFTER`` seconds first waits two loop turns so that a close the
  upstream sent meanwhile (its keep-alive timeout) is seen before the request is written. A
  close still in flight as the request goes out surfaces as ``UpstreamReset`` (as in Envoy).
  Cancelling the caller (a route timeout) while it awaits the head or the next body chunk
  closes the connection and restores every count; a caller cancelled elsewhere while relaying
  a response (say, writing to a slow client) must ``close()`` it. ``close()`` closes idle
  connections; connections in use close when released.
- ``await upgrade(method, target, headers, *, connect_timeout)`` sends an upgrade request (its
  ``upgrade`` header among ``headers``; ``connection: upgrade`` is ours) on a connection of its
  own, never an idle one. A ``101`` answer is an ``UpgradedResponse`` whose ``tunnel`` is the
  connection's raw byte stream (a ``sidecar.http.RawEnd``, reading paused until spliced); the
  connection counts against the budget until that stream closes. Any other answer is an
  ordinary response, after which the connection closes: it never returns to the pool. A 101
  to a request that asked for no upgrade resets the connection (``UpstreamReset``).
- Errors: ``ConnectFailure`` (refused, unreachable, or ``connect_timeout`` exceeded);
  ``UpstreamReset`` (the connection closed or reset before a complete response head; iterating
  the body raises it too when the connection dies mid-body); ``PendingOverflow``.
- ``UpstreamResponse``: ``status``, ``headers`` (names lower-cased). ``async for chunk in resp``
  streams the body with flow control (reading pauses while ``HIGH_WATER`` bytes wait unread);
  ``buffered()`` returns the whole body without awaiting when it has already arrived complete
  (the fast path for small responses), else ``None``; ``read_all(limit)`` reads it all (raises
  ``ResponseTooLarge``, closing the connection, past ``limit``); ``close()`` discards the
  connection unless the response already arrived complete. The connection goes back to the
  pool as soon as the response has been received whole and may be reused (its body then sits
  in the response's buffer), so a caller that drops a complete response loses nothing.
  ``complete`` tells whether the body has fully arrived; ``pending_bytes`` what waits unread.

This package is the client's public face; its modules, each importing only those listed
before it: ``errors``, ``request`` (encoding), ``budget``, ``response`` (on
``sidecar.http.flowbuffer``, shared with the server's request body, and ``sidecar.http.raw``
for an upgraded one's stream), ``connection`` (one connection) and ``pool``. A lower module
that needs something of a higher one says what in a small ``typing.Protocol``
(``budget.WaitingPool``, ``response.ResponseSource``, ``connection.PoolSide``) rather than
importing it. ``STALE_AFTER`` is read where it is used, in ``pool``: change it there. The
cluster side kept in this package (``balancer``, ``breaker``, ``outlier``, ``host``,
``cluster``) is not part of this interface.
"""

from meshdev.sidecar.http.flowbuffer import HIGH_WATER, LOW_WATER
from meshdev.sidecar.upstream.budget import ConnectionBudget
from meshdev.sidecar.upstream.errors import (
    ConnectFailure,
    PendingOverflow,
    ResponseTooLarge,
    UpstreamReset,
)
from meshdev.sidecar.upstream.pool import STALE_AFTER, UpstreamPool
from meshdev.sidecar.upstream.response import UpgradedResponse, UpstreamResponse

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "STALE_AFTER",
    "ConnectFailure",
    "ConnectionBudget",
    "PendingOverflow",
    "ResponseTooLarge",
    "UpgradedResponse",
    "UpstreamPool",
    "UpstreamReset",
    "UpstreamResponse",
]
