"""An incremental parser for server-sent events (the WHATWG "event stream" format).

Bytes go in as they arrive, cut anywhere (inside a line, between `\\r` and `\\n`, inside a
multi-byte character); whole events come out. Lines end in CRLF, LF or CR; `:` starts a
comment (a keep-alive); several `data:` lines join with newlines; an event is dispatched at a
blank line and only if it has data, exactly as a browser's EventSource does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str = ""


class SSEParser:
    """Feed chunks, get events. `retry_ms` holds the server's last `retry:` advice, if any."""

    __slots__ = ("_buf", "_data", "_event", "_first", "_id", "_scanned", "retry_ms")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        self._first = True
        # How much of `_buf` is known to hold no line end: a long line arriving in many chunks
        # is scanned once, not once per chunk.
        self._scanned = 0
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        # What a sidecar's stream sends 4 times a second, one event to a chunk: a single
        # `data:` line and its blank line, nothing pending. Taken whole, it gives what the
        # line-by-line path below would, without its scan, copies and field parsing.
        if (
            not self._buf
            and not self._data
            and not self._event
            and not self._first
            and chunk.startswith(b"data:")
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk.endswith(b"\n\n")
            and b"\r" not in chunk
        ):
            value = chunk[5:-2].decode("utf-8", "replace")
            if value[:1] == " ":
                value = value[1:]
            return [SSEEvent(value, "message", self._id)]
        buf = self._buf
        buf += chunk
        events: list[SSEEvent] = []
        pos = 0
        end = len(buf)
        held_cr = False
        for m in _LINE_END.finditer(buf, self._scanned):
            # A CR that ends the buffer may be the first half of a CRLF: wait for more.
            if m.end() == end and m.group() == b"\r":
                held_cr = True
                break
            self._line(bytes(buf[pos : m.start()]), events)
            pos = m.end()
        if pos:
            del buf[:pos]
        self._scanned = len(buf) - 1 if held_cr else len(buf)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: a pending CR ends its line; an event without its blank line is dropped."""
        events: list[SSEEvent] = []
        if self._buf.endswith(b"\r"):
            self._line(bytes(self._buf[:-1]), events)
        self._buf.clear()
        self._scanned = 0
        self._data.clear()
        self._event = ""
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        line = raw.decode("utf-8", "replace")
        if self._first:
            self._first = False
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            self._dispatch(events)
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent("\n".join(self._data), self._event or "message", self._id))
        self._data = []
        self._event = ""
