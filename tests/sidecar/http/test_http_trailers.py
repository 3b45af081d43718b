"""Trailers to an HTTP/1.1 client (an HTTP/2 or gRPC upstream's, relayed): in the last chunk of
a chunked answer, dropped where the framing has no place for them (content-length)."""

from __future__ import annotations

import asyncio

from meshdev.sidecar.http import Request, ResponseWriter
from tests.sidecar.http.test_http_server import Client, serving
from tests.support import WAIT


async def test_trailers_go_in_the_last_chunk_and_the_connection_goes_on() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await writer.start(200, [("content-type", "application/grpc")])
        await writer.write(b"body")
        await writer.end([("grpc-status", "0"), ("grpc-message", "fine")])

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
        head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), WAIT)
        assert b"transfer-encoding: chunked" in head
        rest = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), WAIT)
        assert rest == b"4\r\nbody\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n"
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, _ = await c.response()
        assert status == 200
        c.close()


async def test_trailers_of_a_length_framed_answer_are_dropped() -> None:
    async def handler(req: Request, writer: ResponseWriter) -> None:
        await writer.start(200, [("content-length", "4")])
        await writer.write(b"body")
        await writer.end([("grpc-status", "0")])

    async with serving(handler) as srv:
        c = await Client.connect(srv.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await c.response())[2] == b"body"
        # Nothing of the trailers leaked into the stream: the next answer parses.
        assert (await c.response())[2] == b"body"
        c.close()
