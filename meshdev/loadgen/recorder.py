"""Counting what happened to each request: latencies, statuses, response flags, errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshdev.common.histogram import Histogram, HistogramSnapshot


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


@dataclass(slots=True)
class Tally:
    """Outcomes of one slice of the traffic (all of it, or one path of the mix)."""

    latency: Histogram
    status: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    responses: int = 0

    def frozen(self) -> SliceResult:
        return SliceResult(
            self.latency.snapshot(), dict(self.status), dict(self.errors), self.responses
        )


@dataclass(frozen=True, slots=True)
class SliceResult:
    """A `Tally` frozen: what one slice got, as a `LoadResult` holds its total and each path."""

    latency: HistogramSnapshot
    status: dict[int, int]
    errors: dict[str, int]
    responses: int

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def requests(self) -> int:
        return self.responses + self.error_count


class Recorder:
    """Mutable counters the engine updates from its callbacks; `Recorder.*` run per request."""

    __slots__ = (
        "flags",
        "issued",
        "lag_max",
        "lag_sum",
        "last_done",
        "last_issue",
        "paths",
        "retried",
        "service",
        "total",
    )

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.total = Tally(Histogram("latency"))
        self.service = Histogram("service_time")
        # Per-path tallies only when there is a mix; one path would just repeat the total.
        self.paths = [Tally(Histogram(p)) for p in paths] if len(paths) > 1 else None
        self.flags: dict[str, int] = {}
        self.issued = 0
        self.retried = 0
        self.lag_sum = 0.0
        self.lag_max = 0.0
        self.last_issue = 0.0
        self.last_done = 0.0

    def issue(self, intended: float, now: float) -> None:
        """A request left the queue (written, or its connection started) at `now`."""
        lag = max(now - intended, 0.0)  # early (by at most half a timer tick) is on time
        self.issued += 1
        self.lag_sum += lag
        self.lag_max = max(self.lag_max, lag)
        self.last_issue = now

    def response(
        self,
        path: int,
        intended: float,
        sent: float,
        end: float,
        status: int,
        flags: set[str] | None,
    ) -> None:
        # From the intended send, or from the actual one if the request left early.
        latency_ms = (end - (intended if intended < sent else sent)) * 1000.0
        self.last_done = end
        self.service.record((end - sent) * 1000.0)
        tallies = (self.total,) if self.paths is None else (self.total, self.paths[path])
        for t in tallies:
            t.latency.record(latency_ms)
            t.status[status] = t.status.get(status, 0) + 1
            t.responses += 1
        if flags:
            for flag in flags:
                _bump(self.flags, flag)

    def error(self, path: int, kind: str, end: float) -> None:
        self.last_done = end
        _bump(self.total.errors, kind)
        if self.paths is not None:
            _bump(self.paths[path].errors, kind)
