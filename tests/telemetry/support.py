"""Helpers for the telemetry tests: a steerable clock, admin servers on loopback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from meshdev.sidecar.admin.server import AdminServer, start_admin

# The admin API's in-memory ControlSurface lives with the sidecar tests.
from meshdev.testing.fake_surface import FakeSurface, breaker, host
from tests.support import LOCALHOST


@dataclass
class Clock:
    """A monotonic clock that moves only when told to."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Server:
    """An aiohttp app on 127.0.0.1 that can be stopped and started again on the same port."""

    make_app: Callable[[], web.Application]
    port: int = 0
    runner: web.AppRunner | None = None
    started: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def start(self) -> Server:
        self.runner = web.AppRunner(self.make_app(), shutdown_timeout=1.0, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, LOCALHOST, self.port).start()
        self.port = self.runner.addresses[0][1]
        self.started += 1
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class AdminTestServer:
    """The real admin API on 127.0.0.1, stoppable and startable again on the same port
    (a restarted sidecar); the same interface as `Server`."""

    surface: FakeSurface
    port: int = 0
    admin: AdminServer | None = None
    started: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    async def start(self) -> AdminTestServer:
        self.admin = await start_admin(
            self.surface, host=LOCALHOST, port=self.port, token="t0ken", server_info={}
        )
        self.port = self.admin.port
        self.started += 1
        return self

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.close(grace=1.0)
            self.admin = None


def admin_server(surface: FakeSurface) -> AdminTestServer:
    return AdminTestServer(surface)


__all__ = [
    "AdminTestServer",
    "Clock",
    "FakeSurface",
    "Server",
    "admin_server",
    "breaker",
    "host",
]
