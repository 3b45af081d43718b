"""A minimal HTTP/1.1 client for the control plane's own calls to its pods on loopback.

Readiness probes and config pushes sit on `meshdev up`'s critical path, where importing a
full client library costs more (~0.12 s of CPU, while nine pods boot on two cores) than these
few calls need: one request per connection, `Connection: close`, a bounded answer.

Minimal is not lenient: the readiness probes also ask the user's own app, which may answer
anything, so every answer is read by its framing (Content-Length, chunked, or until close),
checked as it is read, and either handed on whole or refused with a `LoopbackError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_BODY = 4 * 1024 * 1024
# The status line and header fields together (and a chunked answer's trailers): also the
# stream's line limit, so no single line can grow past it either.
MAX_HEAD = 64 * 1024

_STATUS_LINE = re.compile(r"HTTP/1\.[0-9] ([0-9]{3})(?: .*)?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]+")
# int() refuses decimal strings over 4300 digits with a ValueError, and anything this long is
# far past MAX_BODY anyway.
_MAX_SIZE_DIGITS = 15


@dataclass(frozen=True, slots=True)
class LoopbackResponse:
    """One whole answer. Header names are lower-cased; a field sent more than once has its
    values joined with ", " (as HTTP allows for list-valued fields)."""

    status: int
    headers: dict[str, str]
    body: bytes


class LoopbackError(Exception):
    """The peer answered, but with nothing this client can hand on whole.

    Deliberately no OSError: callers already catch OSError as "could not reach it", and a
    peer that answered garbage is another fact (something listens, and it is not the server
    we expected, or it is broken). As an OSError it would be swallowed by those handlers and
    reported as unreachable; as its own type every caller has to name it and say what it
    means there (not ready, a failed push, an unknown drain state).
    """


class MalformedResponse(LoopbackError):
    """Not a well-formed HTTP/1.x answer: no HTTP status line, bad header fields or framing,
    a head over MAX_HEAD, or a connection closed before the answer was complete."""


class ResponseTooLarge(LoopbackError):
    """The body is over the cap. The status line was well-formed, so `status` says what the
    peer answered; its body is not read, never handed on cut short."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"answered {status} with a body over the {limit}-byte cap")
        self.status = status
        self.limit = limit


async def request(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    tls: ssl.SSLContext | None = None,
) -> LoopbackResponse:
    """Send one request on a connection of its own and return the whole answer (over TLS
    with `tls`, e.g. as a workload of the mesh).

    Raises:
        TimeoutError: no whole answer within `timeout` seconds, connecting included (note
            that TimeoutError is an OSError: catch it first when it means something else).
        OSError: the peer could not be reached, or the connection broke (refused, reset).
        MalformedResponse: the peer answered, but not with a well-formed HTTP/1.x answer.
        ResponseTooLarge: the answer's body is over MAX_BODY bytes.
        ValueError: `url` has an invalid port (the caller's mistake, not the peer's).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    return await asyncio.wait_for(_exchange(host, port, method, message, tls), timeout)


async def _exchange(
    host: str, port: int, method: str, message: bytes, tls: ssl.SSLContext | None
) -> LoopbackResponse:
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD, ssl=tls)
    try:
        writer.write(message)
        await writer.drain()
        return await _read_response(reader, method)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader, method: str) -> LoopbackResponse:
    await _expect_http(reader)
    head_size = len(b"HTTP/")
    while True:
        line, head_size = await _head_line(reader, head_size, "the status line")
        status_line = "HTTP/" + line
        match = _STATUS_LINE.fullmatch(status_line)
        if match is None:
            raise MalformedResponse(f"bad status line: {status_line[:80]!r}")
        status = int(match[1])
        headers, head_size = await _fields(reader, head_size, "the header fields")
        if status == 101:
            raise MalformedResponse("switched protocols without being asked to")
        if status >= 200:
            break
        # An interim answer (100 Continue unasked, 103 Early Hints): the final one follows.
        await _expect_http(reader)
        head_size += len(b"HTTP/")
    if method == "HEAD" or status in (204, 304):
        return LoopbackResponse(status, headers, b"")
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            # RFC 9112 6.3: a sign of response splitting, "ought to be handled as an error".
            raise MalformedResponse("both Transfer-Encoding and Content-Length")
        codings = [c.strip(" \t").lower() for c in headers["transfer-encoding"].split(",")]
        if codings != ["chunked"]:
            # We asked for no coding and can undo none but chunked.
            raise MalformedResponse(
                f"unsupported Transfer-Encoding: {headers['transfer-encoding']!r}"
            )
        body = await _chunked(reader, status)
    elif "content-length" in headers:
        body = await _sized(reader, status, _content_length(status, headers["content-length"]))
    else:
        body = await _until_close(reader, status)
    return LoopbackResponse(status, headers, body)


async def _expect_http(reader: asyncio.StreamReader) -> None:
    """Refuse an answer that does not begin like HTTP as soon as its first bytes show it:
    a peer that speaks first (SSH, a database) would otherwise hold us until the timeout."""
    try:
        start = await reader.readexactly(len(b"HTTP/"))
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise MalformedResponse("connection closed before an answer") from None
        raise MalformedResponse(f"not an HTTP answer: {exc.partial!r}") from None
    if start != b"HTTP/":
        raise MalformedResponse(f"not an HTTP answer: {start + await _glimpse(reader)!r}")


async def _glimpse(reader: asyncio.StreamReader) -> bytes:
    """Whatever more of a refused answer has arrived, for the error message; never waits
    long for it (the peer may be one that holds the connection open)."""
    with contextlib.suppress(TimeoutError, OSError):
        return await asyncio.wait_for(reader.read(75), 0.01)
    return b""


async def _line(reader: asyncio.StreamReader, where: str) -> bytes:
    """One line without its end (CRLF, or a bare LF as RFC 9112 2.2 lets a recipient accept)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise MalformedResponse(f"a line in {where} over {MAX_HEAD} bytes") from None
    except asyncio.IncompleteReadError:
        raise MalformedResponse(f"connection closed inside {where}") from None
    return line.removesuffix(b"\n").removesuffix(b"\r")


async def _head_line(reader: asyncio.StreamReader, size: int, where: str) -> tuple[str, int]:
    line = await _line(reader, where)
    size += len(line) + 2
    if size > MAX_HEAD:
        raise MalformedResponse(f"head over {MAX_HEAD} bytes")
    return line.decode("latin-1"), size


async def _fields(
    reader: asyncio.StreamReader, size: int, where: str
) -> tuple[dict[str, str], int]:
    """Header (or trailer) fields up to the empty line that ends them."""
    fields: dict[str, str] = {}
    while True:
        line, size = await _head_line(reader, size, where)
        if not line:
            return fields, size
        if line[0] in " \t":
            # Obsolete line folding: RFC 9112 5.2 lets a recipient reject it, and we do.
            raise MalformedResponse(f"folded header line: {line[:80]!r}")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise MalformedResponse(f"bad header line: {line[:80]!r}")
        key, value = name.lower(), value.strip(" \t")
        fields[key] = f"{fields[key]}, {value}" if key in fields else value


def _content_length(status: int, value: str) -> int:
    # Sent twice (or as a list) it is fine as long as every copy agrees (RFC 9110 8.6).
    copies = {v.strip(" \t") for v in value.split(",")}
    if len(copies) > 1:
        raise MalformedResponse(f"conflicting Content-Length: {value!r}")
    (digits,) = copies
    if not _DIGITS.fullmatch(digits):
        raise MalformedResponse(f"bad Content-Length: {value!r}")
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_SIZE_DIGITS or int(digits) > MAX_BODY:
        raise ResponseTooLarge(status, MAX_BODY)
    return int(digits)


async def _sized(reader: asyncio.StreamReader, status: int, length: int) -> bytes:
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise MalformedResponse(
            f"connection closed after {len(exc.partial)} of {length} body bytes"
        ) from None


async def _chunked(reader: asyncio.StreamReader, status: int) -> bytes:
    body = bytearray()
    while True:
        line = await _line(reader, "a chunk size line")
        size_text = line.split(b";", 1)[0].strip(b" \t")
        if not _HEX.fullmatch(size_text):
            raise MalformedResponse(f"bad chunk size: {line[:80]!r}")
        digits = size_text.lstrip(b"0") or b"0"
        if len(digits) > _MAX_SIZE_DIGITS or len(body) + int(digits, 16) > MAX_BODY:
            raise ResponseTooLarge(status, MAX_BODY)
        size = int(digits, 16)
        if size == 0:
            # Trailer fields (none expected, all ignored) up to the empty line that ends them.
            await _fields(reader, 0, "the trailer fields")
            return bytes(body)
        try:
            body += await reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise MalformedResponse(
                f"connection closed inside a chunk, after {len(exc.partial)} of {size} bytes"
            ) from None
        if await _line(reader, "a chunk's end"):
            raise MalformedResponse(f"a chunk longer than its size ({size} bytes)")


async def _until_close(reader: asyncio.StreamReader, status: int) -> bytes:
    body = bytearray()
    while chunk := await reader.read(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY:
            raise ResponseTooLarge(status, MAX_BODY)
    return bytes(body)
