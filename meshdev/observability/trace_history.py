"""The session's trace history: every sidecar's spans, read once a second into one bounded
store (telemetry/aggregation/trace_store.py) for as long as `meshdev up` runs, and served to
`meshdev traces` and the dashboards of other processes (`watch --mesh`, `up --web`'s tabs).

Why the session and not the sidecars: a sidecar's ring is on every traced request's path, and
each span it keeps costs that request (a ring of 2048 was a fifth of tracing's cost, of 256 a
fraction of it: benchmarks/README.md K). So a sidecar keeps 256 spans, a poll's worth, and the
history (500 traces, across pod restarts and ring turnovers) lives here, which reads every
ring anyway. A mesh whose `up` is gone (`--keep`) still has the sidecars' rings.

Served on 127.0.0.1, on a port of its own named in the session's state file (`traces_url`):

    GET /spans?since=V    Authorization: Bearer <the session's token, from the 0600 state file>
        -> 200 {"node": "meshdev up", "first": V, "next": W, "dropped": N, "spans": [...]}

the shape of a sidecar's GET /spans (common/trace_wire.py), so one `SpanReader` reads both
(`relay=True`). `since` and `next` are versions of the store, not span numbers: the answer
holds every span of each trace that got a span after version V (whole traces; the reader's
own store drops what it had), each naming its sidecar in its node_id tag, oldest change
first, about PAGE_SPANS at most: `next` says how far it got. V=0 is everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Sequence
from typing import Final

from aiohttp import web
from pydantic_core import to_json

from meshdev.common.trace_wire import RELAY_NODE, SPANS_PATH
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.aggregation.traces import Span, span_wire
from meshdev.telemetry.io.source import ProxyTarget
from meshdev.telemetry.io.spans import SpanReader

HOST: Final = "127.0.0.1"
# Spans in one answer at most (whole traces: one may pass it), ~3 MB of JSON.
PAGE_SPANS: Final = 5000
# After the reader failed in a way it does not handle itself (a bug): a pause, not a spin.
RETRY_AFTER: Final = 5.0


class TraceHistory:
    def __init__(
        self,
        targets: Callable[[], Sequence[ProxyTarget]],
        token: str,
        say: Callable[[str], None] = lambda line: None,
        *,
        reader: SpanReader | None = None,
    ) -> None:
        """`targets`: the session's sidecars of the moment; `token`: what a reader must
        present; `say`: where a failure of the reader is told."""
        self.reader = reader if reader is not None else SpanReader(TraceStore())
        self._targets = targets
        self._token = token
        self._say = say
        self._listeners: list[Callable[[], None]] = []
        self._poller: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    @property
    def store(self) -> TraceStore:
        return self.reader.store

    async def start(self) -> str:
        """Read the sidecars from now on, and serve what was read; returns where. Once: a
        start the dashboard retries after a failure finds it running."""
        if self.url is not None:
            return self.url
        app = web.Application()
        app.router.add_get(SPANS_PATH, self._spans)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, 0)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://{HOST}:{port}"
        self._poller = asyncio.create_task(self._poll(), name="trace history")
        return self.url

    async def stop(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.url = None

    async def _poll(self) -> None:
        while True:
            try:
                await self.reader.run(self._targets, self._changed)
            except Exception as exc:
                self._say(
                    f"traces: reading the sidecars' spans failed ({exc!r}); "
                    f"trying again in {RETRY_AFTER:.0f} s"
                )
                await asyncio.sleep(RETRY_AFTER)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    # -- the dashboard's feed, in the same process (tui/logic/ports.py TraceFeed) -----------

    def outcomes(self) -> dict[str, int]:
        return self.reader.outcomes()

    async def run(
        self, targets: Callable[[], Sequence[ProxyTarget]], on_new: Callable[[], None]
    ) -> None:
        """`on_new` after every poll that kept a span, until cancelled. The history reads the
        session's sidecars already: a dashboard's `targets` (the same pods) are not read
        twice."""
        self._listeners.append(on_new)
        try:
            await asyncio.Event().wait()
        finally:
            self._listeners.remove(on_new)

    # -- the server --------------------------------------------------------------------------

    async def _spans(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").encode()
        if not secrets.compare_digest(given, f"Bearer {self._token}".encode()):
            return web.json_response({"error": "the session's token is needed"}, status=401)
        raw = request.query.get("since", "0")
        if not (raw.isascii() and raw.isdigit()):
            return web.json_response({"error": f"since={raw!r}: give a number"}, status=400)
        since, version = int(raw), self.store.version
        upto, spans = version, list[Span]()
        if since < version:
            # Paged (the reader asks on from `next`): one answer of the whole store is tens of
            # MB, made on the event loop that also serves the dashboard and the control plane.
            upto, spans = self.store.spans_since(since, limit=PAGE_SPANS)
        doc = {
            "node": RELAY_NODE,
            "first": min(since, version),
            "next": upto,
            "dropped": sum(c.dropped for c in self.reader.cursors.values()),
            "spans": [span_wire(s) for s in spans],
        }
        return web.Response(body=to_json(doc), content_type="application/json")
