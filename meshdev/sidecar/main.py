"""Running a sidecar: its listeners, its admin API, hot swaps that re-bind, graceful stop.

`run_sidecar(config_path, token)` is what `meshdev sidecar --config FILE` runs; `Sidecar` is
the same thing for tests and embedding (start, apply, stop, in the caller's event loop).

A swap re-binds only listeners whose address or port changed: a listener that stays where it
is keeps its socket and connections, and just serves the new config; one that moved is bound
at its new place before the old one is drained and closed. A new address is test-bound before
the swap, so a port that is taken rejects the whole config (the old one keeps serving) rather
than leaving a listener missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from meshdev import __version__
from meshdev.common.breaker_view import BreakerView
from meshdev.common.sidecar_config import ConfigRejected, Listener, SidecarConfig, parse_config
from meshdev.sidecar.admin.server import AdminServer, start_admin
from meshdev.sidecar.admin.views import HostView
from meshdev.sidecar.dataplane import DataPlane
from meshdev.sidecar.http import HttpServer, start_server
from meshdev.sidecar.proxy.pipeline import Proxy
from meshdev.sidecar.stats.store import Store

log = logging.getLogger(__name__)

# How long a moved or removed listener lets its requests in flight finish.
DRAIN_GRACE = 15.0

Address = tuple[str, int]


ENV_PREFIX = "env:"


def load_config(path: str | Path) -> SidecarConfig:
    """Read a JSON or YAML sidecar config file, or JSON from an environment variable named
    `env:NAME` (how the Docker runtime hands over the first config without a file copy);
    raises ConfigRejected with every reason."""
    if isinstance(path, str) and path.startswith(ENV_PREFIX):
        name = path[len(ENV_PREFIX) :]
        if name not in os.environ:
            raise ConfigRejected([f"environment variable {name} is not set"])
        return parse_config(json.loads(os.environ[name]))
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith(".json"):
        return parse_config(json.loads(text))
    # Imported here: the control plane writes JSON, and the sidecar's memory budget is tight.
    import yaml

    return parse_config(yaml.safe_load(text))


def _check_bindable(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))


class Sidecar:
    """The data plane plus its servers; implements `admin.views.ControlSurface` by delegation."""

    def __init__(self, config: SidecarConfig, *, token: str) -> None:
        self.plane = DataPlane(config, Store())
        self.plane.before_swap = self._before_swap
        self.plane.after_swap = self._after_swap
        self._token = token
        # Bound listeners by address; each with the Proxy whose listener name may change.
        self._servers: dict[Address, tuple[HttpServer, Proxy]] = {}
        self._admin: AdminServer | None = None
        self._rebinds: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    # -- ControlSurface ---------------------------------------------------------------------

    @property
    def config(self) -> SidecarConfig:
        return self.plane.config

    @property
    def stats(self) -> Store:
        return self.plane.stats

    def apply(self, config: SidecarConfig) -> None:
        self.plane.apply(config)

    def hosts(self) -> list[HostView]:
        return self.plane.hosts()

    def breakers(self) -> list[BreakerView]:
        return self.plane.breakers()

    def runtime(self) -> dict[str, str]:
        return self.plane.runtime()

    def set_runtime(self, values: dict[str, str]) -> None:
        self.plane.set_runtime(values)

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def admin_port(self) -> int:
        assert self._admin is not None
        return self._admin.port

    def listener_port(self, name: str) -> int:
        lst = next(x for x in self.config.listeners if x.name == name)
        return self._servers[(lst.address, lst.port)][0].port

    async def start(self) -> None:
        await self.plane.start()
        config = self.config
        for lst in config.listeners:
            await self._bind(lst, config)
        self._admin = await start_admin(
            self,
            host=config.admin.address,
            port=config.admin.port,
            token=self._token,
            server_info={"version": __version__, "command_line_options": {}},
        )

    async def stop(self, grace: float = DRAIN_GRACE) -> None:
        for task in list(self._rebinds):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        servers = [server for server, _ in self._servers.values()]
        self._servers = {}
        await asyncio.gather(*(s.close(grace) for s in servers))
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        await self.plane.aclose()

    async def _bind(self, lst: Listener, config: SidecarConfig) -> None:
        proxy = Proxy(self.plane, lst.name)
        server = await start_server(proxy, lst.address, lst.port, config.limits)
        self._servers[(lst.address, lst.port)] = (server, proxy)

    # -- hot swap ---------------------------------------------------------------------------

    def _before_swap(self, old: SidecarConfig, new: SidecarConfig) -> None:
        for lst in new.listeners:
            if (lst.address, lst.port) not in self._servers:
                _check_bindable(lst.address, lst.port)

    def _after_swap(self, old: SidecarConfig, new: SidecarConfig) -> None:
        # Listeners that stay where they are serve the new config from now on.
        for lst in new.listeners:
            bound = self._servers.get((lst.address, lst.port))
            if bound is not None:
                bound[1].listener = lst.name
                bound[0].limits = new.limits
        task = asyncio.get_running_loop().create_task(self._rebind(new))
        self._rebinds.add(task)
        task.add_done_callback(self._rebinds.discard)

    async def _rebind(self, config: SidecarConfig) -> None:
        async with self._lock:
            if self.config is not config:
                return  # a newer swap follows and will do the work
            wanted = {(lst.address, lst.port): lst for lst in config.listeners}
            for addr, lst in wanted.items():
                if addr not in self._servers:
                    try:
                        await self._bind(lst, config)
                    except OSError:
                        log.exception("listener %s cannot bind %s:%s", lst.name, *addr)
                        self.plane.stats_store.counter(
                            "listener_manager.listener_create_failure"
                        ).inc()
            gone = [addr for addr in self._servers if addr not in wanted]
            closing = [self._servers.pop(addr)[0] for addr in gone]
        await asyncio.gather(*(s.close(DRAIN_GRACE) for s in closing))


async def run_sidecar(config_path: str, token: str) -> None:
    """Serve the sidecar config at `config_path` until SIGTERM/SIGINT, then stop gracefully.

    Run it with `serve()` (or `meshdev.common.loop.run`) to get uvloop: an event loop cannot
    be swapped from inside a coroutine that already runs on one."""
    config = load_config(config_path)
    sidecar = Sidecar(config, token=token)
    await sidecar.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    listeners = ", ".join(
        f"{lst.name}={lst.address}:{sidecar.listener_port(lst.name)}" for lst in config.listeners
    )
    # Everything imported and built so far lives as long as the process: moving it out of the
    # collector's generations keeps full collections (10-22 ms here) out of request latency.
    gc.collect()
    gc.freeze()
    print(
        f"meshdev sidecar {config.node} ready: config v{config.version}; {listeners}; "
        f"admin={config.admin.address}:{sidecar.admin_port}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
        await sidecar.stop()


def serve(config_path: str, token: str) -> None:
    """Blocking entry point: uvloop when available (meshdev.common.loop.run)."""
    from meshdev.common.loop import run

    try:
        run(run_sidecar(config_path, token))
    except KeyboardInterrupt:
        sys.exit(130)
