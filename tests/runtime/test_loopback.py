"""The control plane's minimal loopback HTTP client, against real sockets: what it sends, the
three framings it reads, and every way an answer can be malformed or too large."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdev.runtime import loopback
from meshdev.runtime.loopback import (
    MAX_BODY,
    MAX_HEAD,
    LoopbackError,
    LoopbackResponse,
    MalformedResponse,
    ResponseTooLarge,
)
from tests.runtime.rawhttp import raw_server
from tests.support import free_port

OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"

# -- well-formed answers ---------------------------------------------------------------------


async def test_post_with_body_and_headers() -> None:
    seen: list[bytes] = []
    reply = OK + b'Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok": true}extra'
    async with raw_server(reply, seen=seen) as url:
        answer = await loopback.request(
            "POST", f"{url}/config?x=1", body=b'{"a":1}', headers={"x-meshdev-token": "t"}
        )
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.body == b'{"ok": true'  # exactly Content-Length bytes
    request = seen[0].decode()
    assert request.startswith("POST /config?x=1 HTTP/1.1\r\n")
    assert "x-meshdev-token: t\r\n" in request
    assert "Content-Length: 7\r\n" in request
    assert request.endswith('\r\n\r\n{"a":1}')


async def test_content_length_answer_needs_no_close() -> None:
    # The peer keeps the connection open: the framing alone says the answer is whole.
    async with raw_server(OK + b"Content-Length: 5\r\n\r\nhello", hold=True) as url:
        answer = await loopback.request("GET", url, timeout=2)
    assert (answer.status, answer.body) == (200, b"hello")


async def test_repeated_content_length_that_agrees() -> None:
    reply = OK + b"Content-Length: 5\r\nContent-Length: 5, 5\r\n\r\nhello"
    async with raw_server(reply) as url:
        answer = await loopback.request("GET", url)
    assert answer.body == b"hello"
    assert answer.headers["content-length"] == "5, 5, 5"


async def test_chunked_answer() -> None:
    reply = (
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"
    )
    async with raw_server(reply, hold=True) as url:
        answer = await loopback.request("GET", f"{url}/ready", timeout=2)
    assert (answer.status, answer.body) == (503, b"hello world")


async def test_chunked_answer_with_trailers_and_bare_newlines() -> None:
    reply = b"HTTP/1.1 200 OK\nTransfer-Encoding: Chunked\n\n00003\nabc\n0\nx-checksum: 1\n\n"
    async with raw_server(reply, hold=True) as url:
        answer = await loopback.request("GET", url, timeout=2)
    assert answer.body == b"abc"


async def test_close_delimited_answer() -> None:
    async with raw_server(b"HTTP/1.0 200 OK\r\n\r\nuntil close") as url:
        answer = await loopback.request("GET", url)
    assert answer == LoopbackResponse(200, {}, b"until close")


async def test_close_delimited_answer_of_exactly_the_cap_is_whole() -> None:
    body = b"x" * MAX_BODY
    async with raw_server(OK + b"\r\n" + body) as url:
        answer = await loopback.request("GET", url)
    assert answer.body == body


async def test_interim_answers_are_skipped() -> None:
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    async with raw_server(reply) as url:
        answer = await loopback.request("POST", url, body=b"{}")
    assert (answer.status, answer.headers, answer.body) == (201, {"content-length": "2"}, b"ok")


@pytest.mark.parametrize(
    ("method", "reply"),
    [
        ("HEAD", OK + b"Content-Length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ],
)
async def test_answers_without_a_body(method: str, reply: bytes) -> None:
    async with raw_server(reply, hold=True) as url:
        answer = await loopback.request(method, url, timeout=2)
    assert answer.body == b""


# -- malformed answers -----------------------------------------------------------------------

MALFORMED = [
    # Not HTTP at all.
    pytest.param(b"", "connection closed before an answer", id="empty"),
    pytest.param(b"HT", "not an HTTP answer: b'HT'", id="closed-in-prefix"),
    pytest.param(b"<html>hi</html>", "not an HTTP answer: b'<html>hi</html>'", id="html"),
    pytest.param(
        b"\x00\xff\x10garbage\n", r"not an HTTP answer: b'\x00\xff\x10garbage\n'", id="binary"
    ),
    # The status line.
    pytest.param(b"HTTP/1.1 OK\r\n\r\n", "bad status line: 'HTTP/1.1 OK'", id="no-status"),
    pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line: 'HTTP/1.1 2000 OK'", id="4-digits"),
    pytest.param(b"HTTP/2 200\r\n\r\n", "bad status line: 'HTTP/2 200'", id="http2"),
    pytest.param(b"HTTP/1.1 -20 OK\r\n\r\n", "bad status line: 'HTTP/1.1 -20 OK'", id="negative"),
    pytest.param(b"HTTP/1.1 200", "connection closed inside the status line", id="closed-status"),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "switched protocols without being asked to",
        id="101",
    ),
    # Header fields.
    pytest.param(
        OK + b"Content-Length: 5\r\n",
        "connection closed inside the header fields",
        id="closed-head",
    ),
    pytest.param(OK + b"no colon here\r\n\r\n", "bad header line: 'no colon here'", id="no-colon"),
    pytest.param(
        OK + b"Content-Length : 5\r\n\r\nhello", "bad header line: 'Content-Length : 5'", id="space"
    ),
    pytest.param(OK + b": empty name\r\n\r\n", "bad header line: ': empty name'", id="no-name"),
    pytest.param(
        OK + b"X-A: 1\r\n  folded\r\n\r\n", "folded header line: '  folded'", id="obs-fold"
    ),
    # Content-Length.
    pytest.param(OK + b"Content-Length: -1\r\n\r\n", "bad Content-Length: '-1'", id="cl-negative"),
    pytest.param(OK + b"Content-Length: abc\r\n\r\n", "bad Content-Length: 'abc'", id="cl-text"),
    pytest.param(OK + b"Content-Length: +5\r\n\r\nhello", "bad Content-Length: '+5'", id="cl-plus"),
    pytest.param(OK + b"Content-Length: 1_0\r\n\r\n", "bad Content-Length: '1_0'", id="cl-under"),
    pytest.param(OK + b"Content-Length: 0x5\r\n\r\n", "bad Content-Length: '0x5'", id="cl-hex"),
    pytest.param(OK + b"Content-Length: \xb2\r\n\r\n", "bad Content-Length: '\xb2'", id="cl-sup2"),
    pytest.param(OK + b"Content-Length:\r\n\r\n", "bad Content-Length: ''", id="cl-empty"),
    pytest.param(
        OK + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "conflicting Content-Length: '5, 6'",
        id="cl-twice",
    ),
    pytest.param(
        OK + b"Content-Length: 5, 6\r\n\r\nhello!",
        "conflicting Content-Length: '5, 6'",
        id="cl-list",
    ),
    pytest.param(
        OK + b"Content-Length: 10\r\n\r\nhello",
        "connection closed after 5 of 10 body bytes",
        id="cl-short",
    ),
    # Transfer-Encoding and chunks.
    pytest.param(
        OK + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "both Transfer-Encoding and Content-Length",
        id="te-and-cl",
    ),
    pytest.param(
        OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "unsupported Transfer-Encoding: 'gzip, chunked'",
        id="te-gzip",
    ),
    pytest.param(CHUNKED + b"zz\r\nhello\r\n0\r\n\r\n", "bad chunk size: b'zz'", id="chunk-text"),
    pytest.param(CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n", "bad chunk size: b'-5'", id="chunk-neg"),
    pytest.param(CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size: b'0x5'", id="chunk-0x"),
    pytest.param(CHUNKED + b"\r\nhello\r\n0\r\n\r\n", "bad chunk size: b''", id="chunk-empty"),
    pytest.param(CHUNKED + b";x\r\nhello\r\n", "bad chunk size: b';x'", id="chunk-ext-only"),
    pytest.param(
        CHUNKED + b"3\r\nhello\r\n0\r\n\r\n", "a chunk longer than its size (3 bytes)", id="long"
    ),
    pytest.param(
        CHUNKED + b"5\r\nhel",
        "connection closed inside a chunk, after 3 of 5 bytes",
        id="closed-in-chunk",
    ),
    pytest.param(CHUNKED + b"5\r\nhello", "connection closed inside a chunk's end", id="no-crlf"),
    pytest.param(
        CHUNKED + b"5\r\nhello\r\n", "connection closed inside a chunk size line", id="no-last"
    ),
    pytest.param(CHUNKED + b"0\r\n", "connection closed inside the trailer fields", id="no-end"),
    pytest.param(
        CHUNKED + b"0\r\nbad trailer\r\n\r\n", "bad header line: 'bad trailer'", id="trailer"
    ),
    # A head too large: one line, or many.
    pytest.param(
        OK + b"X-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        f"a line in the header fields over {MAX_HEAD} bytes",
        id="long-line",
    ),
    pytest.param(
        OK + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70)) + b"\r\n",
        f"head over {MAX_HEAD} bytes",
        id="many-lines",
    ),
]


@pytest.mark.parametrize(("reply", "message"), MALFORMED)
async def test_malformed_answer(reply: bytes, message: str) -> None:
    async with raw_server(reply) as url:
        with pytest.raises(MalformedResponse, match=f"^{re.escape(message)}$"):
            await loopback.request("GET", url, timeout=2)


async def test_malformed_answer_with_the_connection_held_open() -> None:
    # Framing errors are found in what arrived, not at an end of the stream or a timeout.
    async with raw_server(CHUNKED + b"3\r\nhello\r\n0\r\n\r\n", hold=True) as url:
        with pytest.raises(MalformedResponse, match=r"^a chunk longer than its size \(3 bytes\)$"):
            await loopback.request("GET", url, timeout=2)


async def test_a_peer_that_speaks_first_is_refused_at_once() -> None:
    # An SSH server says who it is and then waits for us: we must not wait for its timeout.
    t0 = time.monotonic()
    async with raw_server(b"SSH-2.0-OpenSSH_9.6\r\n", first=True, hold=True) as url:
        with pytest.raises(
            MalformedResponse, match=re.escape(r"not an HTTP answer: b'SSH-2.0-OpenSSH_9.6\r\n'")
        ):
            await loopback.request("GET", url, timeout=5)
    assert time.monotonic() - t0 < 4


def test_malformed_is_no_oserror() -> None:
    # Callers that catch OSError as "unreachable" must not take a garbage answer for one.
    assert not issubclass(LoopbackError, OSError)
    assert issubclass(MalformedResponse, LoopbackError)
    assert issubclass(ResponseTooLarge, LoopbackError)


# -- answers over the cap --------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(OK + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), id="content-length"),
        pytest.param(OK + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", id="5000-digits"),
        pytest.param(CHUNKED + b"f" * 40 + b"\r\n", id="huge-chunk-size"),
        pytest.param(
            CHUNKED + b"%x\r\n%s\r\n" % (MAX_BODY, b"x" * MAX_BODY) + b"1\r\nx\r\n0\r\n\r\n",
            id="chunks-add-up",
        ),
        pytest.param(OK + b"\r\n" + b"x" * (MAX_BODY + 1), id="until-close"),
    ],
)
async def test_answer_over_the_cap(reply: bytes) -> None:
    async with raw_server(reply) as url:
        with pytest.raises(ResponseTooLarge) as caught:
            await loopback.request("GET", url, timeout=5)
    assert str(caught.value) == f"answered 200 with a body over the {MAX_BODY}-byte cap"
    assert (caught.value.status, caught.value.limit) == (200, MAX_BODY)


# -- the peer unreachable or silent ----------------------------------------------------------


async def test_refused_and_timeout() -> None:
    with pytest.raises(ConnectionRefusedError):
        await loopback.request("GET", f"http://127.0.0.1:{free_port()}/")

    release = asyncio.Event()
    handlers: list[asyncio.Task[Any]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await release.wait()
        writer.close()
        await writer.wait_closed()

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        with pytest.raises(TimeoutError):
            await loopback.request(
                "GET", f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/", timeout=0.2
            )
    finally:
        release.set()
        await asyncio.gather(*handlers)
        srv.close()
        await srv.wait_closed()


# -- anything at all -------------------------------------------------------------------------

_PIECES = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 100 Continue\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: ",
            b"Transfer-Encoding: chunked\r\n",
            b"\r\n",
            b"\n",
            b"5\r\n",
            b"0\r\n",
            b"hello",
            b"-1",
            b";",
            b":",
            b" ",
        ]
    ),
    st.binary(max_size=8),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PIECES, max_size=12).map(b"".join), st.booleans())
def test_any_answer_is_whole_or_a_loopback_error(tail: bytes, http_start: bool) -> None:
    reply = (OK if http_start else b"") + tail

    async def one() -> LoopbackResponse | LoopbackError:
        async with raw_server(reply) as url:
            try:
                return await loopback.request("GET", url, timeout=5)
            except LoopbackError as exc:
                return exc

    result = asyncio.run(one())
    assert isinstance(result, LoopbackResponse | LoopbackError)
