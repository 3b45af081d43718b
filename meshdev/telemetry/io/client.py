"""One sidecar's admin API, watched: its /stats/stream, or Envoy's /stats polled instead.

The client connects to `/stats/stream?interval=...&v=2` and keeps the newest interval it got.
v2 documents carry only what changed (sidecar/stats/stream.py); a sidecar that predates them
ignores `v` and sends whole v1 documents, which are read as before. A change document that
cannot follow the last one read (one went missing, or was unreadable) ends the connection: the
next one starts with a whole document, from which the reader resumes its totals.
A server without that endpoint (404: a real Envoy) is polled at the same interval through
`/stats?format=json` (with `histogram_buckets=detailed` where it is understood, so latency
still merges across proxies), `/clusters?format=json` and `/server_info`. Any failure drops
the connection and retries after an exponential, jittered backoff; the next attempt tries the
stream again first, since a restarted server may be a newer one.

`/config_dump` is read once per config (the stream names its hash) for the route table.
`/certs` (Envoy's shape) is read every `CERTS_EVERY` seconds, and at once after a config
change, from sidecars whose config names an identity: a certificate lives for hours and is
renewed at half its life, so a per-interval read would only cost.

The client never queues: an interval arriving before the previous one was taken is folded into
it (`combine`), so however slow the dashboard is, it only ever holds one interval per sidecar.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from pydantic_core import from_json

from meshdev.common.backoff import Backoff
from meshdev.common.waiting import wait_set
from meshdev.common.workload_certs import CERTS_PATH
from meshdev.telemetry.aggregation.certs import CertInfo, from_envoy_certs
from meshdev.telemetry.aggregation.mesh import SidecarInput
from meshdev.telemetry.aggregation.sidecar_interval import SidecarInterval, SnapshotError, combine
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.telemetry.aggregation.topology import Topology, from_config_dump
from meshdev.telemetry.io.poll_reader import PollReader
from meshdev.telemetry.io.sse import SSEParser
from meshdev.telemetry.io.stream_reader import StreamGap, StreamReader

log = logging.getLogger(__name__)

STREAM = "stream"
POLL = "poll"
# A sidecar that sent nothing for this many intervals is stale (its numbers are old).
STALE_INTERVALS = 3.0
CONNECT_TIMEOUT = 2.0
# A stream with no bytes for this long (and at least this many intervals) is dead even if
# its socket is not: a stopped process, a lost network.
MIN_READ_TIMEOUT = 2.0
READ_TIMEOUT_INTERVALS = 8.0
REQUEST_TIMEOUT = 5.0
# The /stats/stream documents asked for: changes only (sidecar/stats/stream.py).
STREAM_VERSION = "2"
# Reconnect delays (full jitter, see common/backoff.py): quick enough to catch a sidecar that
# restarts, sparse enough that a dashboard watching a stopped mesh stays idle.
RECONNECT_BASE = 0.1
RECONNECT_CAP = 5.0
# Seconds between two reads of a sidecar's /certs: soon enough to see a renewal (hours apart
# by default, 5 s apart at the shortest TTL) and the countdown is computed per view anyway.
CERTS_EVERY = 10.0


class _NoStream(Exception):
    """The server has no /stats/stream: poll instead."""


class _BadStatus(Exception):
    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"{path} answered HTTP {status}")


def describe(exc: BaseException) -> str:
    """A short reason for the sidecars panel."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "cannot connect: connection refused"
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "connection closed by the sidecar"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, SnapshotError):
        return f"bad snapshot: {exc}"
    if isinstance(exc, json.JSONDecodeError):
        return f"bad JSON: {exc}"
    return str(exc) or type(exc).__name__


def interval_param(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class SidecarClient:
    """Watches one admin URL; `run` until cancelled, `take` the newest interval any time."""

    def __init__(
        self,
        node: str,
        admin_url: str,
        session: aiohttp.ClientSession,
        *,
        interval: float,
        on_change: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.admin_url = admin_url.rstrip("/")
        self._session = session
        self._interval = interval
        self._on_change = on_change
        self._backoff = backoff if backoff is not None else Backoff(RECONNECT_BASE, RECONNECT_CAP)
        self._clock = clock
        self._wall_clock = wall_clock

        self.connected = False
        self.mode = STREAM
        self.error = ""
        self.last_received: float | None = None
        self.topology: Topology | None = None
        self.cert: CertInfo | None = None
        self.cert_reads = 0  # GET /certs asked, for tests and diagnostics
        self.snapshots = 0  # received, for tests and diagnostics
        self.connections = 0

        self._current: SidecarInterval | None = None
        self._taken = True
        self._stream_reader = StreamReader()
        self._poll_reader = PollReader()
        self._prefer_stream = True
        self._detailed_buckets = True
        self._clusters_json = True
        self._topology_for: tuple[str | None] | None = None
        self._certs_at: float | None = None  # monotonic time of the last read
        self._restart = asyncio.Event()
        self._response: aiohttp.ClientResponse | None = None

    # -- what the source reads ------------------------------------------------------------

    @property
    def interval(self) -> float:
        """Seconds between the intervals this client asks for (see `set_interval`)."""
        return self._interval

    def set_interval(self, seconds: float) -> None:
        """Ask for another cadence: the stream reconnects with it at once."""
        if seconds == self._interval:
            return
        self._interval = seconds
        self._restart.set()
        if self._response is not None:
            self._response.close()

    @property
    def stale_after(self) -> float:
        """Seconds without data after which this sidecar's numbers are shown as stale."""
        return STALE_INTERVALS * self._interval

    def take(self) -> SidecarInterval | None:
        """The newest interval (the same one again if nothing arrived since the last take)."""
        self._taken = True
        return self._current

    def state(self, now: float) -> SidecarInput:
        """Take the newest interval, with how this sidecar is doing at `now` (monotonic)."""
        snap = self.take()
        age = None if self.last_received is None else max(0.0, now - self.last_received)
        return SidecarInput(
            node=self.node,
            admin_url=self.admin_url,
            latest=snap,
            topology=self.topology,
            connected=self.connected,
            stale=age is not None and age > self.stale_after,
            mode=self.mode,
            error=self.error,
            age_s=age,
            cert=self.cert,
        )

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled: the /stats/stream, or /stats polled when the peer has no
        stream (a real Envoy). Never returns and never raises for anything the peer does: a
        lost or failed connection is recorded (`connected`, `error`) and retried after a
        full-jitter backoff; cancellation closes the connection."""
        while True:
            self._restart.clear()
            try:
                if self._prefer_stream:
                    await self._stream()
                else:
                    await self._poll()
                error = "the sidecar ended the stream"
            except _NoStream:
                self._prefer_stream = False
                continue
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, _BadStatus) as exc:
                error = describe(exc)
            except Exception as exc:
                # A bug here must not end the watch silently: say so, log it, and retry.
                log.exception("telemetry client for %s failed", self.node)
                error = f"internal error: {exc!r}"
            finally:
                self._response = None
            if self._restart.is_set():
                continue  # a new interval was asked for: reconnect now, that is no failure
            self._lost(error)
            self._prefer_stream = True
            await wait_set(self._restart, self._backoff.next_delay())

    def _lost(self, error: str) -> None:
        changed = self.connected or error != self.error
        self.connected = False
        self.error = error
        if changed:
            self._on_change()

    def _store(self, snap: SidecarInterval, mode: str) -> None:
        if not self._taken and self._current is not None:
            snap = combine(self._current, snap)
        self._current = snap
        self._taken = False
        self.last_received = snap.received
        self.snapshots += 1
        if not self.connected:
            # Connected means data: a view never shows a connection without its numbers.
            self.connected = True
            self.connections += 1
        self.error = ""
        self.mode = mode
        self._backoff.reset()
        self._on_change()

    # -- /stats/stream ----------------------------------------------------------------------

    async def _stream(self) -> None:
        read_timeout = max(MIN_READ_TIMEOUT, READ_TIMEOUT_INTERVALS * self._interval)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=read_timeout
        )
        async with self._session.get(
            self.admin_url + "/stats/stream",
            params={
                "interval": interval_param(self._interval),
                "filter": STREAM_FILTER,
                "v": STREAM_VERSION,
            },
            timeout=timeout,
        ) as resp:
            if resp.status == 404:
                raise _NoStream
            if resp.status != 200:
                raise _BadStatus("/stats/stream", resp.status)
            self._response = resp
            self._stream_reader.reset()
            parser = SSEParser()
            while chunk := await resp.content.readany():
                for event in parser.feed(chunk):
                    if event.event == "message":
                        await self._stream_event(event.data)

    async def _stream_event(self, data: str) -> None:
        try:
            # pydantic-core's parser, not json.loads: at 41 sidecars x 4 documents a second
            # decoding was a sixth of the dashboard's CPU, and it takes half the time (the
            # same values; NaN and Infinity read alike).
            doc = from_json(data)
        except ValueError as exc:
            self._bad_document(f"bad JSON: {exc}")
            return
        try:
            snap = self._stream_reader.parse(doc, self._clock())
        except StreamGap:
            raise  # only a new connection's whole document can set it right
        except (ValueError, SnapshotError) as exc:
            # One bad document is reported, not fatal: the next may be fine (a whole one is;
            # a change document cannot follow it, and ends the connection). A sidecar that
            # only sends bad ones goes stale, which is what the dashboard should say.
            self._bad_document(describe(exc))
            return
        await self._refresh_topology(snap.config_hash)
        await self._refresh_certs()
        self._store(snap, STREAM)

    def _bad_document(self, error: str) -> None:
        self._stream_reader.missed()
        self.error = error
        self._on_change()

    # -- polling Envoy's /stats -------------------------------------------------------------

    async def _poll(self) -> None:
        self._poll_reader.reset()
        while True:
            started = self._clock()
            stats, clusters, info = await asyncio.gather(
                self._poll_stats(), self._poll_clusters(), self._get_json("/server_info")
            )
            snap = self._poll_reader.parse(
                stats, self._clock(), clusters=clusters, server_info=info
            )
            await self._refresh_topology(snap.config_hash)
            await self._refresh_certs()
            self._store(snap, POLL)
            delay = self._interval - (self._clock() - started)
            await wait_set(self._restart, delay)
            if self._restart.is_set():
                return

    async def _poll_stats(self) -> object:
        while True:
            params = {"format": "json"}
            if self._detailed_buckets:
                params["histogram_buckets"] = "detailed"
            status, doc = await self._request("/stats", params)
            if status == 400 and self._detailed_buckets:
                # An Envoy older than detailed buckets: its summaries will have to do.
                self._detailed_buckets = False
                continue
            if status != 200:
                raise _BadStatus("/stats", status)
            return doc

    async def _poll_clusters(self) -> object:
        if not self._clusters_json:
            return None
        status, doc = await self._request("/clusters", {"format": "json"})
        if status in (400, 404):
            self._clusters_json = False
            return None
        if status != 200:
            raise _BadStatus("/clusters", status)
        return doc

    async def _get_json(self, path: str) -> object:
        status, doc = await self._request(path, {})
        return doc if status == 200 else None

    async def _request(self, path: str, params: dict[str, str]) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(
            total=max(REQUEST_TIMEOUT, 4 * self._interval), sock_connect=CONNECT_TIMEOUT
        )
        async with self._session.get(self.admin_url + path, params=params, timeout=timeout) as resp:
            body = await resp.read()
            if resp.status != 200:
                return resp.status, None
            return resp.status, json.loads(body)

    # -- /config_dump ---------------------------------------------------------------------

    async def _refresh_topology(self, config_hash: str | None) -> None:
        if self._topology_for == (config_hash,):
            return
        self._topology_for = (config_hash,)
        try:
            status, doc = await self._request("/config_dump", {})
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # Without a route table flags stay per cluster; the next config change retries.
            log.info("no route table from %s: %s", self.node, describe(exc))
            return
        if status == 200:
            topology = from_config_dump(doc)
            if topology is not None:
                self.topology = topology
                # A new config may bring (or drop) an identity: its certificate is news now.
                self._certs_at = None

    # -- /certs ---------------------------------------------------------------------------

    async def _refresh_certs(self) -> None:
        topology = self.topology
        identity = topology.spiffe_id if topology is not None else None
        if identity is None:
            # No identity, no certificate to ask for (a plaintext mesh; Envoy's config is
            # not read for one).
            self.cert = None
            return
        now = self._clock()
        if self._certs_at is not None and now - self._certs_at < CERTS_EVERY:
            return
        self._certs_at = now
        self.cert_reads += 1
        try:
            status, doc = await self._request(CERTS_PATH, {})
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            # The last one known stays shown; the next read is CERTS_EVERY away.
            log.info("no certificates from %s: %s", self.node, describe(exc))
            return
        self.cert = from_envoy_certs(doc, identity, self._wall_clock()) if status == 200 else None
