"""The sidecar's admin API, in Envoy's dialect plus meshdev's /stats/stream and POST /config.

Reads go through a `ControlSurface` (views.py), never the proxy's internals. Anything that is
not a GET/HEAD changes state, so it needs the mesh's token (`x-meshdev-token`, compared in
constant time) and its body is capped at `limits.max_admin_body` of the serving config. Every
error answers JSON `{"error": ...}`; successes answer what Envoy answers (text or JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qsl

from aiohttp import web

from meshdev.sidecar.clusters_text import render_clusters_json, render_clusters_text
from meshdev.sidecar.histogram import HistogramSnapshot
from meshdev.sidecar.schema import ConfigRejected, SidecarConfig, parse_config
from meshdev.sidecar.stats import IntervalReader
from meshdev.sidecar.stats_stream import ConfigIdentity, StreamCursor, node_info
from meshdev.sidecar.statsformat import (
    PROMETHEUS_CONTENT_TYPE,
    BadFilter,
    compile_filter,
    render_json,
    render_prometheus,
    render_text,
)
from meshdev.sidecar.stattags import TagExtractor
from meshdev.sidecar.views import ControlSurface

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-meshdev-token"
# Envoy flushes stats every 5 s; /stats shows the last flushed interval.
DEFAULT_FLUSH_INTERVAL = 5.0
STREAM_INTERVAL_DEFAULT = 1.0
STREAM_INTERVAL_MIN = 0.05
STREAM_INTERVAL_MAX = 60.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_READ_METHODS = frozenset({"GET", "HEAD"})
_STREAMING = web.RequestKey("meshdev_streaming", bool)

_dumps = partial(json.dumps, allow_nan=False)
_compact_dumps = partial(json.dumps, allow_nan=False, separators=(",", ":"))


@dataclass(slots=True)
class _Flush:
    """The Envoy-style stats flush: /stats shows the histogram intervals of the last one."""

    reader: IntervalReader
    intervals: dict[str, HistogramSnapshot] = field(default_factory=dict)

    def run(self) -> None:
        self.intervals = {h.name: h.interval for h in self.reader.read().histograms}


@dataclass(slots=True)
class _State:
    surface: ControlSurface
    token: str
    server_info: dict[str, object]
    flush: _Flush
    flush_interval: float
    started: float = field(default_factory=time.monotonic)
    identity: ConfigIdentity = field(default_factory=ConfigIdentity)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tags: tuple[SidecarConfig, TagExtractor] | None = None

    def tags(self) -> TagExtractor:
        config = self.surface.config
        if self._tags is None or self._tags[0] is not config:
            self._tags = (config, TagExtractor.for_config(config))
        return self._tags[1]


STATE = web.AppKey("meshdev_admin_state", _State)


class AdminError(Exception):
    """An error answer: status, message, and extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _error_response(
    status: int, message: str, extra: dict[str, object] | None = None
) -> web.Response:
    return web.json_response({"error": message, **(extra or {})}, status=status, dumps=_dumps)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AdminError as exc:
        return _error_response(exc.status, exc.message, exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own 404/405 say the same thing as JSON; keep `Allow` on a 405.
        resp = _error_response(exc.status, exc.reason)
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except Exception:
        if request.get(_STREAMING, False):
            raise  # headers are gone already; aiohttp closes the stream
        log.exception("admin %s %s failed", request.method, request.path)
        return _error_response(500, "internal error (see the sidecar's log)")


@web.middleware
async def _authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in _READ_METHODS and request.match_info.http_exception is None:
        _check_token(request.app[STATE].token, request.headers.get(TOKEN_HEADER))
    return await handler(request)


def _check_token(expected: str, given: str | None) -> None:
    if not expected:
        raise AdminError(403, "no admin token is configured: state changes are disabled")
    if given is None:
        raise AdminError(401, f"missing {TOKEN_HEADER} header")
    if not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise AdminError(403, f"wrong {TOKEN_HEADER}")


async def _read_body(request: web.Request) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed the serving config's limit."""
    limit = request.app[STATE].surface.config.limits.max_admin_body
    too_large = AdminError(413, f"request body over {limit} bytes", limit=limit)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _name_filter(request: web.Request) -> re.Pattern[str] | None:
    try:
        return compile_filter(request.query.get("filter"))
    except BadFilter as exc:
        raise AdminError(400, str(exc)) from None


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


# -- read-only endpoints -------------------------------------------------------------------


async def _ready(request: web.Request) -> web.Response:
    return web.Response(text="LIVE\n")


async def _server_info(request: web.Request) -> web.Response:
    st = request.app[STATE]
    config = st.surface.config
    uptime = time.monotonic() - st.started
    node = node_info(config)
    info: dict[str, object] = {"version": "unknown", **st.server_info}
    info.update(
        {
            "state": "LIVE",
            "hot_restart_version": "disabled",
            "uptime_current_epoch": f"{int(uptime)}s",
            "uptime_all_epochs": f"{int(uptime)}s",
            "uptime_seconds": round(uptime, 3),
            "node": {
                "id": config.node,
                "cluster": config.service or config.node,
                "metadata": node,
            },
            "mesh": config.mesh,
            "config": st.identity.describe(config),
        }
    )
    return _json(info)


async def _config_dump(request: web.Request) -> web.Response:
    st = request.app[STATE]
    config = st.surface.config
    return _json(
        {
            "version": config.version,
            "hash": st.identity.hash(config),
            "config": config.model_dump(mode="json"),
        }
    )


async def _clusters(request: web.Request) -> web.Response:
    surface = request.app[STATE].surface
    config, hosts, breakers = surface.config, surface.hosts(), surface.breakers()
    fmt = request.query.get("format", "text")
    if fmt == "json":
        return _json(render_clusters_json(config, hosts, breakers))
    if fmt != "text":
        raise AdminError(400, f"unknown format {fmt!r}: use text or json")
    return web.Response(text=render_clusters_text(config, hosts, breakers))


async def _stats(request: web.Request) -> web.Response:
    st = request.app[STATE]
    name_filter = _name_filter(request)
    fmt = request.query.get("format", "text")
    buckets = request.query.get("histogram_buckets", "summary")
    if buckets not in ("summary", "detailed"):
        raise AdminError(400, f"unknown histogram_buckets {buckets!r}: use summary or detailed")
    store, intervals = st.surface.stats, st.flush.intervals
    if fmt == "json":
        return _json(
            render_json(store, intervals, name_filter, detailed_buckets=buckets == "detailed")
        )
    if fmt == "prometheus":
        return _prometheus_response(st, name_filter)
    if fmt != "text":
        raise AdminError(400, f"unknown format {fmt!r}: use text, json or prometheus")
    return web.Response(text=render_text(store, intervals, name_filter))


async def _stats_prometheus(request: web.Request) -> web.Response:
    return _prometheus_response(request.app[STATE], _name_filter(request))


def _prometheus_response(st: _State, name_filter: re.Pattern[str] | None) -> web.Response:
    body = render_prometheus(st.surface.stats, st.tags(), name_filter)
    resp = web.Response(body=body.encode())
    resp.headers["Content-Type"] = PROMETHEUS_CONTENT_TYPE
    return resp


def parse_interval(raw: str | None) -> float:
    """Seconds from `250ms` / `1s` / `1m`, within the stream's bounds."""
    if raw is None:
        return STREAM_INTERVAL_DEFAULT
    m = _DURATION.match(raw)
    if not m:
        raise AdminError(400, f"interval {raw!r}: expected a duration like 250ms or 2s")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not STREAM_INTERVAL_MIN <= seconds <= STREAM_INTERVAL_MAX:
        raise AdminError(
            400,
            f"interval {raw!r}: must be between {int(STREAM_INTERVAL_MIN * 1000)}ms "
            f"and {int(STREAM_INTERVAL_MAX)}s",
        )
    return seconds


async def _stats_stream(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    interval = parse_interval(request.query.get("interval"))
    cursor = StreamCursor(st.surface, st.identity, _name_filter(request))
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    request[_STREAMING] = True
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    try:
        while not st.stopping.is_set():
            payload = _compact_dumps(cursor.next_snapshot())
            await resp.write(f"data: {payload}\n\n".encode())
            # Keep a steady cadence; after a stall (slow client) start afresh, don't burst.
            next_at = max(next_at + interval, loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(st.stopping.wait(), next_at - loop.time())
    except ConnectionResetError:
        # The client went away: the normal end of a stream.
        return resp
    return resp


async def _runtime(request: web.Request) -> web.Response:
    values = request.app[STATE].surface.runtime()
    return _json(
        {
            "layers": ["admin"],
            "entries": {
                k: {"layer_values": [v], "final_value": v} for k, v in sorted(values.items())
            },
        }
    )


async def _help(request: web.Request) -> web.Response:
    lines = [f"  {path}: {text}" for path, text in _ENDPOINTS]
    return web.Response(text="admin commands are:\n" + "\n".join(lines) + "\n")


# -- state-changing endpoints (POST, token) -------------------------------------------------


async def _post_config(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _read_body(request)
    current = st.surface.config
    try:
        config = parse_config(json.loads(body))
    except ConfigRejected as exc:
        return _rejected(st, current, exc.reasons)
    except (ValueError, UnicodeDecodeError) as exc:
        return _rejected(st, current, [f"body is not JSON: {exc}"])
    try:
        st.surface.apply(config)
    except (ValueError, OSError) as exc:
        # The data plane refused it (a port it cannot bind...): it keeps the old config.
        return _rejected(st, current, [f"apply failed: {exc}"])
    st.surface.stats.counter("config.update_success").inc()
    log.info("config version %s applied (was %s)", config.version, current.version)
    return _json(
        {
            **st.identity.describe(config),
            "previous": st.identity.describe(current),
            "changed": st.identity.hash(config) != st.identity.hash(current),
        }
    )


def _rejected(st: _State, current: SidecarConfig, reasons: list[str]) -> web.Response:
    st.surface.stats.counter("config.update_rejected").inc()
    log.warning("config rejected (%d reasons), keeping version %s", len(reasons), current.version)
    return _json(
        {"error": "config rejected", "reasons": reasons, "serving": st.identity.describe(current)},
        status=400,
    )


async def _runtime_modify(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await _read_body(request)
    values = dict(request.query)
    if body:
        try:
            values.update(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AdminError(400, f"body is not a form (key=value&...): {exc}") from None
    if not values:
        raise AdminError(400, "usage: POST /runtime_modify?key1=value1&key2=value2")
    try:
        st.surface.set_runtime(values)
    except ValueError as exc:
        raise AdminError(400, str(exc)) from None
    return web.Response(text="OK\n")


# -- app -----------------------------------------------------------------------------------

_ENDPOINTS = (
    ("/ready", "LIVE when serving"),
    ("/server_info", "version, state, uptime, node, config version"),
    ("/config_dump", "the serving config with its version and hash"),
    ("/clusters", "upstream clusters and hosts (?format=json)"),
    ("/stats", "stats (?format=json|prometheus, ?filter=REGEX, ?histogram_buckets=detailed)"),
    ("/stats/prometheus", "stats in Prometheus text format"),
    ("/stats/stream", "server-sent JSON snapshots (?interval=250ms, ?filter=REGEX)"),
    ("/runtime", "runtime overrides"),
    ("POST /runtime_modify", "set runtime overrides: ?key=value (token)"),
    ("POST /config", "hot swap the whole config (token)"),
)


async def _flush_loop(state: _State) -> None:
    while True:
        await asyncio.sleep(state.flush_interval)
        state.flush.run()


async def _flush_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_flush_loop(app[STATE]), name="meshdev-admin-stats-flush")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_streams(app: web.Application) -> None:
    # Streams otherwise run until their client leaves; shutdown must not wait for that.
    app[STATE].stopping.set()


def build_admin_app(
    surface: ControlSurface,
    *,
    token: str,
    server_info: dict[str, object],
    flush_interval: float = DEFAULT_FLUSH_INTERVAL,
) -> web.Application:
    """The admin web app; serve it on the admin listener (the host's loopback only)."""
    app = web.Application(middlewares=[_errors, _authorize])
    app[STATE] = _State(
        surface=surface,
        token=token,
        server_info=dict(server_info),
        flush=_Flush(IntervalReader(surface.stats)),
        flush_interval=flush_interval,
    )
    app.cleanup_ctx.append(_flush_ctx)
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/", _help)
    app.router.add_get("/help", _help)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/server_info", _server_info)
    app.router.add_get("/config_dump", _config_dump)
    app.router.add_get("/clusters", _clusters)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/stats/prometheus", _stats_prometheus)
    app.router.add_get("/stats/stream", _stats_stream)
    app.router.add_get("/runtime", _runtime)
    app.router.add_post("/runtime_modify", _runtime_modify)
    app.router.add_post("/config", _post_config)
    return app
