"""The open-loop scheduler: request i is due at a fixed time, whatever the target does.

Request i's intended send time follows the rate (t0 + i/rps at a constant rate), and its latency
is measured from that time, not from when it was written: a target (or a generator) that
stalls shows the stall in every request it delayed, instead of quietly sending fewer of them
(coordinated omission). No due request is ever skipped. Due requests take an idle keep-alive
connection, or open one while under the concurrency cap, or wait their turn in a FIFO queue;
the wait counts in their latency, and `send_lag` records how late they left.
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect_right
from collections import deque

from meshdev.loadgen.connection import Connection, Job
from meshdev.loadgen.recorder import Recorder
from meshdev.loadgen.result import LoadResult
from meshdev.loadgen.spec import LoadSpec, Plan, check_rate

clock = time.monotonic
# The scheduler never sleeps longer than this, so a new rate, a resume or a stop act at once.
NAP = 0.05
# Event loop timers fire up to a millisecond late (they tick in whole ms). Sending up to half
# a tick early centres the send times on the intended ones instead of trailing them by ~0.5 ms;
# an early request's latency is then counted from its actual send (never below service time).
EARLY = 0.0005
# uvloop rounds shorter sleeps to zero, which would spin the scheduler.
MIN_SLEEP = 0.001
# Due requests sent in one go before the loop gets a turn to read responses.
BATCH = 256


class LoadGenerator:
    """A load run that can be watched, re-rated, paused and stopped (the dashboard's button).

    `start()` inside a running event loop; `await wait()` for a run with a duration to end, or
    `await stop()`; `snapshot()` any time.
    """

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._plan = Plan.compile(spec)
        self._cap = spec.cap()
        self._timeout = spec.timeout
        self._rng = random.Random(spec.seed)
        self._rec = Recorder(self._plan.paths)
        self._conns: set[Connection] = set()
        self._idle: list[Connection] = []  # LIFO: the warmest connection goes first
        self._connecting: set[asyncio.Task[None]] = set()
        self._pending: deque[Job] = deque()
        self._rate = spec.rps
        self._t0 = 0.0
        self._end = float("inf")
        self._anchor_t = 0.0  # request _anchor_i is due at _anchor_t; later ones every 1/rate
        self._anchor_i = 0
        self._next_i = 0
        self._last_due = 0.0
        self._paused = False
        self._cancelled = 0
        self._scheduling = False
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._done: asyncio.Event | None = None

    # -- control

    def start(self) -> None:
        if self._started:
            raise RuntimeError("a LoadGenerator runs once")
        self._started = self._scheduling = True
        self._done = asyncio.Event()
        self._t0 = self._anchor_t = self._last_due = clock()
        if self.spec.duration is not None:
            self._end = self._t0 + self.spec.duration
        self._tasks = [
            asyncio.create_task(self._schedule(), name="loadgen-schedule"),
            asyncio.create_task(self._watchdog(), name="loadgen-watchdog"),
        ]

    async def wait(self) -> LoadResult:
        """Until every due request has finished (never, without a duration, before stop())."""
        if self._done is None:
            raise RuntimeError("start() the generator first")
        await self._done.wait()
        self._shutdown()
        return self.snapshot()

    async def stop(self) -> LoadResult:
        """Send nothing more (due requests still queued are cancelled); let in-flight ones end."""
        if self._done is None:
            raise RuntimeError("start() the generator first")
        self._scheduling = False
        self._cancelled += len(self._pending)
        self._pending.clear()
        self._tasks[0].cancel()
        self._check_done()
        return await self.wait()

    def set_rate(self, rps: float) -> None:
        check_rate(rps)
        now = clock()
        due = self._due(self._next_i)
        if due > now:
            # On schedule: the next request keeps its spacing from the last, at the new rate.
            due = max(now, self._last_due + 1.0 / rps) if self._next_i else max(now, due)
        # Behind schedule: the backlog stays due; only later requests follow the new rate.
        self._anchor_t, self._anchor_i, self._rate = due, self._next_i, rps

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            # Paused time owes nothing: the schedule starts again from now.
            self._anchor_t, self._anchor_i = max(clock(), self._due(self._next_i)), self._next_i

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def paused(self) -> bool:
        return self._paused

    def snapshot(self) -> LoadResult:
        rec = self._rec
        running = self._done is not None and not self._done.is_set()
        now = clock()
        if not self._started:
            elapsed = 0.0
        elif running:
            elapsed = now - self._t0
        else:
            elapsed = max(rec.last_done, rec.last_issue, self._t0) - self._t0
        window = rec.last_issue - self._t0 + 1.0 / self._rate if rec.issued else 0.0
        paths = {}
        if rec.paths is not None:
            paths = {p: t.frozen() for p, t in zip(self._plan.paths, rec.paths, strict=True)}
        return LoadResult(
            url=self.spec.url,
            method=self.spec.method,
            rate=self._rate,
            concurrency=self._cap,
            running=running,
            elapsed=elapsed,
            issued=rec.issued,
            in_flight=len(self._conns) - len(self._idle) + len(self._connecting),
            queued=len(self._pending),
            cancelled=self._cancelled,
            retried=rec.retried,
            achieved_rps=rec.issued / window if window > 0 else 0.0,
            send_lag_mean_ms=rec.lag_sum / rec.issued * 1000.0 if rec.issued else 0.0,
            send_lag_max_ms=rec.lag_max * 1000.0,
            total=rec.total.frozen(),
            service_time=rec.service.snapshot(),
            flags=dict(rec.flags),
            paths=paths,
        )

    # -- scheduling

    def _due(self, i: int) -> float:
        return self._anchor_t + (i - self._anchor_i) / self._rate

    def _pick(self) -> int:
        cumulative = self._plan.cumulative
        if len(cumulative) == 1:
            return 0
        return min(bisect_right(cumulative, self._rng.random()), len(cumulative) - 1)

    async def _schedule(self) -> None:
        try:
            while True:
                if self._paused:
                    await asyncio.sleep(NAP)
                    continue
                now = clock()
                due = self._due(self._next_i)
                if due >= self._end:
                    break
                if due > now + EARLY:
                    await asyncio.sleep(min(max(due - now - EARLY, MIN_SLEEP), NAP))
                    continue
                # Everything due by now (or within EARLY) goes now: the loop's timers tick in
                # whole milliseconds, so at high rates several requests fall due per wake-up.
                now += EARLY
                sent = 0
                while due <= now and due < self._end and sent < BATCH:
                    self._dispatch((due, self._pick()))
                    self._last_due = due
                    self._next_i += 1
                    sent += 1
                    due = self._due(self._next_i)
                if sent == BATCH:
                    await asyncio.sleep(0)
        finally:
            self._scheduling = False
            self._check_done()

    def _dispatch(self, job: Job) -> None:
        if self._idle:
            self._send(self._idle.pop(), job)
        elif len(self._conns) + len(self._connecting) < self._cap:
            self._open(job)
        else:
            self._pending.append(job)

    def _pump(self) -> None:
        """Give queued requests whatever room just became free."""
        pending = self._pending
        while pending and (self._idle or len(self._conns) + len(self._connecting) < self._cap):
            job = pending.popleft()
            if self._idle:
                self._send(self._idle.pop(), job)
            else:
                self._open(job)

    def _send(self, conn: Connection, job: Job) -> None:
        now = clock()
        self._rec.issue(job[0], now)
        conn.send(job, self._plan.requests[job[1]], now, self._timeout)

    def _open(self, job: Job, count_issue: bool = True) -> None:
        if count_issue:
            self._rec.issue(job[0], clock())
        task = asyncio.create_task(self._connect(job))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        target = self._plan.target
        head_only = self.spec.method == "HEAD"
        kind = ""
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self, head_only), target.host, target.port
                )
        except TimeoutError:
            kind = "connect_timeout"
        except ConnectionRefusedError:
            kind = "connect_refused"
        except (OSError, ValueError):  # ValueError: a host name IDNA cannot encode
            kind = "connect_error"
        # Leave the connecting set now, not when the done callback runs: room is free already.
        self._connecting.discard(asyncio.current_task())
        if kind:
            self._rec.error(job[1], kind, clock())
            self._pump()
            self._check_done()
            return
        self._conns.add(conn)
        conn.send(job, self._plan.requests[job[1]], clock(), self._timeout)

    async def _watchdog(self) -> None:
        tick = min(0.1, self._timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = clock()
            for conn in [c for c in self._conns if c.deadline < now]:
                conn.expire()

    # -- outcomes (Sink)

    def on_response(
        self, conn: Connection, job: Job, status: int, flags: set[str] | None, keep_alive: bool
    ) -> None:
        self._rec.response(job[1], job[0], conn.sent_at, clock(), status, flags)
        if keep_alive:
            if self._pending:
                self._send(conn, self._pending.popleft())
                return
            self._idle.append(conn)
        else:
            self._conns.discard(conn)
            conn.close()
            self._pump()
        self._check_done()

    def on_failure(self, conn: Connection, job: Job, kind: str, stale: bool) -> None:
        self._conns.discard(conn)
        if stale and self._plan.retry_stale:
            # On a fresh connection, which cannot be stale, so a request is resent at most once.
            self._rec.retried += 1
            self._open(job, count_issue=False)
            return
        self._rec.error(job[1], kind, clock())
        self._pump()
        self._check_done()

    def on_closed(self, conn: Connection) -> None:
        if conn in self._conns:
            self._conns.discard(conn)
            if conn in self._idle:
                self._idle.remove(conn)
            self._pump()

    def _check_done(self) -> None:
        if (
            self._done is not None
            and not self._scheduling
            and not self._pending
            and not self._connecting
            and len(self._idle) == len(self._conns)
        ):
            self._done.set()

    def _shutdown(self) -> None:
        for task in [*self._tasks, *self._connecting]:
            task.cancel()
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        self._idle.clear()


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run `spec` (which needs a duration) to the end and return its result."""
    if spec.duration is None:
        raise ValueError("run_load needs a duration; use LoadGenerator to run until stopped")
    gen = LoadGenerator(spec)
    gen.start()
    try:
        return await gen.wait()
    finally:
        gen._shutdown()
