"""The readiness probes of both runtimes against real loopback peers: an app that answers
garbage is not ready, with the reason kept, and nothing it answers raises."""

from __future__ import annotations

import pytest

from meshdev.runtime.docker.ready import NotReady, Probe, wait_ready
from meshdev.runtime.loopback import MAX_BODY
from meshdev.runtime.readiness import http_ok, http_status
from tests.runtime.rawhttp import raw_server
from tests.support import free_port

OK = b"HTTP/1.1 200 OK\r\n"
GARBAGE = [
    pytest.param(
        OK + b"Content-Length: -1\r\n\r\n",
        "answered, but not well-formed HTTP: bad Content-Length: '-1'",
        id="content-length",
    ),
    pytest.param(
        OK + b"Transfer-Encoding: chunked\r\n\r\nxyz\r\n",
        "answered, but not well-formed HTTP: bad chunk size: b'xyz'",
        id="chunk-size",
    ),
    pytest.param(
        b"\x16\x03\x01\x00\xa5",
        r"answered, but not well-formed HTTP: not an HTTP answer: b'\x16\x03\x01\x00\xa5'",
        id="tls",
    ),
    pytest.param(
        b"", "answered, but not well-formed HTTP: connection closed before an answer", id="empty"
    ),
]


async def _no_exits() -> None:
    return None


@pytest.mark.parametrize(("reply", "why"), GARBAGE)
async def test_an_app_answering_garbage_is_not_ready(reply: bytes, why: str) -> None:
    async with raw_server(reply) as url:
        assert await http_status(f"{url}/healthz") == (None, why)
        assert await http_ok(f"{url}/healthz") is False


async def test_answers_that_are_whole() -> None:
    async with raw_server(OK + b"Content-Length: 2\r\n\r\nok") as url:
        assert await http_status(url) == (200, "answered 200")
        assert await http_ok(url) is True
    async with raw_server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n") as url:
        assert await http_status(url) == (503, "answered 503")
        assert await http_ok(url) is False


async def test_a_body_over_the_cap_still_gives_the_status() -> None:
    # A probe needs the status only: an app whose "/" is a large page is up all the same.
    async with raw_server(OK + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1)) as url:
        assert await http_status(url) == (200, "answered 200 (its body over the cap left unread)")
        assert await http_ok(url) is True


async def test_unreachable_and_silent() -> None:
    status, why = await http_status(f"http://127.0.0.1:{free_port()}/")
    assert status is None
    assert "Connect call failed" in why
    async with raw_server(b"", hold=True, first=True) as url:
        # It accepts and reads the request, then says nothing.
        assert await http_status(url, timeout=0.2) == (None, "no answer within 0.2s")


async def test_docker_wait_ready_reports_an_app_answering_garbage() -> None:
    async with (
        raw_server(OK + b"Content-Length: 2\r\n\r\nok") as sidecar,
        raw_server(b"SSH-2.0-OpenSSH_9.6\r\n", first=True, hold=True) as app,
    ):
        with pytest.raises(NotReady) as caught:
            await wait_ready(Probe(sidecar, app, "/healthz"), 0.3, _no_exits)
    assert caught.value.waiting == "app"
    assert caught.value.why == (
        "the app's /healthz through the sidecar's inbound listener: answered, but not "
        r"well-formed HTTP: not an HTTP answer: b'SSH-2.0-OpenSSH_9.6\r\n'"
    )


async def test_docker_wait_ready_reports_a_sidecar_answering_garbage() -> None:
    async with raw_server(OK + b"Content-Length: 1, 2\r\n\r\nok") as sidecar:
        with pytest.raises(NotReady) as caught:
            await wait_ready(Probe(sidecar, "", None), 0.3, _no_exits)
    assert caught.value.waiting == "sidecar"
    assert caught.value.why == (
        "the sidecar's /ready: answered, but not well-formed HTTP: "
        "conflicting Content-Length: '1, 2'"
    )


async def test_docker_wait_ready_returns_once_both_answer() -> None:
    async with (
        raw_server(OK + b"Content-Length: 2\r\n\r\nok") as sidecar,
        raw_server(OK + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n") as app,
    ):
        await wait_ready(Probe(sidecar, app, "/healthz"), 5, _no_exits)
