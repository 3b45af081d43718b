"""One listing of a mesh's containers, shared by every pod that waits to be ready.

Each waiting pod checks every EXIT_CHECK_INTERVAL_S whether its containers exited. Asked per
pod, that was two inspects each: at 41 pods ~160 engine calls a second, into the same engine
that was starting the mesh's containers one after another (~0.3 s each, 81 of them). A
listing not older than what the asker can accept answers all of them with one call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import docker

from meshdev.runtime.docker.teardown import containers


class SharedListing:
    def __init__(self, client: docker.DockerClient, mesh: str) -> None:
        self.client = client
        self._mesh = mesh
        # When the last listing was asked for (monotonic), and what it found.
        self._last: tuple[float, list[dict[str, Any]]] | None = None
        self._listing: asyncio.Task[None] | None = None

    async def since(self, moment: float) -> list[dict[str, Any]]:
        """Summaries of the mesh's containers from a listing asked for at `moment` or after
        (one in flight is joined, when it was asked for late enough)."""
        while True:
            last = self._last
            if last is not None and last[0] >= moment:
                return last[1]
            if self._listing is None or self._listing.done():
                self._listing = asyncio.create_task(self._list())
            # Shielded: a cancelled waiter does not cancel the others' listing.
            await asyncio.shield(self._listing)

    async def _list(self) -> None:
        asked = time.monotonic()
        found = await containers(self.client, self._mesh)
        self._last = (asked, found)
