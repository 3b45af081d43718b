"""Reading every sidecar's recent spans: GET /spans?since=N, a cursor per sidecar.

    reader = SpanReader(store)                       # a TraceStore (aggregation/trace_store.py)
    outcomes = await reader.poll(session, targets)   # once: `meshdev traces`
    await reader.run(lambda: source.targets, on_new) # every second, until cancelled: the session

Each sidecar numbers the spans of its ring (meshdev/common/trace_wire.py); the reader asks
each for what follows the last one it got, page after page until it is told nothing newer,
so a poll of an idle mesh costs one small answer per sidecar (a busy one, one more). The
cursor survives what can happen to a ring:

- it wrapped past the cursor (the answer's `first` is above `since`): the missing spans are
  gone; they are counted in `lost` and reading goes on from `first`;
- the sidecar restarted and numbers from 0 again (its `next` is below `since`): the cursor
  goes back to 0 and its ring is read again at once; the store's deduplication absorbs any
  overlap.

A sidecar keeps few spans (256: a bigger ring costs every traced request, benchmarks/README.md
K), so one that answered many spans is asked again after `QUICK_EVERY`, not a whole second
later: its ring turns over in a second at 256 spans/s, in five quick polls at 1280.

The same reader reads a relay (`relay=True`): the session's history of every sidecar's spans
(observability/trace_history.py), one target whose spans each name their sidecar in their
node_id tag, asked with the session's token (`headers`).

A proxy without /spans (404: an older meshdev sidecar, or a real Envoy, whose spans go to a
collector) is skipped quietly, and asked again only every `RECHECK_MISSING` seconds, in case
a newer sidecar took its place. An unreachable one is retried at the next poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp
from pydantic_core import from_json

from meshdev.common.trace_wire import SPANS_PATH
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.aggregation.traces import parse_spans
from meshdev.telemetry.io.client import CONNECT_TIMEOUT, describe
from meshdev.telemetry.io.source import ProxyTarget

# Once a second: traces are read after the fact, and an idle poll is one tiny answer per pod.
POLL_EVERY = 1.0
# A sidecar that gave at least BUSY spans since the last full poll is asked again this soon.
QUICK_EVERY = 0.2
BUSY = 32
REQUEST_TIMEOUT = 5.0
RECHECK_MISSING = 30.0
# Answers read from one sidecar in one poll at most (a sidecar's ring of 256 is one page);
# a sidecar that never says it is done must not hold the poll.
MAX_PAGES = 8
# A relay's pages (at most ~5000 spans each) to read a whole history of 50,000 spans.
RELAY_MAX_PAGES = 32

Outcome = Literal["ok", "missing", "error"]


@dataclass
class NodeCursor:
    url: str = ""
    since: int = 0
    outcome: Outcome | None = None
    error: str = ""
    missing_at: float | None = None  # monotonic time of the last 404
    lost: int = 0  # spans the ring dropped before this reader got them
    dropped: int = 0  # the sidecar's own count of spans its exporters could not send
    recent: int = 0  # spans got since the last full poll began


class SpansError(Exception):
    pass


class SpanReader:
    def __init__(
        self,
        store: TraceStore,
        *,
        every: float = POLL_EVERY,
        quick_every: float = QUICK_EVERY,
        clock: Callable[[], float] = time.monotonic,
        relay: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.every = every
        self.quick_every = quick_every
        self.relay = relay
        self.headers = dict(headers or {})
        self._clock = clock
        self.cursors: dict[str, NodeCursor] = {}
        self.polls = 0
        self.bad_spans = 0  # spans that could not be placed in any trace

    @classmethod
    def for_relay(cls, store: TraceStore, token: str) -> SpanReader:
        """A reader of a session's trace history, which asks for the session's token."""
        return cls(store, relay=True, headers={"Authorization": f"Bearer {token}"})

    def outcomes(self) -> dict[str, int]:
        """How many sidecars the last poll found answering ("ok"), without /spans
        ("missing"), or failing ("error")."""
        counts = {"ok": 0, "missing": 0, "error": 0}
        for cursor in self.cursors.values():
            if cursor.outcome is not None:
                counts[cursor.outcome] += 1
        return counts

    async def poll(
        self, session: aiohttp.ClientSession, targets: Sequence[ProxyTarget]
    ) -> dict[str, NodeCursor]:
        """Ask every target once, concurrently; keep what they answered. Returns the cursor
        of each target (its `outcome` says how this poll went)."""
        self.polls += 1
        wanted = {node: url.rstrip("/") for node, url in targets}
        for gone in set(self.cursors) - set(wanted):
            del self.cursors[gone]
        for cursor in self.cursors.values():
            cursor.recent = 0
        await self._poll_some(session, wanted)
        return {node: self.cursors[node] for node in wanted}

    async def _poll_some(self, session: aiohttp.ClientSession, wanted: Mapping[str, str]) -> None:
        await asyncio.gather(*(self._poll_one(session, n, u) for n, u in wanted.items()))

    async def _poll_one(self, session: aiohttp.ClientSession, node: str, url: str) -> None:
        cursor = self.cursors.setdefault(node, NodeCursor())
        cursor.url = url
        now = self._clock()
        if cursor.missing_at is not None and now - cursor.missing_at < RECHECK_MISSING:
            return
        # A sidecar pages its answer (docs/tracing.md: at most 1000 spans): read on until it
        # has nothing newer, so the newest spans are never a poll behind.
        for _ in range(RELAY_MAX_PAGES if self.relay else MAX_PAGES):
            try:
                doc = await self._get(session, url, cursor.since)
            except _Missing:
                cursor.outcome, cursor.missing_at, cursor.error = "missing", now, ""
                return
            except (aiohttp.ClientError, TimeoutError, ValueError, SpansError) as exc:
                cursor.outcome, cursor.error = "error", describe(exc)
                return
            cursor.missing_at = None
            cursor.outcome, cursor.error = "ok", ""
            if not self._take(node, cursor, doc):
                return

    async def _get(self, session: aiohttp.ClientSession, url: str, since: int) -> object:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT)
        async with session.get(
            url + SPANS_PATH, params={"since": str(since)}, timeout=timeout, headers=self.headers
        ) as resp:
            body = await resp.read()
            if resp.status == 404:
                raise _Missing
            if resp.status != 200:
                raise SpansError(f"{SPANS_PATH} answered HTTP {resp.status}")
            try:
                # pydantic-core's parser (as the stats stream's): a full ring's page is 1000
                # spans, ~2 us each through json.loads.
                return from_json(body)
            except ValueError as exc:
                raise SpansError(f"bad JSON from {SPANS_PATH}: {exc}") from None

    def _take(self, node: str, cursor: NodeCursor, doc: object) -> bool:
        """Keep an answer's spans and move the cursor; True when more may be waiting."""
        fields = doc if isinstance(doc, dict) else {}
        first, nxt = _count(fields.get("first")), _count(fields.get("next"))
        spans = fields.get("spans")
        if first is None or nxt is None or not isinstance(spans, list):
            cursor.outcome = "error"
            cursor.error = f"bad {SPANS_PATH} answer: expected first, next and spans"
            return False
        cursor.dropped = _count(fields.get("dropped")) or 0
        if nxt < cursor.since:
            # A restarted sidecar numbers from 0 again: read its ring from the start (0, not
            # `first`, which a sidecar may give as the `since` it was asked for).
            cursor.since = 0
            return True
        if first > cursor.since:
            cursor.lost += first - cursor.since
        parsed, bad = parse_spans(spans, "" if self.relay else node)
        self.bad_spans += bad
        self.store.add(parsed)
        cursor.recent += len(spans)
        more = bool(spans) and nxt > cursor.since
        cursor.since = nxt
        return more

    async def run(
        self,
        targets: Callable[[], Sequence[ProxyTarget]],
        on_new: Callable[[], None] = lambda: None,
    ) -> None:
        """Poll the targets of the moment every `every` seconds until cancelled, the busy ones
        every `QUICK_EVERY` in between; `on_new` after a poll that kept a new span."""
        # The admin API is on loopback: no proxy from the environment must get in between.
        async with aiohttp.ClientSession(trust_env=False) as session:
            while True:
                started = self._clock()
                version = self.store.version
                current = targets()
                if current:
                    await self.poll(session, current)
                else:
                    self.cursors.clear()  # none is busy any more, whatever it was
                if self.store.version != version:
                    on_new()
                while (left := self.every - (self._clock() - started)) > 0:
                    busy = self._busy()
                    if not busy:
                        await asyncio.sleep(left)
                        break
                    await asyncio.sleep(min(left, self.quick_every))
                    version = self.store.version
                    await self._poll_some(session, busy)
                    if self.store.version != version:
                        on_new()

    def _busy(self) -> dict[str, str]:
        """The targets that gave BUSY spans or more since the last full poll began: their
        rings turn over fast (one stays busy until a full poll finds it quieter). A relay
        keeps its history itself: it is never in a hurry."""
        if self.relay:
            return {}
        return {
            node: cursor.url
            for node, cursor in self.cursors.items()
            if cursor.outcome == "ok" and cursor.recent >= BUSY
        }


class _Missing(Exception):
    """The proxy has no /spans."""


def _count(obj: object) -> int | None:
    return obj if isinstance(obj, int) and not isinstance(obj, bool) and obj >= 0 else None


async def collect(
    targets: Sequence[ProxyTarget], store: TraceStore | None = None, token: str | None = None
) -> tuple[TraceStore, dict[str, NodeCursor]]:
    """Every target's ring read once into a store: what `meshdev traces` shows. With `token`,
    the targets are relays (a session's trace history) and it is their key."""
    store = store if store is not None else TraceStore()
    reader = SpanReader(store) if token is None else SpanReader.for_relay(store, token)
    async with aiohttp.ClientSession(trust_env=False) as session:
        outcomes = await reader.poll(session, targets)
    return store, outcomes
