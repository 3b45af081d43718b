"""A route's latency quantiles from the interval histograms of the sidecars that served it.

Every sidecar uses the same log-linear buckets, so merging them bucket by bucket is exact and
the quantiles are within 1 %; a route served by one sidecar takes that sidecar's own.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from itertools import accumulate

from meshdev.common.histogram import HIGHEST, rank_of, round_significant
from meshdev.telemetry.aggregation.sidecar_interval import IntervalHistogram, SnapshotError

log = logging.getLogger(__name__)

QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

Buckets = tuple[tuple[float, float, int], ...]


def _q(value: float) -> float | None:
    return None if math.isnan(value) else round_significant(value)


def _merge(hists: list[IntervalHistogram]) -> tuple[tuple[float | None, ...], Buckets]:
    """Bucket-wise sum and its quantiles, as `HistogramSnapshot.merge` and `.quantile` give.

    Every sidecar cuts buckets at the same bounds, so adding counts per lower bound is the
    exact merge; a bucket stands for its midpoint, and the rank is the nearest-rank of
    `rank_of`. Done here on the triples because it runs for every busy route every interval.
    """
    merged: dict[float, list[float]] = {}
    for h in hists:
        for lo, w, n in h.buckets:
            entry = merged.get(lo)
            if entry is None:
                merged[lo] = [w, n]
            else:
                entry[1] += n
    buckets = tuple((lo, merged[lo][0], int(merged[lo][1])) for lo in sorted(merged))
    cumulative = list(accumulate(b[2] for b in buckets))
    count = cumulative[-1] if cumulative else 0
    if count == 0:
        return (None, None, None), buckets
    out: list[float | None] = []
    for _, q in QUANTILES:
        lo, w, _n = buckets[bisect_right(cumulative, rank_of(q, count))]
        out.append(_q(_midpoint(lo, w)))
    return tuple(out), buckets


def _midpoint(lower: float, width: float) -> float:
    # The open-ended end buckets read as in histogram.bucket_value.
    if lower <= 0.0:
        return 0.0
    if lower >= HIGHEST:
        return HIGHEST
    return lower + width / 2


def latency(hists: list[IntervalHistogram]) -> tuple[tuple[float | None, ...], Buckets]:
    """(p50, p95, p99) and the merged buckets of one route's histograms."""
    counted = [h for h in hists if h.count]
    try:
        if len(counted) == 1 and counted[0].quantiles is not None:
            h = counted[0]
            qs = h.quantiles or {}
            return tuple(qs.get(k) for k, _ in QUANTILES), tuple(h.buckets)
        if counted:
            return _merge(counted)
    except SnapshotError:
        log.warning("a sidecar sent malformed histogram buckets; its latency is left out")
        return (None, None, None), ()
    # Only summaries (a polled Envoy without detailed buckets): they cannot be merged; the
    # worst sidecar's value is the honest bound.
    summaries = [h.quantiles for h in hists if h.quantiles]
    if summaries:
        out: list[float | None] = []
        for key, _ in QUANTILES:
            values = [v for s in summaries if (v := s.get(key)) is not None]
            out.append(max(values) if values else None)
        return tuple(out), ()
    return (None, None, None), ()
