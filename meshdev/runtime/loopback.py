"""A minimal HTTP/1.1 client for the control plane's own calls to its pods on loopback.

Readiness probes and config pushes sit on `meshdev up`'s critical path, where importing a
full client library costs more (~0.12 s of CPU, while nine pods boot on two cores) than these
few calls need: one request per connection, `Connection: close`, a bounded answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_ANSWER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class LoopbackError(OSError):
    """The peer did not give a well-formed HTTP answer."""


async def request(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Answer:
    """One request, the whole answer. Raises OSError (refused, reset, malformed) or
    TimeoutError."""
    return await asyncio.wait_for(_exchange(method, url, body, headers or {}), timeout)


async def _exchange(method: str, url: str, body: bytes, headers: dict[str, str]) -> Answer:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        raw = await reader.read(MAX_ANSWER + 1)
        while True:
            more = await reader.read(MAX_ANSWER + 1 - len(raw))
            if not more or len(raw) > MAX_ANSWER:
                break
            raw += more
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return _parse(raw)


def _parse(raw: bytes) -> Answer:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if not sep or len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
        raise LoopbackError(f"not an HTTP answer: {raw[:80]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise LoopbackError(f"bad status line: {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    elif "content-length" in headers:
        rest = rest[: int(headers["content-length"])]
    return Answer(status, headers, rest)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)
