"""The access log: one Envoy-like line per request, written off the event loop.

    [2024-05-01T12:00:00.123Z] "GET /items HTTP/1.1" 200 - 512 3 1 items 10.0.0.7:8080 4f1c... -

Fields: start time (UTC), request line, status, %RESPONSE_FLAGS% (Envoy's letters joined by
",", `-` for none), response body bytes, duration in ms, upstream attempts, route name,
upstream host, x-request-id, %RESPONSE_CODE_DETAILS% (set by the answers that have Envoy's
details to give, so far an authorization denial:
`rbac_access_denied_matched_policy[<policy>]`); `-` for any missing value. The details come
last, not after the flags as in Istio's format, so the fields before them keep their places.
An upgraded (WebSocket) stream is logged once it ends, as Envoy does: status 101, the bytes
sent to the client over the whole stream, its whole duration, and `SI` when the idle timeout
closed it.

The request path only appends a tuple to a list. A timer formats the batch every
FLUSH_INTERVAL and hands the text to one writer thread, so a slow terminal or disk never
stalls the loop; if the writer falls behind by more than MAX_BACKLOG lines, new lines are
dropped and counted in `access_log.dropped` rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TextIO

from meshdev.sidecar.stats.store import Counter, Store
from meshdev.sidecar.tracing.span import RequestTrace

FLUSH_INTERVAL = 0.1
MAX_BACKLOG = 50_000

# Envoy's %RESPONSE_FLAGS% letters used by the sidecar.
NO_HEALTHY_UPSTREAM = "UH"
UPSTREAM_CONNECTION_FAILURE = "UF"
UPSTREAM_OVERFLOW = "UO"
UPSTREAM_RETRY_LIMIT_EXCEEDED = "URX"
UPSTREAM_REQUEST_TIMEOUT = "UT"
UPSTREAM_CONNECTION_TERMINATION = "UC"
NO_ROUTE_FOUND = "NR"
FAULT_INJECTED = "FI"
DELAY_INJECTED = "DI"
RATE_LIMITED = "RL"
DOWNSTREAM_CONNECTION_TERMINATION = "DC"
STREAM_IDLE_TIMEOUT = "SI"
# The RBAC filter denied the request (Envoy writes this flag as a word, not two letters).
RBAC_ACCESS_DENIED = "RBAC"


class Record:
    """What the access log keeps of one request; the proxy fills it in as the request goes."""

    __slots__ = (
        "attempts",
        "bytes_sent",
        "details",
        "duration_ms",
        "flags",
        "method",
        "path",
        "request_id",
        "route",
        "start",
        "status",
        "trace",
        "upstream",
    )

    def __init__(self, start: float, method: str, path: str) -> None:
        self.start = start
        self.method = method
        self.path = path
        self.status = 0
        self.flags = ""
        self.bytes_sent = 0
        self.duration_ms = 0
        self.attempts = 0
        self.route = ""
        self.upstream = ""
        self.request_id = ""
        self.details = ""
        # The request's spans when it is sampled (sidecar/tracing/); None otherwise, so the
        # forwarding path tests one attribute and does nothing else for tracing.
        self.trace: RequestTrace | None = None

    def add_flag(self, flag: str) -> None:
        self.flags = f"{self.flags},{flag}" if self.flags else flag


class AccessLog:
    """Where lines go: "stdout", "off", or a file path (appended to)."""

    def __init__(self, target: str, store: Store) -> None:
        self.target = target
        self.enabled = target != "off"
        self._entries: list[Record] = []
        self._dropped: Counter = store.counter("access_log.dropped")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshdev-accesslog")
        self._pending: Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._file: TextIO | None = None
        self._file_path = ""
        self._sec = -1
        self._sec_text = ""
        # Each written by one thread only (loop / writer), so no lock is needed.
        self._submitted = 0
        self._written = 0

    def log(self, record: Record) -> None:
        if not self.enabled:
            return
        if self._submitted - self._written + len(self._entries) >= MAX_BACKLOG:
            self._dropped.value += 1
            return
        self._entries.append(record)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def set_target(self, target: str) -> None:
        """Switch where lines go; lines logged so far still go to the old target."""
        if target == self.target:
            return
        self.flush()
        self.target = target
        self.enabled = target != "off"

    def flush(self) -> None:
        self._timer = None
        if not self._entries:
            return
        entries = self._entries
        self._entries = []
        text = "".join([self._format(e) for e in entries])
        self._submitted += len(entries)
        self._pending = self._writer.submit(self._write, text, len(entries), self.target)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        pending = self._pending
        if pending is not None:
            await asyncio.wrap_future(pending)
        await asyncio.get_running_loop().run_in_executor(self._writer, self._close_file)
        self._writer.shutdown(wait=True)

    def _format(self, r: Record) -> str:
        start = r.start
        sec = int(start)
        if sec != self._sec:
            self._sec = sec
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        ms = int((start - sec) * 1000)
        return (
            f'[{self._sec_text}.{ms:03d}Z] "{r.method} {r.path} HTTP/1.1" {r.status} '
            f"{r.flags or '-'} {r.bytes_sent} {r.duration_ms} {r.attempts} {r.route or '-'} "
            f"{r.upstream or '-'} {r.request_id or '-'} {r.details or '-'}\n"
        )

    # The methods below run on the writer thread only.

    def _write(self, text: str, lines: int, target: str) -> None:
        try:
            out = self._out(target)
            if out is not None:
                out.write(text)
                out.flush()
        finally:
            self._written += lines

    def _out(self, target: str) -> TextIO | None:
        if target == "off":
            return None
        if target == "stdout":
            return sys.stdout
        if self._file is None or self._file_path != target:
            self._close_file()
            self._file = open(target, "a", encoding="utf-8")  # noqa: SIM115
            self._file_path = target
        return self._file

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
