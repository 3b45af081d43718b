"""The sidecar's HTTP/1.1 server: an asyncio.Protocol on httptools (llhttp), built for a lean
per-request path. The caller installs uvloop when present; nothing here depends on it.

Interface (the request pipeline builds on exactly this):

- ``start_server(handler, host, port, limits) -> HttpServer`` listens and calls
  ``handler(request, writer)`` once per request, in the connection's task. Requests pipelined
  on one connection are handled one after another (the next when the handler returns) and
  answered in order.
- ``Request`` (a slots dataclass): ``method``, ``target`` (raw request-target: origin-form
  ``/a?b`` or absolute-form ``http://backend/items``), ``path`` and ``query`` (split at the first
  ``?``, ``query`` is ``''`` when there is none; for absolute-form the URL's path, ``/`` when
  empty), ``authority`` (host[:port] of an absolute-form target, else the Host header, ``''`` if
  none), ``headers`` (arrival order, names lower-cased, values latin-1 decoded with trailing
  whitespace stripped; trailers are dropped), ``keep_alive``, ``body`` (a ``BodyStream``),
  ``client`` (peer address), ``received_at`` (``loop.time()`` at the request's first byte),
  ``version`` (``"1.1"`` / ``"1.0"``), the property ``origin_form`` (``path?query``, what an
  upstream wants) and ``header(name)`` (first value or ``None``).
- ``BodyStream``: the request body, streamed with flow control (reading from the client pauses
  while more than ``HIGH_WATER`` bytes wait unread), never buffered whole. ``length`` is the
  Content-Length or ``None`` (chunked or absent); ``has_body`` tells whether one was declared;
  ``pending_bytes`` is what waits unread; ``complete`` whether it has all arrived.
  ``async for chunk in body`` yields it; a broken body (bad chunking, client gone) raises
  ``BodyError``. ``read_all(limit)`` returns the whole body, or ``None`` when it is longer
  than ``limit``: then nothing is lost, iterating afterwards yields the body again from its
  first byte (what was read stays buffered, at most ``limit`` plus one chunk). After a
  successful ``read_all`` the stream is consumed. ``Expect: 100-continue`` is answered on the
  first read.
- ``ResponseWriter``: ``start(status, headers)`` (framing is the writer's: it keeps a given
  ``content-length``, otherwise sends ``transfer-encoding: chunked`` to HTTP/1.1 clients and
  closes after the body for HTTP/1.0 ones; it drops any ``transfer-encoding`` / ``connection``
  the caller passed, adds ``connection: close`` when the connection will close, and sends no
  body for HEAD, 1xx, 204 and 304). The head goes out with the first ``write`` or at ``end``
  (one send for a small response); ``flush()`` sends it at once. ``write(chunk)`` waits while
  the client's socket buffer is full. ``end()`` finishes the response; ``abort()`` resets the
  connection (e.g. the upstream died mid-body). Header names and values must be latin-1 and
  free of CR/LF (values taken from parsed messages are). ``started`` / ``ended`` tell the state.
- Upgrades: a request with ``Connection: upgrade`` and ``Upgrade: websocket`` gets
  ``Request.upgrade == "websocket"``, and HTTP parsing stops after its head: what the client
  sends next belongs to the upgraded stream (held, with flow control, until the answer).
  ``ResponseWriter.switch_protocols(headers)`` answers ``101`` and hands over the connection's
  raw byte stream as a ``RawEnd``, which ``Splice(a, b, idle_timeout)`` joins to another
  (see ``raw``); any other answer closes the connection after it (as Envoy does). Other
  upgrade protocols (h2c, ...) are not upgraded: the request and the connection go on as
  ordinary ones. CONNECT is answered, then the connection closes.
- A handler that raises before ``start`` gets a 500; after ``start`` the connection is reset.
  When the client goes away (a FIN counts, as in Envoy) before the response ended, the
  handler is cancelled (as Envoy resets the upstream stream): it sees ``CancelledError`` and
  must clean up, e.g. close an ``UpstreamResponse`` it was relaying.
  A response that ends while its request body is still unread closes the connection.
- ``HttpServer``: ``sockets``, ``port``, ``connections`` (open count), ``limits`` (assignable:
  hot swap at config reload; ``set_limits(server, limits)`` does the same), and
  ``close(grace)``: stop accepting, close idle keep-alive connections, let requests in flight
  finish (their responses get ``connection: close``) for up to ``grace`` seconds, then reset.

Hardening (``schema.Limits``): llhttp rejects smuggling-prone framing (Content-Length with
Transfer-Encoding, duplicate Content-Length, bad chunk sizes, unknown transfer codings,
CR/LF/NUL in values, obsolete line folding); the engine adds the header count, header line
and total header size limits (431), a second Host header (400), a header timeout measured
from the request's first byte (408), and the keep-alive idle timeout. Errors are answered and
the connection is closed after a short lingering read, so the client sees the answer instead
of a reset. Timers are one sweep per server, not one timer per request.

This package is the engine's public face; its modules, each importing only those listed
before it: ``tally`` (what a connection counts, as a protocol: the names are the stats
room's), ``wire`` (header names, status lines, canned answers, shared with the upstream
client), ``flowbuffer`` (the flow-controlled buffer under the request body and the upstream
response body), ``raw`` (an upgraded connection's byte stream and the splice of two, shared
with the upstream client), ``body`` (the request body), ``request``, ``writer`` (one response),
``connection`` (one client connection: parsing, the worker running its requests, flow control,
timers, closing) and ``server``. A lower module that needs something of a higher one says what
in a small ``typing.Protocol`` (``body.BodyOwner``, ``writer.WriterOwner``,
``connection.ServerSide``) rather than importing it.
"""

from meshdev.sidecar.http.body import EMPTY_BODY, BodyError, BodyStream
from meshdev.sidecar.http.connection import LINGER, PIPELINE_DEPTH, Handler
from meshdev.sidecar.http.flowbuffer import HIGH_WATER, LOW_WATER
from meshdev.sidecar.http.raw import RawEnd, Splice
from meshdev.sidecar.http.request import Request
from meshdev.sidecar.http.server import HttpServer, set_limits, start_server, unbound_server
from meshdev.sidecar.http.wire import header_name, status_line
from meshdev.sidecar.http.writer import ResponseWriter

__all__ = [
    "EMPTY_BODY",
    "HIGH_WATER",
    "LINGER",
    "LOW_WATER",
    "PIPELINE_DEPTH",
    "BodyError",
    "BodyStream",
    "Handler",
    "HttpServer",
    "RawEnd",
    "Request",
    "ResponseWriter",
    "Splice",
    "header_name",
    "set_limits",
    "start_server",
    "status_line",
    "unbound_server",
]
