"""The example app's WebSocket echo (`GET /ws`): RFC 6455's handshake and frames, served on the
connection werkzeug's request handler holds, since WSGI (and so Flask) cannot take a
connection over.

Every data frame comes back as it was sent (text or binary; fragments stay fragments), a ping
gets its pong, a close its close, and then the connection ends. A frame the client did not
mask is refused with close code 1002, one over MAX_PAYLOAD with 1009. Standard library only,
like the rest of the app.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Protocol

# RFC 6455 section 1.3: what the server appends to the client's key before hashing it.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_PAYLOAD = 16 * 1024 * 1024

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KNOWN = frozenset({CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG})
PROTOCOL_ERROR, TOO_BIG = 1002, 1009


class Reader(Protocol):
    """The request handler's rfile, as far as frames go."""

    def read(self, n: int, /) -> bytes: ...


class Writer(Protocol):
    """The request handler's wfile, as far as frames go."""

    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...


class FrameError(Exception):
    """The client broke the protocol; `code` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def is_upgrade(upgrade: str | None, connection: str | None) -> bool:
    """A WebSocket opening handshake, from its `Upgrade` and `Connection` headers: `websocket`
    and a list holding `upgrade`."""
    tokens = {t.strip().lower() for t in (connection or "").split(",")}
    return (upgrade or "").strip().lower() == "websocket" and "upgrade" in tokens


def handshake(key: str) -> bytes:
    """The 101 that accepts a client's `Sec-WebSocket-Key`."""
    accept = base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode("ascii")


def encode(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One unmasked frame, as a server sends them."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head + payload


def read_frame(rfile: Reader) -> tuple[bool, int, bytes] | None:
    """The next frame as (fin, opcode, unmasked payload); None when the connection ended."""
    head = _read(rfile, 2)
    if head is None:
        return None
    fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
    masked, size = bool(head[1] & 0x80), head[1] & 0x7F
    if opcode not in _KNOWN:
        raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
    if not masked:
        raise FrameError(PROTOCOL_ERROR, "client frames must be masked")
    if size == 126:
        size = struct.unpack("!H", _read_all(rfile, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", _read_all(rfile, 8))[0]
    if size > MAX_PAYLOAD:
        raise FrameError(TOO_BIG, f"frame of {size} bytes")
    mask = _read_all(rfile, 4)
    data = _read_all(rfile, size)
    # XOR with the 4-byte mask repeated, done as one big integer rather than byte by byte.
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    payload = (int.from_bytes(data, "big") ^ key).to_bytes(size, "big") if size else b""
    return fin, opcode, payload


def echo(rfile: Reader, wfile: Writer) -> None:
    """Echo frames until the client closes (or breaks the protocol, or goes away)."""
    while True:
        try:
            frame = read_frame(rfile)
        except FrameError as exc:
            wfile.write(encode(CLOSE, struct.pack("!H", exc.code) + str(exc).encode()[:120]))
            return
        if frame is None:
            return
        fin, opcode, payload = frame
        if opcode == PING:
            wfile.write(encode(PONG, payload))
        elif opcode == CLOSE:
            # Echo the close code (the first two bytes), which completes the close handshake.
            wfile.write(encode(CLOSE, payload[:2]))
            return
        elif opcode != PONG:
            wfile.write(encode(opcode, payload, fin))
        wfile.flush()


def _read(rfile: Reader, n: int) -> bytes | None:
    """`n` bytes, or None at the end of the connection. A buffered reader (what the request
    handler's rfile is) returns fewer only at the end."""
    data = rfile.read(n)
    if not data:
        return None
    if len(data) != n:
        raise ConnectionResetError("the connection ended mid-frame")
    return data


def _read_all(rfile: Reader, n: int) -> bytes:
    data = _read(rfile, n)
    if data is None:
        raise ConnectionResetError("the connection ended mid-frame")
    return data
