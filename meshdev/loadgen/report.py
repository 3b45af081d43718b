"""The human forms of a result: the final table and the live progress line."""

from __future__ import annotations

import math

from meshdev.common.histogram import HistogramSnapshot
from meshdev.loadgen.result import QUANTILES, LoadResult


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 100 else f"{value:.1f}"


def _row(label: str, h: HistogramSnapshot, width: int) -> str:
    cells = "".join(f"{_num(h.quantile(q)):>9}" for _, q in QUANTILES)
    return f"  {label:<{width}}{cells}{h.count:>9}"


def _counts(counts: dict[str, int]) -> str:
    return "  ".join(f"{k} x{v}" for k, v in counts.items()) or "none"


def _outcome(r: LoadResult) -> str:
    # Said in words because `errors` below counts only requests without an answer: a run that
    # was all 404s has none, and its status line alone read like a clean run.
    o = r.outcomes
    return (
        f"{o.percent(o.ok):.1f}% ok: {o.ok} 2xx/3xx, {o.client} 4xx, {o.server} 5xx, "
        f"{o.errors} errors"
    )


def format_result(r: LoadResult) -> str:
    labels = ["all", *r.paths, "service time"]
    width = max(len(x) for x in labels) + 2
    head = "".join(f"{k:>9}" for k, _ in QUANTILES)
    lines = [
        f"{r.method} {r.url}  target {r.rate:g} req/s, cap {r.concurrency} connections",
        f"requests   {r.requests} in {r.elapsed:.2f} s: {r.responses} responses, "
        f"{r.error_count} errors; achieved {r.achieved_rps:.1f} req/s",
        f"send lag   mean {r.send_lag_mean_ms:.2f} ms, max {r.send_lag_max_ms:.2f} ms"
        + (f"; {r.retried} resent on a fresh connection" if r.retried else "")
        + (f"; {r.cancelled} cancelled" if r.cancelled else ""),
        "latency ms (from the intended send time)",
        f"  {'':<{width}}{head}{'count':>9}",
        _row("all", r.latency, width),
        *(_row(p, t.latency, width) for p, t in r.paths.items()),
        _row("service time", r.service_time, width),
        f"outcome    {_outcome(r)}",
        f"status     {_counts({str(k): v for k, v in sorted(r.status.items())})}",
        f"flags      {_counts(dict(sorted(r.flags.items())))}",
        f"errors     {_counts(dict(sorted(r.errors.items())))}",
    ]
    return "\n".join(lines)


def progress_line(previous: LoadResult, current: LoadResult) -> str:
    """One second of a running load: rate, latency and errors of that interval."""
    interval = current.latency - previous.latency
    seconds = max(current.elapsed - previous.elapsed, 1e-9)
    rate = (current.issued - previous.issued) / seconds
    errors = current.error_count - previous.error_count
    return (
        f"{current.elapsed:6.1f}s  {rate:8.1f} req/s  p50 {_num(interval.quantile(0.5))} ms"
        f"  p99 {_num(interval.quantile(0.99))} ms  errors {errors}"
        f"  in flight {current.in_flight}  queued {current.queued}"
    )
