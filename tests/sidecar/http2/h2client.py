"""A small h2c client for tests, on the `h2` library: requests multiplexed on one connection,
raw frames when a test needs them (`send_raw`), and every event kept for inspection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import StreamClosedError

from tests.support import WAIT


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] | None = None
    reset: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class H2Client:
    """One h2c connection with prior knowledge."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="latin-1"))
        self.answers: dict[int, Answer] = {}
        self.events: list[Event] = []
        self.goaway: ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        # Consumed body bytes are acknowledged unless a test holds them back.
        self.auto_ack = True
        self._window = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, host: str, port: int, settings: dict[int, int] | None = None) -> H2Client:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        if settings:
            client.conn.local_settings.update(settings)
        client.conn.initiate_connection()
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read())
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except Exception:
                    break
                for ev in events:
                    self._event(ev)
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed.set()
            for a in self.answers.values():
                a.done.set()

    def _event(self, ev: Event) -> None:
        self.events.append(ev)
        sid = getattr(ev, "stream_id", None)
        a = self.answers.get(sid) if sid is not None else None
        if isinstance(ev, ResponseReceived) and a is not None:
            h = _text(ev.headers)
            a.status = int(h.pop(":status"))
            a.headers = h
        elif isinstance(ev, DataReceived) and a is not None and sid is not None:
            a.body += ev.data or b""
            if self.auto_ack and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        elif isinstance(ev, TrailersReceived) and a is not None:
            a.trailers = _text(ev.headers)
        elif isinstance(ev, StreamEnded) and a is not None:
            a.done.set()
            self._window.set()  # a sender waiting for window sees the stream is done
        elif isinstance(ev, StreamReset) and a is not None:
            a.reset = int(ev.error_code or 0)
            a.done.set()
            self._window.set()
        elif isinstance(ev, WindowUpdated):
            self._window.set()
        elif isinstance(ev, ConnectionTerminated):
            self.goaway = ev

    def start(
        self,
        path: str,
        *,
        method: str = "GET",
        authority: str = "backend",
        headers: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.answers[sid] = Answer()
        hs = [(":method", method), (":path", path), (":scheme", "http")]
        hs.append((":authority", authority))
        hs += headers or []
        self.conn.send_headers(sid, hs, end_stream=end)
        self.flush()
        return sid

    async def send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        view = memoryview(body)
        answer = self.answers[sid]
        try:
            while view:
                if answer.done.is_set():
                    return  # answered (and reset) before the body was all sent
                window = min(
                    self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
                )
                if window <= 0:
                    self._window.clear()
                    await asyncio.wait_for(self._window.wait(), WAIT)
                    continue
                self.conn.send_data(sid, view[:window].tobytes())
                view = view[window:]
                self.flush()
                await self.writer.drain()
            if end:
                self.conn.end_stream(sid)
                self.flush()
        except StreamClosedError:
            return

    async def answer(self, sid: int) -> Answer:
        a = self.answers[sid]
        await asyncio.wait_for(a.done.wait(), WAIT)
        return a

    async def request(self, path: str, **kw: Any) -> Answer:
        body: bytes | None = kw.pop("body", None)
        sid = self.start(path, end=body is None, **kw)
        if body is not None:
            await self.send_body(sid, body)
        return await self.answer(sid)

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.conn.close_connection()
            self.flush()
            self.writer.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, WAIT)


def _text(headers: Any) -> dict[str, str]:
    """h2 gives str or bytes pairs depending on its header_encoding: str here."""
    out: dict[str, str] = {}
    for k, v in headers or []:
        key = k.decode("latin-1") if isinstance(k, bytes) else str(k)
        out[key] = v.decode("latin-1") if isinstance(v, bytes) else str(v)
    return out
