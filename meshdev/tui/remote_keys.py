"""The demo keys of a browser tab of `meshdev up --web`, acted on by the `up` that runs the mesh.

Each tab is a dashboard process of its own (textual-serve runs one per connection, tui/web.py),
while the mesh's session and its `Commands` live in `up`'s process. So `up --web` serves them
beside the page, on the same 127.0.0.1 port, and each tab's `RemoteKeys` calls them:

    POST /meshdev/keys/{name}   {"selected": ..., "prefer": [...], "direction": 1|-1}
         -> 200 {"ok": true, "text": "what happened"} or {"ok": false, "text": "why not"}
    GET  /meshdev/load          -> 200 {"markup": the load bar, as Rich markup}

Both need `Authorization: Bearer <the session's admin token>` (401 without), which only the
session's state file (0600) holds: a page of another site open in the same browser reaches
127.0.0.1 too but cannot read it, and cannot open a tab's terminal either (tui/web.py's
`local_only` refuses its Origin). One `Commands` serves every tab, so a load started in one tab
shows in all of them, as it would in one terminal.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from rich.errors import MarkupError
from rich.text import Text

from meshdev.tui.logic.actions import ActionFailed
from meshdev.tui.logic.ports import DemoKeys

PREFIX: Final = "/meshdev/"
LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
TIMEOUT_S: Final = 30.0  # a burst or a probe takes seconds; a stop waits for answers
# The load bar is asked for at most this often (the dashboard shows it every second).
LOAD_EVERY_S: Final = 0.5


def _keys(keys: DemoKeys, body: dict[str, Any]) -> dict[str, Callable[[], Awaitable[str]]]:
    selected = body.get("selected")
    selected = selected if isinstance(selected, str) else None
    prefer = [p for p in body.get("prefer", ()) if isinstance(p, str)]
    direction = 1 if body.get("direction", 1) == 1 else -1
    return {
        "load": keys.toggle_load,
        "rate": lambda: keys.rate(direction),
        "breaker": keys.trip_breaker,
        "chaos": lambda: keys.chaos(selected),
        "plaintext": lambda: keys.plaintext(selected),
        "unauthorized": keys.unauthorized,
        "fault": lambda: keys.fault(selected),
        "canary": lambda: keys.canary(prefer),
    }


def check_keys_url(url: str) -> None:
    """Raises ValueError unless `url` is on this machine: the token sent there reconfigures
    the mesh's sidecars."""
    if urlsplit(url).hostname not in LOOPBACK:
        raise ValueError(f"{url}: the demo keys are served on 127.0.0.1 only")


class KeyService:
    """The server side, added to `up --web`'s web application."""

    def __init__(self, keys: DemoKeys, token: str) -> None:
        self.keys = keys
        self._token = token
        self._closed = False

    def close(self) -> None:
        """The mesh is going away: no key acts any more (503)."""
        self._closed = True

    def install(self, app: web.Application) -> None:
        app.router.add_post(PREFIX + "keys/{name}", self._key)
        app.router.add_get(PREFIX + "load", self._load)

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "").encode()
        return secrets.compare_digest(given, f"Bearer {self._token}".encode())

    async def _key(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "a session token is needed"}, status=401)
        if self._closed:
            return web.json_response({"error": "the mesh is stopping"}, status=503)
        try:
            body = await request.json()
        except ValueError:
            body = {}
        action = _keys(self.keys, body if isinstance(body, dict) else {}).get(
            request.match_info["name"]
        )
        if action is None:
            return web.json_response({"error": "no such key"}, status=404)
        try:
            text = await action()
        except ActionFailed as exc:
            return web.json_response({"ok": False, "text": str(exc)})
        return web.json_response({"ok": True, "text": text})

    async def _load(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "a session token is needed"}, status=401)
        return web.json_response({"markup": self.keys.load_text().markup})


class RemoteKeys:
    """The client side: a `DemoKeys` whose actions run in the `up` at `base_url`."""

    def __init__(self, base_url: str, token: str) -> None:
        check_keys_url(base_url)
        self.base_url = base_url.rstrip("/") + PREFIX
        self.token = token
        self._load_text = Text("load: asking the mesh's `meshdev up`...", style="dim")
        self._load_task: asyncio.Task[None] | None = None
        self._load_at = 0.0

    async def toggle_load(self) -> str:
        return await self._press("load")

    async def rate(self, direction: int) -> str:
        return await self._press("rate", direction=direction)

    async def trip_breaker(self) -> str:
        return await self._press("breaker")

    async def chaos(self, selected: str | None = None) -> str:
        return await self._press("chaos", selected=selected)

    async def plaintext(self, selected: str | None = None) -> str:
        return await self._press("plaintext", selected=selected)

    async def unauthorized(self) -> str:
        return await self._press("unauthorized")

    async def fault(self, route_key: str | None) -> str:
        return await self._press("fault", selected=route_key)

    async def canary(self, prefer: Sequence[str] = ()) -> str:
        return await self._press("canary", prefer=list(prefer))

    def load_text(self) -> Text:
        """The last load bar `up` gave; asks for a newer one (answered by the next call)."""
        loop = asyncio.get_running_loop()
        busy = self._load_task is not None and not self._load_task.done()
        if not busy and loop.time() - self._load_at >= LOAD_EVERY_S:
            self._load_at = loop.time()
            self._load_task = loop.create_task(self._fetch_load())
        return self._load_text

    async def _fetch_load(self) -> None:
        try:
            doc = await self._call("GET", "load", None)
            self._load_text = Text.from_markup(str(doc["markup"]))
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, MarkupError):
            # Never the last bar for good (a "load on" that stopped with its `up`).
            self._load_text = Text("load: the `meshdev up` serving this page does not answer")

    async def _press(self, name: str, **body: object) -> str:
        try:
            doc = await self._call("POST", f"keys/{name}", body)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ActionFailed(
                f"the `meshdev up` serving this page did not answer ({exc or type(exc).__name__})"
            ) from None
        text = str(doc.get("text") or doc.get("error") or "no answer")
        if doc.get("ok") is not True:
            raise ActionFailed(text)
        return text

    async def _call(self, method: str, path: str, body: object) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as http,
            http.request(method, self.base_url + path, json=body, headers=headers) as resp,
        ):
            doc = await resp.json(content_type=None)
        if not isinstance(doc, dict):
            raise ValueError(f"{path} answered {doc!r}")
        return doc
