"""The example app (examples/flask-app/app.py) as users and sidecars meet it: a real process
answering real HTTP on loopback, calling its upstream directly or through an HTTP proxy."""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, free_port, wait_until_sync

APP = ROOT / "examples" / "flask-app" / "app.py"
START_TIMEOUT_S = 20.0
# Whatever the machine or the test runner set, each app sees only the env a test gives it.
SCRUBBED_ENV = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
    "NO_PROXY", "no_proxy", "SERVICE", "ROLE", "VERSION", "POD", "REPLICA", "UPSTREAM",
    "UPSTREAM_TIMEOUT", "PROPAGATE_HEADERS", "LOG_REQUESTS", "HOST", "PORT",
)  # fmt: skip
READY_LINE = re.compile(r"listening on http://(?P<host>[^\s:]+):(?P<port>\d+)")

TRACE_HEADERS = {
    "x-request-id": "req-42",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-canary": "1",
}


# ---------------------------------------------------------------------------------------------
# Running apps


@dataclass
class RunningApp:
    url: str
    process: subprocess.Popen[str]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.process.returncode


@dataclass
class AppLauncher:
    """Starts app.py processes on 127.0.0.1 (PORT=0: the app reports the port it got)."""

    workdir: Path
    apps: list[RunningApp] = field(default_factory=list)

    def start(self, **env: str) -> RunningApp:
        full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        full_env.update({"HOST": "127.0.0.1", "PORT": "0", **env})
        stderr_path = self.workdir / f"app-{len(self.apps)}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(APP)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=full_env,
            )
        app = RunningApp("", process, stderr_path)
        self.apps.append(app)
        app.url = self._wait_ready(app)
        return app

    def _wait_ready(self, app: RunningApp) -> str:
        assert app.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(app.process.stdout, selectors.EVENT_READ)
            if selector.select(timeout=START_TIMEOUT_S):
                line = app.process.stdout.readline()
                if match := READY_LINE.search(line):
                    return f"http://{match['host']}:{match['port']}"
        app.stop()
        pytest.fail(f"app.py did not report a listening address; stderr:\n{app.stderr()}")

    def close(self) -> None:
        for app in self.apps:
            app.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[AppLauncher]:
    apps = AppLauncher(tmp_path)
    yield apps
    apps.close()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppLauncher]:
    apps = AppLauncher(tmp_path_factory.mktemp("apps"))
    yield apps
    apps.close()


@pytest.fixture(scope="module")
def backend(module_launcher: AppLauncher) -> RunningApp:
    """A leaf service (no UPSTREAM), named the way the process runtime names pods."""
    return module_launcher.start(ROLE="backend", VERSION="v2", REPLICA="backend-v2-0")


@pytest.fixture(scope="module")
def frontend(module_launcher: AppLauncher, backend: RunningApp) -> RunningApp:
    return module_launcher.start(SERVICE="frontend", POD="frontend-0", UPSTREAM=backend.url)


# ---------------------------------------------------------------------------------------------
# A plain HTTP client that never uses a proxy, and a recording forward proxy


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target or "/", body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def post_json(url: str, data: object) -> Reply:
    return call(url, "POST", json.dumps(data).encode(), {"content-type": "application/json"})


def post_form(url: str, form: str) -> Reply:
    return call(url, "POST", form.encode(), {"content-type": "application/x-www-form-urlencoded"})


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    target: str  # the request line's target, as the client sent it
    headers: dict[str, str]


class RecordingProxy:
    """An HTTP forward proxy, like a sidecar's outbound listener: it records each request and
    forwards it by its Host to the address `routes` gives, as service discovery would."""

    def __init__(self, routes: Mapping[str, str]) -> None:
        self.routes = dict(routes)
        self.requests: list[ProxiedRequest] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.requests.append(
                    ProxiedRequest(
                        self.command, self.path, {k.lower(): v for k, v in self.headers.items()}
                    )
                )
                target = urllib.parse.urlsplit(self.path)
                upstream = proxy.routes.get(target.netloc)
                if upstream is None:
                    self.send_error(502, f"no route for {target.netloc!r}")
                    return
                forwarded = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                path = target.path + (f"?{target.query}" if target.query else "")
                reply = call(upstream + path, headers=forwarded)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    if name not in {"connection", "transfer-encoding", "content-length"}:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test asserts on `requests`; access lines would only be noise

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> RecordingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


# ---------------------------------------------------------------------------------------------
# Identity


def test_root_reports_identity_from_env(launcher: AppLauncher) -> None:
    app = launcher.start(SERVICE="catalog", VERSION="v3", POD="catalog-v3-1")
    reply = call(app.url + "/")
    assert reply.status == 200
    assert reply.json() == {
        "service": "catalog",
        "version": "v3",
        "pod": "catalog-v3-1",
        "hostname": socket.gethostname(),
    }
    assert reply.headers["x-served-by"] == "catalog-v3-1"


def test_identity_falls_back_to_role_replica_and_defaults(
    backend: RunningApp, launcher: AppLauncher
) -> None:
    who = call(backend.url + "/").json()
    assert (who["service"], who["version"], who["pod"]) == ("backend", "v2", "backend-v2-0")

    bare = call(launcher.start().url + "/").json()
    assert bare == {
        "service": "flask-app",
        "version": "v1",
        "pod": socket.gethostname(),
        "hostname": socket.gethostname(),
    }


def test_bad_port_is_refused_with_its_name() -> None:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    done = subprocess.run(
        [sys.executable, str(APP)],
        env={**env, "PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "PORT='eighty': expected an integer" in done.stderr


# ---------------------------------------------------------------------------------------------
# Simple endpoints


def test_healthz(backend: RunningApp) -> None:
    reply = call(backend.url + "/healthz")
    assert (reply.status, reply.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("code", [200, 201, 404, 418, 500, 503])
def test_status_answers_the_code_asked_for(backend: RunningApp, code: int) -> None:
    reply = call(f"{backend.url}/status/{code}")
    assert reply.status == code
    assert reply.json() == {"pod": "backend-v2-0", "status": code}


def test_status_204_has_no_body(backend: RunningApp) -> None:
    reply = call(backend.url + "/status/204")
    assert (reply.status, reply.body) == (204, b"")


@pytest.mark.parametrize("code", [99, 150, 600])
def test_status_outside_the_final_range_is_a_bad_request(backend: RunningApp, code: int) -> None:
    assert call(f"{backend.url}/status/{code}").status == 400


def test_slow_answers_after_the_delay_asked_for(backend: RunningApp) -> None:
    started = time.monotonic()
    reply = call(backend.url + "/slow?ms=250")
    waited = time.monotonic() - started
    assert reply.status == 200
    assert reply.json() == {"pod": "backend-v2-0", "slept_ms": 250.0}
    assert waited >= 0.25  # a lower bound: the delay itself is the behaviour under test


@pytest.mark.parametrize("ms", ["-1", "abc", "9999999"])
def test_slow_refuses_a_bad_delay(backend: RunningApp, ms: str) -> None:
    reply = call(f"{backend.url}/slow?ms={ms}")
    assert reply.status == 400
    assert reply.json()["error"].startswith("ms: ")


def test_headers_echoes_what_arrived(backend: RunningApp) -> None:
    reply = call(backend.url + "/headers", headers={"X-Forwarded-For": "10.0.0.7"})
    assert reply.json()["headers"]["x-forwarded-for"] == "10.0.0.7"


# ---------------------------------------------------------------------------------------------
# /items: locally, through UPSTREAM, and through an HTTP proxy (the sidecar's outbound port)


def test_items_without_upstream_answers_its_own_list(backend: RunningApp) -> None:
    reply = call(backend.url + "/items", headers=TRACE_HEADERS)
    assert reply.status == 200
    body = reply.json()
    assert body["answered_by"]["pod"] == "backend-v2-0"
    assert body["items"]
    assert all({"id", "name"} <= set(item) for item in body["items"])
    assert body["trace"] == TRACE_HEADERS


def test_items_calls_upstream_and_propagates_trace_headers(
    frontend: RunningApp, backend: RunningApp
) -> None:
    own = call(backend.url + "/items").json()["items"]

    reply = call(frontend.url + "/items", headers={**TRACE_HEADERS, "x-private": "secret"})

    assert reply.status == 200
    body = reply.json()
    assert body["service"] == "frontend"
    assert body["answered_by"]["pod"] == "backend-v2-0"
    assert body["items"] == own
    assert body["upstream"]["url"] == backend.url + "/items"
    assert body["upstream"]["headers"]["x-served-by"] == "backend-v2-0"
    seen_by_backend = body["upstream"]["body"]["trace"]
    for name, value in TRACE_HEADERS.items():
        assert seen_by_backend[name] == value


def test_items_passes_on_the_upstream_status(launcher: AppLauncher) -> None:
    failing = launcher.start(SERVICE="backend", POD="backend-0")
    assert post_json(failing.url + "/chaos", {"error_rate": 1, "status": 503}).status == 200
    frontend = launcher.start(SERVICE="frontend", UPSTREAM=failing.url)

    reply = call(frontend.url + "/items")

    assert reply.status == 503
    body = reply.json()
    assert body["answered_by"] == {"pod": "backend-0"}
    assert body["upstream"]["status"] == 503
    assert body["upstream"]["body"]["error"] == "chaos"


def test_items_with_an_unreachable_upstream_is_a_bad_gateway(launcher: AppLauncher) -> None:
    frontend = launcher.start(UPSTREAM=f"http://127.0.0.1:{free_port()}")
    reply = call(frontend.url + "/items")
    assert reply.status == 502
    assert "refused" in reply.json()["upstream"]["error"].lower()


def test_items_goes_through_http_proxy_in_absolute_form(
    launcher: AppLauncher, backend: RunningApp
) -> None:
    with RecordingProxy({"backend": backend.url}) as proxy:
        frontend = launcher.start(
            SERVICE="frontend", UPSTREAM="http://backend", HTTP_PROXY=proxy.url
        )
        sent = {**TRACE_HEADERS, "x-private": "secret", "authorization": "Bearer t"}

        reply = call(frontend.url + "/items?page=2", headers=sent)

    assert reply.status == 200, reply.body
    assert reply.json()["answered_by"]["pod"] == "backend-v2-0"
    assert [(r.method, r.target) for r in proxy.requests] == [
        ("GET", "http://backend/items?page=2")
    ]
    headers = proxy.requests[0].headers
    assert headers["host"] == "backend"
    assert {name: headers.get(name) for name in TRACE_HEADERS} == TRACE_HEADERS
    assert "x-private" not in headers
    assert "authorization" not in headers


def test_items_propagates_extra_headers_named_in_env(
    launcher: AppLauncher, backend: RunningApp
) -> None:
    with RecordingProxy({"backend": backend.url}) as proxy:
        frontend = launcher.start(
            UPSTREAM="http://backend", HTTP_PROXY=proxy.url, PROPAGATE_HEADERS="x-tenant, x-team"
        )
        call(frontend.url + "/items", headers={"x-tenant": "acme", "x-other": "no"})
    headers = proxy.requests[0].headers
    assert headers["x-tenant"] == "acme"
    assert "x-other" not in headers


# ---------------------------------------------------------------------------------------------
# Chaos


@pytest.fixture(scope="module")
def solo_app(module_launcher: AppLauncher) -> RunningApp:
    return module_launcher.start(SERVICE="solo", POD="solo-0")


@pytest.fixture
def solo(solo_app: RunningApp) -> RunningApp:
    """An app whose chaos starts cleared (DELETE /chaos), since chaos is state."""
    assert call(solo_app.url + "/chaos", "DELETE").status == 200
    return solo_app


@pytest.mark.parametrize(
    "path", ["/", "/items", "/slow?ms=1", "/status/200", "/headers", "/no-such-path"]
)
def test_chaos_error_rate_one_fails_every_endpoint_but_health(solo: RunningApp, path: str) -> None:
    set_reply = post_json(solo.url + "/chaos", {"error_rate": 1.0})
    assert set_reply.json()["chaos"] == {"error_rate": 1.0, "latency_ms": 0.0, "status": 503}

    replies = [call(solo.url + path) for _ in range(5)]

    assert [r.status for r in replies] == [503] * 5
    assert replies[0].json()["error"] == "chaos"
    assert replies[0].headers["x-served-by"] == "solo-0"
    assert call(solo.url + "/healthz").status == 200
    assert call(solo.url + "/chaos").json()["chaos"]["error_rate"] == 1.0


def test_chaos_cleared_by_empty_body_serves_again(solo: RunningApp) -> None:
    post_json(solo.url + "/chaos", {"error_rate": 1.0})
    assert call(solo.url + "/").status == 503

    cleared = post_json(solo.url + "/chaos", {})

    assert cleared.json()["chaos"] == {"error_rate": 0.0, "latency_ms": 0.0, "status": 503}
    assert call(solo.url + "/").status == 200


def test_chaos_from_a_form_with_its_own_status(solo: RunningApp) -> None:
    assert post_form(solo.url + "/chaos", "error_rate=1&status=500").status == 200
    assert call(solo.url + "/status/200").status == 500


def test_chaos_json_sent_as_curl_d_does_it(solo: RunningApp) -> None:
    # `curl -d '{"error_rate": 1}'` labels JSON as a form; the app reads it as JSON anyway.
    assert post_form(solo.url + "/chaos", '{"error_rate": 1, "status": 429}').status == 200
    assert call(solo.url + "/").status == 429


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type"),
    [
        ("POST", "/chaos", b'{"reset": true}', "application/json"),
        ("POST", "/chaos", b"reset", "application/x-www-form-urlencoded"),
        ("POST", "/chaos?reset", b"", "application/x-www-form-urlencoded"),
        ("POST", "/chaos", b"", "application/x-www-form-urlencoded"),
        ("DELETE", "/chaos", b"", "application/x-www-form-urlencoded"),
    ],
)
def test_chaos_reset_forms(
    solo: RunningApp, method: str, path: str, body: bytes, content_type: str
) -> None:
    post_json(solo.url + "/chaos", {"error_rate": 1.0, "latency_ms": 5, "status": 500})

    reply = call(solo.url + path, method, body, {"content-type": content_type})

    assert reply.json()["chaos"] == {"error_rate": 0.0, "latency_ms": 0.0, "status": 503}
    assert call(solo.url + "/").status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error_rate": 1.5}, "error_rate: 1.5 is outside 0..1"),
        ({"error_rate": "lots"}, "error_rate: expected a number"),
        ({"latency_ms": -1}, "latency_ms: -1.0 is outside 0..300000"),
        ({"status": 200}, "status: 200 is outside 400..599"),
        ({"status": 503.5}, "status: expected a whole number"),
        ({"status": True}, "status: expected a number"),
        ({"eror_rate": 1}, "unknown field 'eror_rate'"),
        ([1, 2], "expected a JSON object or a form"),
    ],
)
def test_chaos_refuses_bad_settings_and_keeps_the_old_ones(
    solo: RunningApp, body: object, message: str
) -> None:
    post_json(solo.url + "/chaos", {"error_rate": 0.25})

    reply = post_json(solo.url + "/chaos", body)

    assert reply.status == 400
    assert message in reply.json()["error"]
    assert call(solo.url + "/chaos").json()["chaos"]["error_rate"] == 0.25


def test_chaos_refuses_malformed_json(solo: RunningApp) -> None:
    reply = call(
        solo.url + "/chaos", "POST", b'{"error_rate": ', {"content-type": "application/json"}
    )
    assert reply.status == 400


def test_chaos_partial_error_rate_fails_some_requests_not_all(solo: RunningApp) -> None:
    post_json(solo.url + "/chaos", {"error_rate": 0.5, "status": 500})
    statuses = [call(solo.url + "/status/200").status for _ in range(200)]
    assert set(statuses) == {200, 500}
    # Binomial(200, 0.5) falls outside 60..140 with probability below 1e-8.
    assert 60 <= statuses.count(500) <= 140


def test_chaos_latency_delays_responses(solo: RunningApp) -> None:
    post_json(solo.url + "/chaos", {"latency_ms": 300})
    started = time.monotonic()
    reply = call(solo.url + "/")
    waited = time.monotonic() - started
    assert reply.status == 200
    assert waited >= 0.3  # a lower bound: the injected delay itself is the behaviour


# ---------------------------------------------------------------------------------------------
# Process behaviour: quiet logs, clean exit on SIGTERM


def _wait_for_text(app: RunningApp, text: str) -> str:
    """The app's stderr once `text` is in it."""

    def logged() -> str | None:
        log = app.stderr()
        return log if text in log else None

    return wait_until_sync(
        logged, lambda: f"{text!r} in the app's stderr:\n{app.stderr()}", step=0.02
    )


def test_requests_are_not_logged_by_default(launcher: AppLauncher) -> None:
    app = launcher.start()
    call(app.url + "/healthz")
    call(app.url + "/status/500")
    assert app.stop() == 0
    assert app.stderr() == ""


def test_log_requests_logs_one_line_per_request(launcher: AppLauncher) -> None:
    app = launcher.start(LOG_REQUESTS="1")
    call(app.url + "/status/418")
    log = _wait_for_text(app, "/status/418")
    assert '"GET /status/418 HTTP/1.1" 418' in log


def test_sigterm_exits_cleanly(launcher: AppLauncher) -> None:
    app = launcher.start()
    assert call(app.url + "/healthz").status == 200
    # Exit status 0, not -15: the app handles SIGTERM, which a container's PID 1 must do itself.
    assert app.stop() == 0
