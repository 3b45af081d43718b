"""The dashboard in a browser: textual-serve serves `meshdev watch` to each browser tab.

textual-serve runs the given command once per browser connection, with Textual's web driver,
and relays the terminal between the subprocess and the page (xterm.js). The command is the same
`meshdev watch` dashboard a terminal shows; for a mesh started by `meshdev up` it follows the
session through its state file (tui/session_watch.py): pods, their states, reloads.

Bound to 127.0.0.1 only, and only to this machine's own pages (`local_only`): the dashboard
can change the mesh (`up --web`'s demo keys, tui/remote_keys.py) and has no login of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shlex
import signal
import sys
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from textual_serve.server import Server

from meshdev.tui.remote_keys import KeyService

HOST = "127.0.0.1"
# textual-serve's route for the page's terminal.
WEBSOCKET_PATH = "/ws"


class WebError(Exception):
    """The web dashboard cannot be served (its port is taken, say)."""


def watch_command(args: Sequence[str]) -> str:
    """The shell command textual-serve runs per tab: this Python's `meshdev watch ARGS`."""
    return shlex.join([sys.executable, "-m", "meshdev", "watch", *args])


def local_only(port: int) -> Middleware:
    """Refuse what did not come from this machine's own pages: a Host other than ours (a DNS
    rebinding: another site's name resolved to 127.0.0.1) and, on the page's WebSocket, an
    Origin other than ours. Browsers apply no same-origin rule to WebSockets, so without this
    any site open in the browser could open a tab's dashboard and press its keys, which act on
    the mesh."""
    hosts = {f"{HOST}:{port}", f"localhost:{port}"}
    origins = {f"http://{host}" for host in hosts}

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.host not in hosts:
            return web.Response(status=403, text="meshdev's dashboard answers on 127.0.0.1 only")
        if origin is not None and origin not in origins:
            return web.Response(status=403, text=f"not from this dashboard's page: {origin}")
        if request.path == WEBSOCKET_PATH and origin is None:
            return web.Response(status=403, text="a browser's page opens the dashboard")
        return await handler(request)

    return guard


class WebDashboard:
    """textual-serve's web application, run in the caller's event loop."""

    def __init__(self, command: str, port: int, title: str, keys: KeyService | None = None) -> None:
        self.port = port
        self._server = Server(command, host=HOST, port=port, title=title)
        # `up --web`: the tabs' demo keys, acted on here (tui/remote_keys.py).
        self._keys = keys
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    async def start(self) -> str:
        """Listen; returns the URL. Raises WebError when the port cannot be bound."""
        # textual-serve's own serve() owns the event loop (web.run_app); its application is
        # the same one, made here so that it runs beside the mesh in our loop.
        app = await self._server._make_app()
        app.middlewares.append(local_only(self.port))
        if self._keys is not None:
            self._keys.install(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            if exc.errno == errno.EADDRINUSE:
                raise WebError(
                    f"cannot serve the web dashboard: {HOST}:{self.port} is taken "
                    "(choose another with --web PORT)"
                ) from None
            raise WebError(f"cannot serve the web dashboard on {HOST}:{self.port}: {exc}") from exc
        return self.url

    async def stop(self) -> None:
        """Close the page's connections (their dashboards exit) and stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def serve_until_signal(dashboard: WebDashboard, say: Callable[[str], None]) -> int:
    """Serve until SIGINT/SIGTERM (`meshdev watch --web`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        url = await dashboard.start()
        say(f"web dashboard: {url} (Ctrl-C stops it)")
        await stop.wait()
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):
                loop.remove_signal_handler(sig)
        await dashboard.stop()
