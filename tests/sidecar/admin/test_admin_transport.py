"""The admin API's HTTP layer on the sidecar's own engine: methods, HEAD, keep-alive, body
framing and the data path's hardening, through raw bytes on a loopback socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from meshdev.sidecar.admin.server import TOKEN_HEADER, AdminServer, start_admin
from meshdev.testing.fake_surface import FakeSurface, config_document, make_config
from tests.support import WAIT

TOKEN = "s3cret-mesh-token"


@pytest.fixture
async def surface() -> FakeSurface:
    return FakeSurface()


@pytest.fixture
async def admin(surface: FakeSurface) -> AsyncIterator[AdminServer]:
    server = await start_admin(
        surface, host="127.0.0.1", port=0, token=TOKEN, server_info={"version": "test"}
    )
    yield server
    await server.close(grace=1.0)


Response = tuple[int, dict[str, str], bytes]


async def read_response(reader: asyncio.StreamReader, *, head_only: bool = False) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    size = 0 if head_only else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(size), WAIT)
    return int(lines[0].split()[1]), headers, body


@contextlib.asynccontextmanager
async def connection(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def request(method: str, path: str, extra: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {path} HTTP/1.1\r\nHost: admin\r\n{extra}{length}\r\n".encode() + body


async def test_requests_share_one_keep_alive_connection(admin: AdminServer) -> None:
    async with connection(admin.port) as (reader, writer):
        answers = []
        for path in ("/ready", "/server_info", "/stats", "/nope"):
            writer.write(request("GET", path))
            answers.append(await read_response(reader))
    assert [a[0] for a in answers] == [200, 200, 200, 404]
    assert answers[0][2] == b"LIVE\n"
    assert answers[0][1]["content-type"] == "text/plain; charset=utf-8"
    assert json.loads(answers[1][2])["version"] == "test"
    assert answers[1][1]["content-type"] == "application/json; charset=utf-8"
    assert json.loads(answers[3][2]) == {"error": "Not Found"}
    assert all("connection" not in a[1] for a in answers)


async def test_head_answers_the_get_length_without_a_body(admin: AdminServer) -> None:
    async with connection(admin.port) as (reader, writer):
        writer.write(request("GET", "/help"))
        _, get_headers, body = await read_response(reader)
        writer.write(request("HEAD", "/help"))
        status, headers, _ = await read_response(reader, head_only=True)
        # The next answer starts right after the head: HEAD sent no body.
        writer.write(request("GET", "/ready"))
        after = await read_response(reader)
    assert status == 200
    assert headers["content-length"] == get_headers["content-length"] == str(len(body))
    assert body.startswith(b"admin commands are:\n")
    assert after[2] == b"LIVE\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_reads_refuse_other_methods_before_asking_for_a_token(
    admin: AdminServer, method: str
) -> None:
    async with connection(admin.port) as (reader, writer):
        writer.write(request(method, "/stats", body=b"x=1"))
        status, headers, body = await read_response(reader)
    assert status == 405
    assert headers["allow"] == "GET,HEAD"
    assert json.loads(body) == {"error": "Method Not Allowed"}


async def test_a_percent_encoded_path_names_the_same_endpoint(admin: AdminServer) -> None:
    async with connection(admin.port) as (reader, writer):
        writer.write(request("GET", "/re%61dy"))
        status, _, body = await read_response(reader)
    assert (status, body) == (200, b"LIVE\n")


async def test_the_first_of_repeated_query_keys_counts(admin: AdminServer) -> None:
    async with connection(admin.port) as (reader, writer):
        writer.write(request("GET", "/clusters?format=json&format=xml"))
        status, headers, _ = await read_response(reader)
    assert status == 200
    assert headers["content-type"].startswith("application/json")


async def test_a_chunked_body_within_the_limit_is_read_whole(
    admin: AdminServer, surface: FakeSurface
) -> None:
    form = b"fault.http.abort.abort_percent=50&x.y=1"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (form[:10], form[10:]))
    auth = f"{TOKEN_HEADER}: {TOKEN}\r\nTransfer-Encoding: chunked\r\n"
    async with connection(admin.port) as (reader, writer):
        writer.write(request("POST", "/runtime_modify", auth) + chunks + b"0\r\n\r\n")
        status, headers, body = await read_response(reader)
    assert (status, body) == (200, b"OK\n")
    assert "connection" not in headers  # the body was read: the connection stays usable
    assert surface.overrides == {"fault.http.abort.abort_percent": "50", "x.y": "1"}


async def test_an_oversized_declared_body_is_refused_unread_and_the_connection_closed(
    admin: AdminServer, surface: FakeSurface
) -> None:
    limit = surface.config.limits.max_admin_body
    head = request("POST", "/config", f"{TOKEN_HEADER}: {TOKEN}\r\n")
    head = head.replace(b"\r\n\r\n", f"\r\nContent-Length: {limit + 1}\r\n\r\n".encode())
    async with connection(admin.port) as (reader, writer):
        writer.write(head + b"{")
        status, headers, body = await read_response(reader)
        rest = await asyncio.wait_for(reader.read(), WAIT)
    assert status == 413
    assert json.loads(body)["limit"] == limit
    assert headers["connection"] == "close"
    assert rest == b""
    assert surface.applied == []


async def test_smuggling_prone_framing_is_refused_as_on_the_data_path(
    admin: AdminServer, surface: FakeSurface
) -> None:
    body = json.dumps(config_document(2)).encode()
    both = f"{TOKEN_HEADER}: {TOKEN}\r\nTransfer-Encoding: chunked\r\n"
    async with connection(admin.port) as (reader, writer):
        writer.write(request("POST", "/config", both, body))
        status, headers, _ = await read_response(reader)
        rest = await asyncio.wait_for(reader.read(), WAIT)
    assert (status, headers["connection"], rest) == (400, "close", b"")
    assert surface.applied == []


async def test_the_listener_follows_the_limits_of_a_swapped_config(
    admin: AdminServer, surface: FakeSurface
) -> None:
    many = "".join(f"x-h{i}: v\r\n" for i in range(12))
    new = json.dumps(config_document(2, limits={"max_headers": 10})).encode()
    async with connection(admin.port) as (reader, writer):
        writer.write(request("GET", "/ready", many))
        before = await read_response(reader)
        writer.write(request("POST", "/config", f"{TOKEN_HEADER}: {TOKEN}\r\n", new))
        swapped = await read_response(reader)
        writer.write(request("GET", "/ready", many))
        after = await read_response(reader)
    assert (before[0], swapped[0], after[0]) == (200, 200, 431)
    assert surface.config.limits.max_headers == 10


async def test_explicit_limits_stay_as_given(surface: FakeSurface) -> None:
    fixed = make_config(limits={"max_headers": 50}).limits
    server = await start_admin(
        surface, host="127.0.0.1", port=0, token=TOKEN, server_info={}, limits=fixed
    )
    try:
        surface.apply(make_config(2, limits={"max_headers": 5}))
        async with connection(server.port) as (reader, writer):
            writer.write(request("GET", "/ready", "".join(f"x-h{i}: v\r\n" for i in range(8))))
            status, _, _ = await read_response(reader)
    finally:
        await server.close(grace=1.0)
    assert status == 200


async def test_close_stops_listening_and_keeps_the_port(admin: AdminServer) -> None:
    port = admin.port
    await admin.close(grace=1.0)
    assert admin.port == port
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
