"""The admin API's thin HTTP layer on the sidecar's own HTTP/1.1 engine (sidecar/http/).

Routing by exact path, the token rule for state changes, capped request bodies, and the
error shape every failure answers with (`{"error": ...}` as JSON). It knows nothing of the
endpoints themselves (admin/routes.py). The data path's engine serves this too, so the
sidecar needs no web framework: aiohttp alone cost it ~20 MB and ~0.1 s of start-up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from urllib.parse import parse_qsl, unquote

from meshdev.sidecar.http import BodyError, Request, ResponseWriter

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-meshdev-token"
JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
READ_METHODS = frozenset({"GET", "HEAD"})

dumps = partial(json.dumps, allow_nan=False)


class AdminError(Exception):
    """An error answer: status, message, and extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole response, sent with its Content-Length."""

    body: bytes
    content_type: str
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


def json_answer(data: object, status: int = 200) -> Answer:
    return Answer(dumps(data).encode(), JSON_TYPE, status)


def text_answer(text: str, content_type: str = TEXT_TYPE) -> Answer:
    return Answer(text.encode(), content_type)


def error_answer(status: int, message: str, extra: Mapping[str, object] | None = None) -> Answer:
    return json_answer({"error": message, **(extra or {})}, status)


@dataclass(frozen=True, slots=True)
class Call:
    """One admin request: the parsed request, its query (the first value of a repeated key
    wins), and the writer a streaming endpoint answers on."""

    request: Request
    query: Mapping[str, str]
    writer: ResponseWriter


# An endpoint returns its answer, or None when it wrote the response itself (a stream).
Endpoint = Callable[[Call], Awaitable[Answer | None]]


@dataclass(frozen=True, slots=True)
class Route:
    methods: frozenset[str]
    endpoint: Endpoint

    @property
    def allow(self) -> str:
        return ",".join(sorted(self.methods))


def get(endpoint: Endpoint) -> Route:
    """A read: GET, and HEAD (the same answer without its body)."""
    return Route(READ_METHODS, endpoint)


def post(endpoint: Endpoint) -> Route:
    """A state change: POST only, and only with the mesh's token."""
    return Route(frozenset({"POST"}), endpoint)


def parse_query(raw: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        query.setdefault(key, value)
    return query


def check_token(expected: str, given: str | None) -> None:
    if not expected:
        raise AdminError(403, "no admin token is configured: state changes are disabled")
    if given is None:
        raise AdminError(401, f"missing {TOKEN_HEADER} header")
    if not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise AdminError(403, f"wrong {TOKEN_HEADER}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` (by its Content-Length,
    or while reading a chunked one). The connection closes after a 413 with an unread body."""
    too_large = AdminError(413, f"request body over {limit} bytes", limit=limit)
    declared = request.body.length
    if declared is not None and declared > limit:
        raise too_large
    body = await request.body.read_all(limit)
    if body is None:
        raise too_large
    return body


async def send(writer: ResponseWriter, answer: Answer) -> None:
    headers = [
        ("content-type", answer.content_type),
        ("content-length", str(len(answer.body))),
        *answer.headers,
    ]
    await writer.start(answer.status, headers)
    await writer.write(answer.body)
    await writer.end()


class Router:
    """An HTTP engine handler serving `routes` by exact (percent-decoded) path."""

    def __init__(self, routes: Mapping[str, Route], token: str) -> None:
        self._routes = dict(routes)
        self._token = token

    async def __call__(self, request: Request, writer: ResponseWriter) -> None:
        try:
            answer = await self._answer(request, writer)
        except AdminError as exc:
            answer = error_answer(exc.status, exc.message, exc.extra)
        except BodyError:
            # The client left or broke its chunking mid-body: the engine has answered or closed.
            log.debug("admin %s %s: body unreadable", request.method, request.path)
            writer.abort()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if writer.started:
                raise  # headers are gone already: the engine resets the connection
            log.exception("admin %s %s failed", request.method, request.path)
            answer = error_answer(500, "internal error (see the sidecar's log)")
        if answer is not None and not writer.started:
            await send(writer, answer)

    async def _answer(self, request: Request, writer: ResponseWriter) -> Answer | None:
        route = self._routes.get(unquote(request.path))
        if route is None:
            return error_answer(404, "Not Found")
        if request.method not in route.methods:
            answer = error_answer(405, "Method Not Allowed")
            return Answer(answer.body, answer.content_type, 405, (("allow", route.allow),))
        if request.method not in READ_METHODS:
            check_token(self._token, request.header(TOKEN_HEADER))
        return await route.endpoint(Call(request, parse_query(request.query), writer))
