"""A container's output as lines: the last few, or all of it from the start, following.

Following runs in a thread of its own per stream rather than in a shared pool: a dashboard
follows every container for as long as the mesh runs, and that must not starve the short calls
everything else makes. The SDK lifts its read timeout for log streams, so a quiet container's
stream stays open; it ends when the container stops or the reader closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from meshdev.runtime.base import RuntimeFailure
from meshdev.runtime.docker.engine import call, refused, stopped


class _Pump:
    """Reads one container's log stream in a thread and hands lines to the event loop."""

    def __init__(
        self,
        client: docker.DockerClient,
        name: str,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[str | BaseException | None],
    ) -> None:
        self._client = client
        self._name = name
        self._loop = loop
        self._queue = queue
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._stream: Any = None

    def cancel(self) -> None:
        with self._lock:
            self._closed.set()
            stream, self._stream = self._stream, None
        if stream is not None:
            # Unblocks the thread's read; the socket may already be gone with the container.
            with contextlib.suppress(OSError, DockerException):
                stream.close()

    def _emit(self, item: str | BaseException | None) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            # The loop closed under us: nobody is listening any more.
            self._closed.set()

    def run(self) -> None:
        try:
            self._pump()
        except NotFound:
            if not self._closed.is_set():
                self._emit(RuntimeFailure(f"container {self._name} no longer exists"))
        except (DockerException, requests.exceptions.RequestException, OSError) as exc:
            if not self._closed.is_set():
                self._emit(stopped(exc))
        finally:
            self._emit(None)

    def _pump(self) -> None:
        stream = self._client.api.logs(self._name, stream=True, follow=True)
        with self._lock:
            if self._closed.is_set():
                stream.close()
                return
            self._stream = stream
        pending = b""
        for chunk in stream:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self._emit(raw.decode(errors="replace").rstrip("\r"))
        if pending and not self._closed.is_set():
            self._emit(pending.decode(errors="replace").rstrip("\r"))


async def follow(client: docker.DockerClient, name: str) -> AsyncGenerator[str, None]:
    """Every line of `name`'s output from the start, then new ones until it stops."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
    pump = _Pump(client, name, loop, queue)
    thread = threading.Thread(target=pump.run, name=f"meshdev-logs-{name}", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        pump.cancel()


async def tail(client: docker.DockerClient, name: str, n: int) -> list[str]:
    """The last `n` lines of `name`'s output (stdout and stderr interleaved)."""
    raw = await call(client.api.logs, name, stdout=True, stderr=True, tail=n)
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return [line.rstrip("\r") for line in text.splitlines()][-n:]


async def last_lines(client: docker.DockerClient, name: str, pod: str, n: int) -> list[str]:
    """`tail` of pod `pod`'s container `name`; none when the container is gone."""
    try:
        return await tail(client, name, n)
    except NotFound:
        return []
    except APIError as exc:
        raise refused(f"read the log of pod {pod}", exc) from exc
