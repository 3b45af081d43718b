"""The sidecar's admin API: Envoy's dialect plus meshdev's /stats/stream and POST /config.

`start_admin` serves it on the admin listener (the host's loopback only) with the sidecar's
own HTTP/1.1 engine, so the admin API has the data path's hardening and keep-alive and the
process imports no web framework. Anything that is not a GET/HEAD changes state, so it
needs the mesh's token (`x-meshdev-token`, compared in constant time) and its body is capped
at `limits.max_admin_body` of the serving config. Every error answers JSON `{"error": ...}`;
successes answer what Envoy answers (text or JSON). The endpoints are in admin/routes.py,
the routing, token and error rules in admin/transport.py.
"""

from __future__ import annotations

import asyncio
import contextlib

from meshdev.common.sidecar_config import Limits
from meshdev.sidecar.admin.routes import Endpoints, Flush, parse_interval
from meshdev.sidecar.admin.transport import TOKEN_HEADER, Router
from meshdev.sidecar.admin.views import CertsSurface, ControlSurface, SpansSurface
from meshdev.sidecar.http import HttpServer, Request, ResponseWriter, start_server
from meshdev.sidecar.stats.store import IntervalReader

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "TOKEN_HEADER",
    "AdminServer",
    "parse_interval",
    "start_admin",
]

# Envoy flushes stats every 5 s; /stats shows the last flushed interval.
DEFAULT_FLUSH_INTERVAL = 5.0
# How long close() lets answers in flight finish; streams end at once.
CLOSE_GRACE = 5.0


class AdminServer:
    """A running admin API: its listener and its periodic stats flush."""

    def __init__(
        self, endpoints: Endpoints, router: Router, flush_interval: float, limits: Limits | None
    ) -> None:
        self._endpoints = endpoints
        self._router = router
        self._flush_interval = flush_interval
        # None: follow the serving config's limits across swaps, as the data path does.
        self._limits = limits
        self._server: HttpServer | None = None
        self._flush_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (kept after close)."""
        assert self._server is not None
        return self._server.port

    async def _listen(self, host: str, port: int) -> None:
        limits = self._limits if self._limits is not None else self._endpoints.surface.config.limits
        handler = self._router if self._limits is not None else self._serve_following
        self._server = await start_server(handler, host, port, limits)
        self._flush_task = asyncio.create_task(self._flush_loop(), name="meshdev-admin-flush")

    async def _serve_following(self, request: Request, writer: ResponseWriter) -> None:
        # Before: the config may have been swapped by other means; after: by this request.
        self._sync_limits()
        try:
            await self._router(request, writer)
        finally:
            self._sync_limits()

    def _sync_limits(self) -> None:
        server = self._server
        limits = self._endpoints.surface.config.limits
        if server is not None and server.limits is not limits:
            server.limits = limits

    async def _flush_loop(self) -> None:
        flush = self._endpoints.flush
        while True:
            await asyncio.sleep(self._flush_interval)
            flush.run()

    async def close(self, grace: float = CLOSE_GRACE) -> None:
        """Stop listening, end open streams, let other answers finish (up to `grace`)."""
        # Streams otherwise run until their client leaves; shutdown must not wait for that.
        self._endpoints.stopping.set()
        task, self._flush_task = self._flush_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.close(grace)


async def start_admin(
    surface: ControlSurface,
    *,
    host: str,
    port: int,
    token: str,
    server_info: dict[str, object],
    limits: Limits | None = None,
    flush_interval: float = DEFAULT_FLUSH_INTERVAL,
    certs: CertsSurface | None = None,
    spans: SpansSurface | None = None,
) -> AdminServer:
    """Serve the admin API on host:port (0 picks a free port) until `close()`.

    `limits` are the listener's hardening limits (sidecar/http/); by default it uses the serving
    config's and follows them across config swaps, as the data path's listeners do. `certs`:
    the workload certificate's side (POST and GET /certs, and /ready waits for it).
    `spans`: the recent spans GET /spans reads (the data plane's tracer).
    """
    endpoints = Endpoints(
        surface=surface,
        base_info=dict(server_info),
        flush=Flush(IntervalReader(surface.stats)),
        certs=certs,
        spans=spans,
    )
    admin = AdminServer(
        endpoints,
        Router(endpoints.routes(), token),
        flush_interval,
        limits,
    )
    await admin._listen(host, port)
    return admin
