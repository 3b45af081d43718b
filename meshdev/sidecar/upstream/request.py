"""How a request to an upstream is encoded: its head with our framing, and how its body goes
(see the package doc)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

# Methods whose requests carry a body by convention: sent with content-length 0 when empty.
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# Headers the head is framed by: host is kept (or added), the others are ours to write.
_FRAMING: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def encode_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | AsyncIterator[bytes] | None,
    authority: str,
    upgrade: bool = False,
) -> tuple[bytes, bytes | bytearray | memoryview | None, AsyncIterator[bytes] | None, bool]:
    """The request head with our framing, and how the body goes: (head, payload, stream,
    chunked). Done before a connection is taken, so a bad header costs no connection.
    `upgrade`: the request asks to switch protocols (its ``upgrade`` header is among
    `headers`), so it carries ``connection: upgrade``."""
    parts = [f"{method} {target} HTTP/1.1\r\n"]
    has_host = False
    length: str | None = None
    for name, value in headers:
        # One set look-up for the usual header, not three comparisons: this runs for every
        # header of every request.
        if name in _FRAMING:
            if name == "host":
                has_host = True
            elif name == "content-length":
                length = value
                continue
            else:
                continue
        parts += (name, ": ", value, "\r\n")
    if not has_host:
        parts.append(f"host: {authority}\r\n")
    if upgrade:
        parts.append("connection: upgrade\r\n")
    stream: AsyncIterator[bytes] | None = None
    payload: bytes | bytearray | memoryview | None = None
    chunked = False
    if body is None:
        if method in _BODY_METHODS:
            parts.append("content-length: 0\r\n")
    elif isinstance(body, bytes | bytearray | memoryview):
        payload = body
        parts.append(f"content-length: {len(body)}\r\n")
    else:
        stream = body
        if length is not None:
            parts.append(f"content-length: {length}\r\n")
        else:
            chunked = True
            parts.append("transfer-encoding: chunked\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1"), payload, stream, chunked
