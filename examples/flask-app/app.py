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
    GREETER             the gRPC service /greet calls, e.g. greeter (greeter.py); unset: none.
                        With HTTP_PROXY set (the process runtime) the call dials the proxy's
                        host:port itself, in h2c, with the service name as :authority, which is
                        how the sidecar routes it: grpcio would otherwise tunnel through the
                        proxy with CONNECT, which a sidecar's outbound listener does not serve.
                        Without it (Docker, where the pod's traffic is captured), or when
                        NO_PROXY names GREETER's host, the call dials GREETER itself, on port 80
                        unless GREETER names one (host:port).
    PROPAGATE_HEADERS   extra comma-separated header names for /items to pass on
    LOG_REQUESTS=1      one log line per request (the app is quiet by default)

Endpoints:

    GET  /              who am I: service, version, pod, hostname
    GET  /items         the upstream's /items (or the local list), with who answered
    GET  /slow?ms=N     answers after N milliseconds
    GET  /status/<code> answers with that status code
    GET  /headers       the request headers as received (shows what the sidecar added)
    GET  /ws            a WebSocket echo: every message comes back (websocket_echo.py)
    GET  /greet?name=N  GREETER's unary gRPC call /greeter.Greeter/SayHello, with who answered
    GET  /greet?name=N&count=K[&interval_ms=T]
                        its server-streaming /greeter.Greeter/SayHellos: K greetings, T ms apart
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
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import websocket_echo
from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import Headers
from werkzeug.serving import WSGIRequestHandler, make_server

if TYPE_CHECKING:
    import grpc

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
class GreeterTarget:
    """Where /greet's gRPC calls go: the address dialled and the :authority sent."""

    service: str  # GREETER, as configured
    address: str  # host:port that the channel dials
    authority: str | None  # :authority, when it is not the address (through the sidecar)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GreeterTarget | None:
        service = (env.get("GREETER") or "").strip()
        if not service:
            return None
        proxy = env.get("HTTP_PROXY") or env.get("http_proxy")
        no_proxy = env.get("NO_PROXY") or env.get("no_proxy") or ""
        if proxy and not _bypasses_proxy(service, no_proxy):
            # The sidecar's outbound listener also speaks h2c and routes by :authority, as it
            # routes an HTTP/1.1 request by Host: dial it and name the service.
            parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            host = parts.hostname or "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            return cls(service, f"{host}:{parts.port or 80}", service)
        has_port = re.search(r":\d+$", service) is not None
        return cls(service, service if has_port else f"{service}:80", None)


def _bypasses_proxy(target: str, no_proxy: str) -> bool:
    """NO_PROXY names target's host (exactly, as a domain suffix, or `*`), as urllib reads it."""
    host = urllib.parse.urlsplit(f"//{target}").hostname or target
    for entry in (e.strip().lower().lstrip(".") for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return True
    return False


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    identity: Identity
    upstream: str | None
    upstream_timeout: float
    propagated_headers: tuple[str, ...]
    log_requests: bool
    greeter: GreeterTarget | None = None

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
            greeter=GreeterTarget.from_env(env),
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


# greeter.py's methods. Its messages are JSON, so no generated code is needed on either side.
SAY_HELLO = "/greeter.Greeter/SayHello"
SAY_HELLOS = "/greeter.Greeter/SayHellos"

# The HTTP status /greet answers for a gRPC status (any other failure: 502, as for /items).
GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class GreeterError(Exception):
    """A /greet call that ended with a gRPC status other than OK."""

    def __init__(self, status: str, details: str) -> None:
        super().__init__(f"{status}: {details}")
        self.status = status
        self.details = details


class GreeterClient:
    """One gRPC channel to GREETER, opened at the first call and shared by every request thread
    (a grpcio channel is thread-safe and multiplexes its calls on one HTTP/2 connection).

    grpcio is imported only here: the rest of the app runs without it."""

    def __init__(self, target: GreeterTarget) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None

    def _open(self) -> grpc.Channel:
        import grpc

        with self._lock:
            if self._channel is None:
                # grpcio reads http_proxy itself and would send CONNECT; the mesh is the proxy.
                options: list[tuple[str, str | int]] = [("grpc.enable_http_proxy", 0)]
                if self.target.authority is not None:
                    options.append(("grpc.default_authority", self.target.authority))
                self._channel = grpc.insecure_channel(self.target.address, options=options)
            return self._channel

    def call(
        self, method: str, args: Mapping[str, Any], metadata: Mapping[str, str], timeout: float
    ) -> list[dict[str, Any]]:
        """Every answer to one call (one for unary, the stream's for server streaming)."""
        import grpc

        channel = self._open()
        body = json.dumps(args).encode()
        sent = tuple(metadata.items())
        answers: list[bytes]
        try:
            if method == SAY_HELLOS:
                stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(method)
                answers = list(stream(body, timeout=timeout, metadata=sent))
            else:
                unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
                answers = [unary(body, timeout=timeout, metadata=sent)]
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise GreeterError(code.name, details or "") from None
        return [json.loads(answer) for answer in answers]


def grpc_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """Propagated headers as gRPC metadata: grpc-* names are gRPC's own (grpc-trace-bin is even
    binary) and grpcio sends its own user-agent, so those stay behind."""
    return {
        name: value
        for name, value in headers.items()
        if not name.startswith("grpc-")
        and name != "user-agent"
        and value.isascii()
        and value.isprintable()
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

    greeter = GreeterClient(settings.greeter) if settings.greeter is not None else None

    @app.get("/greet")
    def greet() -> ResponseReturnValue:
        if greeter is None:
            return jsonify(**asdict(me), error="GREETER is not set: no gRPC service to call"), 404
        args: dict[str, Any] = {"name": request.args.get("name", "world")}
        for key in ("count", "interval_ms"):
            if key in request.args:
                try:
                    args[key] = int(request.args[key])
                except ValueError:
                    return jsonify(error=f"{key}: expected a whole number"), 400
        method = SAY_HELLOS if "count" in args else SAY_HELLO
        target = greeter.target
        described: dict[str, Any] = {
            "service": target.service,
            "address": target.address,
            "authority": target.authority or target.address,
            "method": method,
        }
        trace = propagated(request.headers, settings.propagated_headers)
        try:
            answers = greeter.call(method, args, grpc_metadata(trace), settings.upstream_timeout)
        except ImportError:
            described["error"] = "grpcio is not installed: pip install -r requirements.txt"
            return jsonify(**asdict(me), grpc=described), 501
        except GreeterError as exc:
            described.update(status=exc.status, details=exc.details)
            return jsonify(**asdict(me), grpc=described), GRPC_TO_HTTP.get(exc.status, 502)
        described.update(status="OK", metadata=answers[0]["metadata"] if answers else {})
        said: dict[str, Any] = (
            {"messages": [a["message"] for a in answers]}
            if method == SAY_HELLOS
            else {"message": answers[0]["message"]}
        )
        answered_by = answers[0]["answered_by"] if answers else None
        return jsonify(**asdict(me), answered_by=answered_by, **said, trace=trace, grpc=described)

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
