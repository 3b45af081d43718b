"""The sidecar's HTTP/2 (h2c) engine, after Envoy's source/common/http/http2: the sans-IO
``h2`` codec under asyncio, serving the same request pipeline as ``sidecar.http``.

Interface:

- ``enable_h2c(server, stats)``: an ``http.HttpServer`` then also speaks HTTP/2 with prior
  knowledge: a connection whose first bytes are the preface (``PRI * HTTP/2.0...``) is handed
  to an ``H2ServerConnection`` (one check of the first read; HTTP/1.1 pays nothing after it).
  ``stats()`` gives the ``Http2StatSet`` a new connection counts in (the listener's name may
  change at a config swap, so it is asked per connection).
- Each stream runs the server's handler with a ``Request`` (``version == "2"``, ``authority``
  from ``:authority``, else ``host``) and an ``H2StreamWriter``, the same interface as
  HTTP/1.1's: routing, filters, breakers, retries, stats and the access log run unchanged.
  The request body is an ``H2Body`` (a ``BodyStream``): bytes are acknowledged to the peer
  (WINDOW_UPDATE) as the pipeline reads them, so a body buffers at most its window; its
  ``trailers`` are the request's. ``H2StreamWriter.end(trailers)`` sends response trailers;
  ``write`` waits for the peer's stream and connection windows and for the socket; ``abort``
  resets the stream only. A stream reset by the client cancels its handler, as a client that
  leaves does on HTTP/1.1.
- Hardening, as Envoy: SETTINGS_MAX_CONCURRENT_STREAMS 100 (a stream over it is refused with
  RST_STREAM REFUSED_STREAM, the connection goes on); SETTINGS_MAX_HEADER_LIST_SIZE is the
  listener's ``max_header_bytes`` (over it: GOAWAY, ``http2.header_overflow``); rapid reset
  (CVE-2023-44487): Envoy's premature-reset rule closes the connection with GOAWAY
  ENHANCE_YOUR_CALM; PING/SETTINGS floods: more than 1,000 control frames queued unread (Envoy's
  max_outbound_control_frames) close it the same way (``http2.outbound_control_flood``); the
  idle timeout and the server's drain send GOAWAY.

Modules, each importing only those before it: ``codec`` (h2 configured and its concurrency
refusal), ``stream`` (body and writer), ``server`` (one connection), ``client`` (an upstream
h2c connection, for ``sidecar.upstream``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from meshdev.sidecar.http.server import HttpServer
from meshdev.sidecar.http.tally import ConnTally
from meshdev.sidecar.http2.codec import MAX_CONCURRENT_STREAMS, PREFACE
from meshdev.sidecar.http2.server import H2ServerConnection
from meshdev.sidecar.http2.stream import H2Body, H2StreamWriter
from meshdev.sidecar.stats.http2 import Http2StatSet


def enable_h2c(server: HttpServer, stats: Callable[[], Http2StatSet]) -> None:
    """Serve HTTP/2 with prior knowledge on `server` too (see the package doc)."""

    def handoff(
        transport: asyncio.Transport, client: tuple[str, int], data: bytes, cx: ConnTally
    ) -> None:
        conn = H2ServerConnection(server, transport, client, stats(), cx)
        transport.set_protocol(conn)
        conn.start(data)

    server._h2c = handoff


__all__ = [
    "MAX_CONCURRENT_STREAMS",
    "PREFACE",
    "H2Body",
    "H2ServerConnection",
    "H2StreamWriter",
    "Http2StatSet",
    "enable_h2c",
]
