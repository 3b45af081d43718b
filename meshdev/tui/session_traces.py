"""The Traces view's feed for a watch of a mesh that a `meshdev up` in another process runs
(`watch --mesh FILE`, and each browser tab of `up --web`: tui/session_watch.py).

While that `up` serves its trace history (observability/trace_history.py, `traces_url` in its
state file), the view reads it there: every trace the session kept, also those older than the
sidecars' small rings, from one target. Without one (an `up` of an older meshdev, or a mesh
left running with `--keep` after its `up` ended) it reads the watched sidecars' rings
directly, as `watch` with admin URLs does, and so while the history does not answer (until the
state file names another). Which of the two is looked at again every `RECHECK_EVERY` seconds:
an `up` may start, stop or restart meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from meshdev.common.trace_wire import RELAY_NODE
from meshdev.runtime.paths import trace_relay
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.io.source import ProxyTarget
from meshdev.telemetry.io.spans import SpanReader

RECHECK_EVERY: Final = 5.0


class SessionTraces:
    def __init__(self, mesh_name: str, *, recheck_every: float = RECHECK_EVERY) -> None:
        self.mesh_name = mesh_name
        self.recheck_every = recheck_every
        self.store = TraceStore()
        self._direct = SpanReader(self.store)
        self._reader = self._direct

    @property
    def relayed(self) -> bool:
        """Whether the view reads the session's history now (else the sidecars)."""
        return self._reader is not self._direct

    def outcomes(self) -> Mapping[str, int]:
        return self._reader.outcomes()

    async def run(
        self, targets: Callable[[], Sequence[ProxyTarget]], on_new: Callable[[], None]
    ) -> None:
        relay: SpanReader | None = None
        # A history that did not answer: the rings until the state names another (an `up`
        # that restarted), not a round of errors every other round meanwhile.
        refused: tuple[str, str] | None = None
        while True:
            found = trace_relay(self.mesh_name)
            read = targets
            if found is None or found == refused:
                self._reader = self._direct
            else:
                url, token = found
                if relay is None or relay.headers.get("Authorization") != f"Bearer {token}":
                    # Another `up` (or the first): its history is read from its start.
                    relay = SpanReader.for_relay(self.store, token)
                for cursor in relay.cursors.values():
                    cursor.outcome = None  # this round's answer, not an earlier one's
                self._reader = relay

                def read(url: str = url) -> Sequence[ProxyTarget]:
                    return [(RELAY_NODE, url)]

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader.run(read, on_new), self.recheck_every)
            if self._reader is relay and _failed(relay):
                refused = found


def _failed(reader: SpanReader) -> bool:
    """No answer in a whole round: refused, or too slow to be of use."""
    return not reader.outcomes()["ok"]
