"""The admin API's endpoints, in Envoy's dialect plus meshdev's /stats/stream and POST /config.

Reads go through a `ControlSurface` (admin/views.py), never the proxy's internals. Successes
answer what Envoy answers (text or JSON); every error is `{"error": ...}` (admin/transport.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qsl

from pydantic import ValidationError

from meshdev.common.histogram import HistogramSnapshot
from meshdev.common.sidecar_config import (
    ConfigRejected,
    SidecarConfig,
    parse_config_json,
)
from meshdev.common.stattags import TagExtractor
from meshdev.common.trace_wire import SPANS_PATH
from meshdev.common.waiting import wait_set
from meshdev.common.workload_certs import CERTS_PATH, WorkloadCerts
from meshdev.sidecar.admin.app_health import ProbeRefused, app_endpoint, probe
from meshdev.sidecar.admin.clusters import render_clusters_json, render_clusters_text
from meshdev.sidecar.admin.transport import (
    READ_METHODS,
    AdminError,
    Answer,
    Call,
    Route,
    get,
    json_answer,
    post,
    read_body,
    text_answer,
)
from meshdev.sidecar.admin.views import CertsSurface, ControlSurface, SpansSurface
from meshdev.sidecar.stats.formats import (
    PROMETHEUS_CONTENT_TYPE,
    BadFilter,
    compile_filter,
    render_json,
    render_prometheus,
    render_text,
)
from meshdev.sidecar.stats.server import count_config_update
from meshdev.sidecar.stats.store import IntervalReader
from meshdev.sidecar.stats.stream import ConfigIdentity, DeltaCursor, StreamCursor, node_info

log = logging.getLogger(__name__)

STREAM_INTERVAL_DEFAULT = 1.0
STREAM_INTERVAL_MIN = 0.05
STREAM_INTERVAL_MAX = 60.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_STREAM_HEADERS = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]

_compact_dumps = partial(json.dumps, allow_nan=False, separators=(",", ":"))


@dataclass(slots=True)
class Flush:
    """The Envoy-style stats flush: /stats shows the histogram intervals of the last one."""

    reader: IntervalReader
    intervals: dict[str, HistogramSnapshot] = field(default_factory=dict)

    def run(self) -> None:
        self.intervals = {h.name: h.interval for h in self.reader.read().histograms}


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


def _name_filter(call: Call) -> re.Pattern[str] | None:
    try:
        return compile_filter(call.query.get("filter"))
    except BadFilter as exc:
        raise AdminError(400, str(exc)) from None


_HELP = (
    ("/ready", "LIVE when serving (503 and why while it cannot, e.g. no certificate yet)"),
    ("/app-health", "probe this pod's app directly (?path=/healthz; none: its port accepts)"),
    ("/certs", "the workload certificate in use, Envoy's shape (never the key)"),
    ("/server_info", "version, state, uptime, node, config version"),
    ("/config_dump", "the serving config with its version and hash"),
    ("/clusters", "upstream clusters and hosts (?format=json)"),
    ("/stats", "stats (?format=json|prometheus, ?filter=REGEX, ?histogram_buckets=detailed)"),
    ("/stats/prometheus", "stats in Prometheus text format"),
    ("/stats/stream", "server-sent JSON snapshots (?interval=250ms, ?filter=REGEX, ?v=2: deltas)"),
    ("/spans", "recent spans, Zipkin v2 JSON (?since=N: from span number N on)"),
    ("/runtime", "runtime overrides"),
    ("POST /runtime_modify", "set runtime overrides: ?key=value (token)"),
    ("POST /config", "hot swap the whole config (token)"),
    ("POST /certs", "install the workload certificate (token; WorkloadCerts JSON)"),
)


@dataclass(slots=True)
class Endpoints:
    """The admin endpoints over one data plane; `routes()` is the path table."""

    surface: ControlSurface
    # What /server_info says about the process (version, command line options...).
    base_info: dict[str, object]
    flush: Flush
    # Set at shutdown: open streams end instead of running until their client leaves.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    identity: ConfigIdentity = field(default_factory=ConfigIdentity)
    # The workload certificate's side; None: this admin API takes no certificates.
    certs: CertsSurface | None = None
    # The recent spans; None: this admin API has none (GET /spans answers an empty ring).
    spans: SpansSurface | None = None
    _tags: tuple[SidecarConfig, TagExtractor] | None = None

    def routes(self) -> dict[str, Route]:
        return {
            "/": get(self.help),
            "/help": get(self.help),
            "/ready": get(self.ready),
            "/app-health": get(self.app_health),
            "/server_info": get(self.server_info),
            "/config_dump": get(self.config_dump),
            "/clusters": get(self.clusters),
            "/stats": get(self.stats),
            "/stats/prometheus": get(self.stats_prometheus),
            "/stats/stream": get(self.stats_stream),
            SPANS_PATH: get(self.spans_endpoint),
            "/runtime": get(self.runtime),
            "/runtime_modify": post(self.runtime_modify),
            "/config": post(self.post_config),
            # A read (GET, HEAD) and, with the token, a state change (POST).
            CERTS_PATH: Route(READ_METHODS | {"POST"}, self.certs_endpoint),
        }

    def _tag_extractor(self) -> TagExtractor:
        config = self.surface.config
        if self._tags is None or self._tags[0] is not config:
            self._tags = (config, TagExtractor.for_config(config))
        return self._tags[1]

    # -- reads ------------------------------------------------------------------------------

    async def help(self, call: Call) -> Answer:
        lines = [f"  {path}: {text}" for path, text in _HELP]
        return text_answer("admin commands are:\n" + "\n".join(lines) + "\n")

    async def ready(self, call: Call) -> Answer:
        certs = self.certs
        problem = certs.not_ready() if certs is not None else None
        if problem is not None:
            # Envoy answers 503 while initializing; the reason tells the control plane what.
            raise AdminError(503, problem, state="INITIALIZING")
        return text_answer("LIVE\n")

    async def app_health(self, call: Call) -> Answer:
        try:
            address, port = app_endpoint(self.surface.config)
            ok, why = await probe(address, port, call.query.get("path"))
        except ProbeRefused as exc:
            raise AdminError(400, str(exc)) from None
        if not ok:
            raise AdminError(503, why)
        return text_answer(f"{why}\n")

    async def server_info(self, call: Call) -> Answer:
        config = self.surface.config
        uptime = time.monotonic() - self.started
        info: dict[str, object] = {"version": "unknown", **self.base_info}
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
                    "metadata": node_info(config),
                },
                "mesh": config.mesh,
                "config": self.identity.describe(config),
            }
        )
        return json_answer(info)

    async def config_dump(self, call: Call) -> Answer:
        config = self.surface.config
        return json_answer(
            {
                "version": config.version,
                "hash": self.identity.hash(config),
                "config": config.model_dump(mode="json"),
            }
        )

    async def clusters(self, call: Call) -> Answer:
        surface = self.surface
        config, hosts, breakers = surface.config, surface.hosts(), surface.breakers()
        fmt = call.query.get("format", "text")
        if fmt == "json":
            return json_answer(render_clusters_json(config, hosts, breakers))
        if fmt != "text":
            raise AdminError(400, f"unknown format {fmt!r}: use text or json")
        return text_answer(render_clusters_text(config, hosts, breakers))

    async def stats(self, call: Call) -> Answer:
        name_filter = _name_filter(call)
        fmt = call.query.get("format", "text")
        buckets = call.query.get("histogram_buckets", "summary")
        if buckets not in ("summary", "detailed"):
            raise AdminError(400, f"unknown histogram_buckets {buckets!r}: use summary or detailed")
        store, intervals = self.surface.stats, self.flush.intervals
        if fmt == "json":
            detailed = buckets == "detailed"
            return json_answer(
                render_json(store, intervals, name_filter, detailed_buckets=detailed)
            )
        if fmt == "prometheus":
            return self._prometheus(name_filter)
        if fmt != "text":
            raise AdminError(400, f"unknown format {fmt!r}: use text, json or prometheus")
        return text_answer(render_text(store, intervals, name_filter))

    async def stats_prometheus(self, call: Call) -> Answer:
        return self._prometheus(_name_filter(call))

    def _prometheus(self, name_filter: re.Pattern[str] | None) -> Answer:
        body = render_prometheus(self.surface.stats, self._tag_extractor(), name_filter)
        return text_answer(body, PROMETHEUS_CONTENT_TYPE)

    async def stats_stream(self, call: Call) -> None:
        interval = parse_interval(call.query.get("interval"))
        version = call.query.get("v", "1")
        if version not in ("1", "2"):
            raise AdminError(400, f"unknown stream version v={version!r}: use 1 or 2")
        cursor_type = DeltaCursor if version == "2" else StreamCursor
        cursor = cursor_type(self.surface, self.identity, _name_filter(call))
        writer = call.writer
        await writer.start(200, _STREAM_HEADERS)
        if call.request.method == "HEAD":
            return
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        # A client that leaves cancels this task (the HTTP engine); shutdown ends it through
        # `stopping`.
        while not self.stopping.is_set():
            payload = _compact_dumps(cursor.next_snapshot())
            await writer.write(f"data: {payload}\n\n".encode())
            # Keep a steady cadence; after a stall (slow client) start afresh, don't burst.
            next_at = max(next_at + interval, loop.time())
            await wait_set(self.stopping, next_at - loop.time())

    async def spans_endpoint(self, call: Call) -> Answer:
        raw = call.query.get("since", "0")
        if not (raw.isascii() and raw.isdigit()):
            raise AdminError(400, f"since {raw!r}: expected a span number (0 or more)")
        if self.spans is None:
            node = self.surface.config.node
            return json_answer({"node": node, "first": 0, "next": 0, "dropped": 0, "spans": []})
        return json_answer(self.spans.spans(int(raw)))

    async def runtime(self, call: Call) -> Answer:
        values = self.surface.runtime()
        entries = {k: {"layer_values": [v], "final_value": v} for k, v in sorted(values.items())}
        return json_answer({"layers": ["admin"], "entries": entries})

    # -- state changes (POST, token: transport.Router) --------------------------------------

    def _body_limit(self) -> int:
        return self.surface.config.limits.max_admin_body

    async def post_config(self, call: Call) -> Answer:
        body = await read_body(call.request, self._body_limit())
        current = self.surface.config
        try:
            config = parse_config_json(body)
        except ConfigRejected as exc:
            return self._rejected(current, exc.reasons)
        except (ValueError, UnicodeDecodeError) as exc:
            return self._rejected(current, [f"body is not JSON: {exc}"])
        try:
            self.surface.apply(config)
        except (ValueError, OSError) as exc:
            # The data plane refused it (a port it cannot bind...): it keeps the old config.
            return self._rejected(current, [f"apply failed: {exc}"])
        # The answer tells the control plane the config is in force; when it turned TLS on,
        # that includes "no plaintext request of mine is still on its way" (staging, round 2).
        await self.surface.settle()
        # Read once: each read of `stats` first brings every cluster's counts up to date.
        stats = self.surface.stats
        stats.counter("config.update_success").inc()
        count_config_update(stats, applied=True)
        log.info("config version %s applied (was %s)", config.version, current.version)
        identity = self.identity
        return json_answer(
            {
                **identity.describe(config),
                "previous": identity.describe(current),
                "changed": identity.hash(config) != identity.hash(current),
            }
        )

    def _rejected(self, current: SidecarConfig, reasons: list[str]) -> Answer:
        self.surface.stats.counter("config.update_rejected").inc()
        count_config_update(self.surface.stats, applied=False)
        log.warning(
            "config rejected (%d reasons), keeping version %s", len(reasons), current.version
        )
        serving = self.identity.describe(current)
        return json_answer(
            {"error": "config rejected", "reasons": reasons, "serving": serving}, status=400
        )

    async def certs_endpoint(self, call: Call) -> Answer:
        if call.request.method in READ_METHODS:
            return json_answer(
                self.certs.certs() if self.certs is not None else {"certificates": []}
            )
        return await self.post_certs(call)

    async def post_certs(self, call: Call) -> Answer:
        """Install the workload certificate (WorkloadCerts JSON); 400 with every reason when
        it cannot be used, and the one in use stays."""
        certs_side = self.certs
        if certs_side is None:
            raise AdminError(404, "this admin API takes no certificates")
        body = await read_body(call.request, self._body_limit())
        try:
            certs = WorkloadCerts.model_validate_json(body)
        except ValidationError as exc:
            reasons = [
                f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
            return self._certs_rejected(reasons)
        reasons = certs_side.install_certs(certs)
        if reasons:
            return self._certs_rejected(reasons)
        self.surface.stats.counter("certs.update_success").inc()
        return json_answer(certs_side.certs())

    def _certs_rejected(self, reasons: list[str]) -> Answer:
        self.surface.stats.counter("certs.update_rejected").inc()
        log.warning("workload certificate rejected: %s", "; ".join(reasons))
        return json_answer({"error": "certificates rejected", "reasons": reasons}, status=400)

    async def runtime_modify(self, call: Call) -> Answer:
        body = await read_body(call.request, self._body_limit())
        values = dict(call.query)
        if body:
            try:
                values.update(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True))
            except (ValueError, UnicodeDecodeError) as exc:
                raise AdminError(400, f"body is not a form (key=value&...): {exc}") from None
        if not values:
            raise AdminError(400, "usage: POST /runtime_modify?key1=value1&key2=value2")
        try:
            self.surface.set_runtime(values)
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
        return text_answer("OK\n")
