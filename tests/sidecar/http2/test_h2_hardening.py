"""HTTP/2 hardening of a real sidecar's listener, each attack written as raw frames (hpack and
hyperframe, no client library to smooth it over): the concurrent stream limit, the header list
size, rapid reset (CVE-2023-44487) and PING / SETTINGS floods, answered as Envoy answers them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from meshdev.sidecar.http2 import MAX_CONCURRENT_STREAMS, PREFACE
from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import Upstream, sidecar, simple_config, stat, upstreams
from tests.support import LOCALHOST, WAIT

REFUSED_STREAM = 0x7
ENHANCE_YOUR_CALM = 0xB
MAX_FRAME = 16384


class Raw:
    """An HTTP/2 connection driven frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = Encoder()

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        raw = cls(reader, writer)
        writer.write(PREFACE + SettingsFrame(0).serialize())
        return raw

    def send(self, *frames: Frame) -> None:
        self.writer.write(b"".join(f.serialize() for f in frames))

    def headers(
        self, sid: int, path: str, *, end: bool = True, extra: list[tuple[str, str]] | None = None
    ) -> None:
        block = self.encoder.encode(
            [
                (":method", "GET"),
                (":path", path),
                (":scheme", "http"),
                (":authority", "backend"),
                *(extra or []),
            ]
        )
        first = HeadersFrame(sid)
        first.data = block[:MAX_FRAME]
        rest = block[MAX_FRAME:]
        if end:
            first.flags.add("END_STREAM")
        frames: list[Frame] = [first]
        while rest:
            cont = ContinuationFrame(sid)
            cont.data = rest[:MAX_FRAME]
            rest = rest[MAX_FRAME:]
            frames.append(cont)
        frames[-1].flags.add("END_HEADERS")
        self.send(*frames)

    def rst(self, sid: int, code: int = 0x8) -> None:
        f = RstStreamFrame(sid)
        f.error_code = code
        self.send(f)

    async def frame(self) -> Frame | None:
        """The next frame from the server, None at the end of the connection."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(9), WAIT)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        frame, length = Frame.parse_frame_header(memoryview(head))
        body = await asyncio.wait_for(self.reader.readexactly(length), WAIT)
        frame.parse_body(memoryview(body))
        return frame

    async def until(self, kind: type[Frame]) -> Frame | None:
        """Read frames up to the first of `kind` (None if the connection ends first)."""
        while True:
            f = await self.frame()
            if f is None or isinstance(f, kind):
                return f

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError):
            await self.writer.wait_closed()


@asynccontextmanager
async def listener() -> AsyncIterator[tuple[Upstream, Sidecar, Raw]]:
    async with upstreams("a") as ups, sidecar(simple_config(ups)) as sc:
        port = next(x.port for x in sc.config.listeners if x.name == "outbound")
        raw = await Raw.open(port)
        try:
            yield ups[0], sc, raw
        finally:
            await raw.close()


async def test_streams_over_the_limit_are_refused_and_the_connection_goes_on() -> None:
    async with listener() as (up, sc, raw):
        sids = [1 + 2 * i for i in range(MAX_CONCURRENT_STREAMS + 1)]
        for sid in sids:
            raw.headers(sid, "/held?hold=1")
        refused = await raw.until(RstStreamFrame)
        assert isinstance(refused, RstStreamFrame)
        assert (refused.stream_id, refused.error_code) == (sids[-1], REFUSED_STREAM)
        assert stat(sc, "http2.too_many_streams") == 1
        up.release()
        ended: set[int] = set()
        while len(ended) < MAX_CONCURRENT_STREAMS:
            f = await raw.frame()
            assert f is not None and not isinstance(f, GoAwayFrame | RstStreamFrame), f
            if isinstance(f, HeadersFrame | DataFrame) and "END_STREAM" in f.flags:
                ended.add(f.stream_id)
        assert ended == set(sids[:-1])
        assert up.hits == MAX_CONCURRENT_STREAMS


async def test_a_header_list_over_the_limit_closes_the_connection() -> None:
    async with listener() as (up, sc, raw):
        limit = sc.config.limits.max_header_bytes
        raw.headers(1, "/big-headers", extra=[("x-big", "v" * (limit + 1024))])
        goaway = await raw.until(GoAwayFrame)
        assert isinstance(goaway, GoAwayFrame)
        assert await raw.frame() is None
        assert stat(sc, "http2.header_overflow") == 1
        assert up.hits == 0


async def test_rapid_reset_is_cut_off_with_goaway() -> None:
    """CVE-2023-44487: streams opened and reset at once. Envoy's rule closes the connection
    once half of its 500-stream threshold were reset prematurely."""
    async with listener() as (_, sc, raw):
        for i in range(400):
            sid = 1 + 2 * i
            raw.headers(sid, "/held?hold=1")
            raw.rst(sid)
        goaway = await raw.until(GoAwayFrame)
        assert isinstance(goaway, GoAwayFrame)
        assert goaway.error_code == ENHANCE_YOUR_CALM
        assert await raw.until(GoAwayFrame) is None
        assert stat(sc, "http.outbound.downstream_rq_too_many_premature_resets") == 1
        assert stat(sc, "http2.rx_reset") >= 250
        assert stat(sc, "http.outbound.downstream_rq_active") == 0


async def test_a_few_resets_and_pings_are_fine() -> None:
    async with listener() as (up, sc, raw):
        for i in range(10):
            raw.headers(1 + 2 * i, "/held?hold=1")
            raw.rst(1 + 2 * i)
        for i in range(10):
            raw.send(PingFrame(0, opaque_data=i.to_bytes(8, "big")))
        acks = 0
        while acks < 10:
            f = await raw.frame()
            assert f is not None and not isinstance(f, GoAwayFrame)
            if isinstance(f, PingFrame) and "ACK" in f.flags:
                acks += 1
        raw.headers(21, "/after")
        answer = await raw.until(HeadersFrame)
        assert isinstance(answer, HeadersFrame) and answer.stream_id == 21
        assert stat(sc, "http2.outbound_control_flood") == 0
        assert stat(sc, "http.outbound.downstream_rq_too_many_premature_resets") == 0
        del up


async def flood(raw: Raw, frame: Frame, count: int) -> Frame | None:
    raw.writer.write(frame.serialize() * count)
    return await raw.until(GoAwayFrame)


async def test_ping_flood_is_cut_off() -> None:
    async with listener() as (_, sc, raw):
        goaway = await flood(raw, PingFrame(0, opaque_data=b"12345678"), 5000)
        assert isinstance(goaway, GoAwayFrame)
        assert goaway.error_code == ENHANCE_YOUR_CALM
        assert stat(sc, "http2.outbound_control_flood") == 1


async def test_settings_flood_is_cut_off() -> None:
    async with listener() as (_, sc, raw):
        goaway = await flood(raw, SettingsFrame(0), 5000)
        assert isinstance(goaway, GoAwayFrame)
        assert goaway.error_code == ENHANCE_YOUR_CALM
        assert stat(sc, "http2.outbound_control_flood") == 1
