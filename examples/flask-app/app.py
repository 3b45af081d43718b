"""meshdev's example service: a small Flask app that makes mesh behaviour visible.

Run it with `python app.py`. It is configured only through the environment, the way both of
meshdev's runtimes (and Docker, and Kubernetes) configure an app:

    HOST, PORT          where to listen (0.0.0.0, 8080); PORT=0 takes a free port
    SERVICE or ROLE     the service name it reports (default: flask-app)
    VERSION             the version (subset) it reports (default: v1)
    POD or REPLICA      the pod name it reports (default: the hostname)
    UPSTREAM            base URL that /items calls, e.g. http://backend; unset: answer locally
    UPSTREAM_TIMEOUT    seconds allowed for that call (default 15, Envoy's route timeout)
    HTTP_PROXY          the sidecar's outbound listener; urllib sends the call through it
    PROPAGATE_HEADERS   extra comma-separated header names for /items to pass on
    LOG_REQUESTS=1      one log line per request (the app is quiet by default)

Endpoints:

    GET  /              who am I: service, version, pod, hostname
    GET  /items         the upstream's /items (or the local list), with who answered
    GET  /slow?ms=N     answers after N milliseconds
    GET  /status/<code> answers with that status code
    GET  /headers       the request headers as received (shows what the sidecar added)
    GET  /ws            a WebSocket echo: every message comes back (websocket_echo.py)
    GET  /healthz       liveness; never affected by chaos
    GET  /chaos         the current chaos settings
    POST /chaos         set them, as JSON or a form: error_rate (0..1), latency_ms,
                        status (default 503); `{}` or `reset` clears them

Chaos applies to every endpoint except /healthz, /chaos and /ws, so one replica can be made slow or
failing while the mesh's retries, outlier detection and breakers are watched dealing with it.
Every response carries `x-served-by: <pod>`.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any, TypeVar

import websocket_echo
from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import Headers
from werkzeug.serving import WSGIRequestHandler, make_server

# Headers an app must copy from its inbound request onto its outbound calls for tracing and
# header-based routing to work across hops; Istio's docs ask the same of every app.
PROPAGATED_HEADERS = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "sw8",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    # Routing keys the example mesh.yaml matches on (canary by header, per-user routing).
    "x-canary",
    "end-user",
    "user-agent",
)

# Upstream response headers worth showing: they tell which pod answered and what the mesh did.
SHOWN_UPSTREAM_HEADER = re.compile(r"^(x-envoy-|x-served-by$|x-ratelimit|retry-after$)")

ITEMS = (
    {"id": 1, "name": "espresso"},
    {"id": 2, "name": "flat white"},
    {"id": 3, "name": "cortado"},
)

N = TypeVar("N", int, float)

CHAOS_EXEMPT_ENDPOINTS = frozenset({"healthz", "chaos"})
MAX_DELAY_MS = 300_000
BODY_PREVIEW_CHARS = 2_000


@dataclass(frozen=True)
class Identity:
    service: str
    version: str
    pod: str
    hostname: str


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    identity: Identity
    upstream: str | None
    upstream_timeout: float
    propagated_headers: tuple[str, ...]
    log_requests: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        hostname = socket.gethostname()
        identity = Identity(
            service=env.get("SERVICE") or env.get("ROLE") or "flask-app",
            version=env.get("VERSION") or "v1",
            pod=env.get("POD") or env.get("REPLICA") or hostname,
            hostname=hostname,
        )
        extra = [h.strip().lower() for h in env.get("PROPAGATE_HEADERS", "").split(",")]
        return cls(
            host=env.get("HOST") or "0.0.0.0",
            port=_env_number(env, "PORT", 8080, int),
            identity=identity,
            upstream=(env.get("UPSTREAM") or "").rstrip("/") or None,
            upstream_timeout=_env_number(env, "UPSTREAM_TIMEOUT", 15.0, float),
            propagated_headers=tuple(dict.fromkeys([*PROPAGATED_HEADERS, *filter(None, extra)])),
            log_requests=env.get("LOG_REQUESTS", "") in {"1", "true", "yes"},
        )


def _env_number(env: Mapping[str, str], name: str, default: N, kind: type[N]) -> N:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise SystemExit(f"{name}={raw!r}: expected {expected}") from None
    if value < 0:
        raise SystemExit(f"{name}={raw!r}: must not be negative")
    return value


@dataclass(frozen=True)
class Chaos:
    error_rate: float = 0.0
    latency_ms: float = 0.0
    status: int = 503


class ChaosError(ValueError):
    """A /chaos request the app refuses, with every reason."""


def parse_chaos(data: Mapping[str, Any]) -> Chaos:
    """A POST /chaos body -> the new settings; missing fields take their defaults."""
    if "reset" in data:
        return Chaos()
    errors = [f"unknown field {key!r}" for key in data if key not in Chaos.__dataclass_fields__]
    values: dict[str, Any] = {}
    for name, kind, low, high in (
        ("error_rate", float, 0.0, 1.0),
        ("latency_ms", float, 0.0, float(MAX_DELAY_MS)),
        ("status", int, 400, 599),
    ):
        if name not in data:
            continue
        try:
            values[name] = _number(data[name], kind, low, high)
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise ChaosError("; ".join(errors))
    return Chaos(**values)


def _number(raw: object, kind: type[float] | type[int], low: float, high: float) -> float | int:
    # JSON's true/false would pass as 1/0; a knob that size deserves an explicit number.
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"expected a number, got {raw!r}")
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if kind is int and value != float(raw):
        raise ValueError(f"expected a whole number, got {raw!r}")
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low:g}..{high:g}")
    return value


@dataclass
class ChaosKnob:
    """This replica's chaos; replaced whole, so a request never sees half an update."""

    current: Chaos = field(default_factory=Chaos)
    rng: random.Random = field(default_factory=random.Random)

    def strikes(self, chaos: Chaos) -> bool:
        return chaos.error_rate > 0 and self.rng.random() < chaos.error_rate


@dataclass(frozen=True)
class UpstreamReply:
    status: int
    headers: dict[str, str]
    body: bytes


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # The caller should see the upstream's own status code, redirects included.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# build_opener keeps urllib's ProxyHandler, which reads HTTP_PROXY / NO_PROXY: that is how the
# call reaches the sidecar's outbound listener, in absolute form (GET http://backend/items).
_OPENER = urllib.request.build_opener(_NoRedirects)


def call_upstream(url: str, headers: Mapping[str, str], timeout: float) -> UpstreamReply:
    """GET url; an HTTP error status is a reply like any other, not an exception."""
    req = urllib.request.Request(url, headers=dict(headers), method="GET")
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return UpstreamReply(resp.status, _lower(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return UpstreamReply(err.code, _lower(err.headers.items()), err.read())


def _lower(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def propagated(inbound: Headers, names: tuple[str, ...]) -> dict[str, str]:
    return {name: value for name in names if (value := inbound.get(name)) is not None}


def describe_reply(url: str, reply: UpstreamReply) -> dict[str, Any]:
    text = reply.body.decode("utf-8", errors="replace")
    body: Any
    try:
        body = json.loads(text)
    except ValueError:
        body = text[:BODY_PREVIEW_CHARS]
    shown = {k: v for k, v in reply.headers.items() if SHOWN_UPSTREAM_HEADER.match(k)}
    answered_by = body.get("answered_by") if isinstance(body, dict) else None
    if answered_by is None and "x-served-by" in reply.headers:
        answered_by = {"pod": reply.headers["x-served-by"]}
    return {
        "url": url,
        "status": reply.status,
        "headers": shown,
        "answered_by": answered_by,
        "body": body,
    }


def create_app(settings: Settings) -> Flask:
    app = Flask(__name__)
    # Keep fields in the order written (service, version, pod...), which is how people read.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    me = settings.identity
    knob = ChaosKnob()

    @app.before_request
    def inject_chaos() -> ResponseReturnValue | None:
        if request.endpoint in CHAOS_EXEMPT_ENDPOINTS:
            return None
        chaos = knob.current
        if chaos.latency_ms > 0:
            time.sleep(chaos.latency_ms / 1000)
        if knob.strikes(chaos):
            return jsonify(error="chaos", pod=me.pod, chaos=asdict(chaos)), chaos.status
        return None

    @app.after_request
    def tag_response(response: Response) -> Response:
        response.headers["x-served-by"] = me.pod
        return response

    @app.get("/")
    def whoami() -> ResponseReturnValue:
        return jsonify(asdict(me))

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    @app.get("/headers")
    def headers() -> ResponseReturnValue:
        return jsonify(headers={k.lower(): v for k, v in request.headers.items()})

    @app.get("/slow")
    def slow() -> ResponseReturnValue:
        raw = request.args.get("ms", "0")
        try:
            ms = _number(raw, float, 0, MAX_DELAY_MS)
        except ValueError as exc:
            return jsonify(error=f"ms: {exc}"), 400
        time.sleep(ms / 1000)
        return jsonify(pod=me.pod, slept_ms=ms)

    @app.get("/status/<int:code>")
    def status(code: int) -> ResponseReturnValue:
        if not 200 <= code <= 599:
            return jsonify(error=f"status {code} is outside 200..599"), 400
        if code in {204, 304}:
            return Response(status=code)  # these statuses must not carry a body
        return jsonify(pod=me.pod, status=code), code

    @app.get("/items")
    def items() -> ResponseReturnValue:
        trace = propagated(request.headers, settings.propagated_headers)
        if settings.upstream is None:
            return jsonify(**asdict(me), answered_by=asdict(me), items=ITEMS, trace=trace)
        url = settings.upstream + "/items"
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        try:
            reply = call_upstream(url, trace, settings.upstream_timeout)
        except (OSError, http.client.HTTPException) as exc:
            # URLError (an OSError) wraps connect failures; a read timeout arrives bare.
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            status = 504 if isinstance(reason, TimeoutError) else 502
            return jsonify(**asdict(me), upstream={"url": url, "error": str(reason)}), status
        upstream = describe_reply(url, reply)
        body = upstream["body"]
        listed = body.get("items") if isinstance(body, dict) else None
        return jsonify(
            **asdict(me),
            answered_by=upstream["answered_by"],
            items=listed,
            trace=trace,
            upstream=upstream,
        ), reply.status

    @app.route("/chaos", methods=["GET", "POST", "DELETE"])
    def chaos() -> ResponseReturnValue:
        if request.method == "DELETE":
            knob.current = Chaos()
        elif request.method == "POST":
            data = chaos_request_data()
            if not isinstance(data, dict):
                return jsonify(error="expected a JSON object or a form"), 400
            try:
                knob.current = parse_chaos(data)
            except ChaosError as exc:
                return jsonify(error=str(exc)), 400
        return jsonify(pod=me.pod, chaos=asdict(knob.current))

    return app


def chaos_request_data() -> Any:
    """The POST /chaos body as a mapping; None when it is not valid JSON."""
    if "reset" in request.args:
        return {"reset": True}
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    # `curl -d '{...}'` sends JSON labelled as a form, so the body's shape decides.
    if request.is_json or raw.lstrip().startswith(b"{"):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return request.form.to_dict()


def request_handler(log_requests: bool) -> type[WSGIRequestHandler]:
    class RequestHandler(WSGIRequestHandler):
        # Keep-alive: the sidecar reuses its connections to the app instead of opening one
        # per request (Werkzeug's default, HTTP/1.0, closes after every response).
        protocol_version = "HTTP/1.1"

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # Werkzeug's own line carries ANSI colours, which garble `docker logs` and files.
            if log_requests:
                self.log("info", '"%s" %s %s', self.requestline, code, size)

        def run_wsgi(self) -> None:
            # WSGI cannot hand a connection over, so /ws is served here, before Flask.
            path = urllib.parse.urlsplit(self.path).path
            upgrade, connection = self.headers.get("Upgrade"), self.headers.get("Connection")
            if (
                self.command == "GET"
                and path == "/ws"
                and websocket_echo.is_upgrade(upgrade, connection)
            ):
                self.serve_websocket()
            else:
                super().run_wsgi()

        def serve_websocket(self) -> None:
            key = self.headers.get("Sec-WebSocket-Key")
            if not key or self.headers.get("Sec-WebSocket-Version") != "13":
                self.send_error(400, "expected a WebSocket version 13 handshake")
                return
            self.close_connection = True
            self.wfile.write(websocket_echo.handshake(key))
            self.log_request(101)
            websocket_echo.echo(self.rfile, self.wfile)

    return RequestHandler


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # As PID 1 in a container a default SIGTERM is ignored, and `docker stop` would wait 10 s.
    raise SystemExit(0)


def main() -> None:
    settings = Settings.from_env(os.environ)
    server = make_server(
        settings.host,
        settings.port,
        create_app(settings),
        # A thread per connection, so injected latency never queues behind a fixed pool.
        threaded=True,
        request_handler=request_handler(settings.log_requests),
    )
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    me = settings.identity
    print(
        f"{me.service} {me.version} pod {me.pod} listening on "
        f"http://{settings.host}:{server.server_port}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
