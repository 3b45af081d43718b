"""A load run's outcome (final, or a live snapshot) and its stable JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from meshdev.common.histogram import HistogramSnapshot
from meshdev.loadgen.outcomes import Outcomes, outcomes
from meshdev.loadgen.recorder import SliceResult

JSON_VERSION = 1
# (JSON key, quantile) of every latency summary.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
)


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def latency_summary(h: HistogramSnapshot) -> dict[str, float | None]:
    out = {key: _ms(h.quantile(q)) for key, q in QUANTILES}
    out["mean"] = _ms(h.mean())
    return out


def _tally_json(t: SliceResult) -> dict[str, Any]:
    return {
        "requests": t.requests,
        "responses": t.responses,
        "latency_ms": latency_summary(t.latency),
        "status": {str(k): v for k, v in sorted(t.status.items())},
        "errors": dict(sorted(t.errors.items())),
    }


@dataclass(frozen=True, slots=True)
class LoadResult:
    url: str
    method: str
    rate: float  # the target rate when the snapshot was taken
    concurrency: int  # the cap
    running: bool
    elapsed: float  # seconds since the first intended send (to the last completion, when done)
    issued: int  # requests that left the queue (sent, or their connection started)
    in_flight: int
    queued: int  # due, waiting for a free connection under the cap
    cancelled: int  # due but never sent, because the generator was stopped
    retried: int  # resent once: their reused keep-alive connection was closed by the server
    achieved_rps: float
    send_lag_mean_ms: float
    send_lag_max_ms: float
    total: SliceResult
    service_time: HistogramSnapshot
    flags: dict[str, int]
    paths: dict[str, SliceResult]

    @property
    def requests(self) -> int:
        """Finished requests: with a response (any status) or an error."""
        return self.total.requests

    @property
    def responses(self) -> int:
        return self.total.responses

    @property
    def latency(self) -> HistogramSnapshot:
        return self.total.latency

    @property
    def status(self) -> dict[int, int]:
        return self.total.status

    @property
    def errors(self) -> dict[str, int]:
        return self.total.errors

    @property
    def error_count(self) -> int:
        return self.total.error_count

    @property
    def outcomes(self) -> Outcomes:
        """Finished requests as ok (2xx/3xx), 4xx, 5xx and errors."""
        return outcomes(self.status, self.error_count)

    def to_json(self) -> dict[str, Any]:
        """The shape documented in meshdev.loadgen's docstring."""
        return {
            "version": JSON_VERSION,
            "url": self.url,
            "method": self.method,
            "target_rps": self.rate,
            "achieved_rps": round(self.achieved_rps, 3),
            "elapsed_s": round(self.elapsed, 4),
            "concurrency": self.concurrency,
            "running": self.running,
            "requests": self.requests,
            "responses": self.responses,
            "errors_total": self.error_count,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "cancelled": self.cancelled,
            "retried": self.retried,
            "send_lag_ms": {
                "mean": round(self.send_lag_mean_ms, 3),
                "max": round(self.send_lag_max_ms, 3),
            },
            "latency_ms": latency_summary(self.latency),
            "service_time_ms": latency_summary(self.service_time),
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "response_flags": dict(sorted(self.flags.items())),
            "errors": dict(sorted(self.errors.items())),
            "paths": {p: _tally_json(t) for p, t in self.paths.items()},
        }
