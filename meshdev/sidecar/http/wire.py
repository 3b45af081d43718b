"""HTTP/1.1 wire pieces shared by the server (``sidecar.http``) and the upstream client
(``sidecar.upstream``): header names, status lines, canned answers and the framing constants."""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

# Writes up to this size are joined with the head into one send.
JOIN_MAX: Final = 16 * 1024
LAST_CHUNK: Final = b"0\r\n\r\n"
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX: Final = 2048


def header_name(raw: bytes) -> str:
    """Lower-cased header name, cached so the common names cost one dict look-up."""
    name = _NAME_CACHE.get(raw)
    if name is None:
        name = raw.decode("latin-1").lower()
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[raw] = name
    return name


METHODS: dict[bytes, str] = {
    m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
}

STATUS_LINES: dict[int, str] = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n" for s in HTTPStatus}


def status_line(status: int) -> str:
    """The status line of `status`, CRLF included; an unknown code gets an empty phrase."""
    line = STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} \r\n"


def error_response(status: int) -> bytes:
    """A whole plain-text answer that closes the connection, for a refused request."""
    phrase = HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(phrase)}\r\nconnection: close\r\n\r\n{phrase}"
    ).encode("latin-1")


ERRORS: dict[int, bytes] = {s: error_response(s) for s in (400, 408, 431, 500)}
