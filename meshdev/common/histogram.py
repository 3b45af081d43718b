"""Log-linear latency histogram (values in milliseconds, as Envoy's upstream_rq_time).

Buckets follow HdrHistogram's scheme: every power of two is split into 64 equal sub-buckets, so
a bucket is at most 1/64 of its lower bound wide and its midpoint is within 1/128 (0.78 %) of
any value in it. 32 powers of two cover 2^-10 ms (~1 us) to 2^22 ms (~70 min); below and above
sit one underflow and one overflow bucket. The bucket of a value comes from `math.frexp`
(exponent and mantissa of the float), so `record` costs a few arithmetic operations and one
list increment: it runs on every request.

Readers never reset a histogram. They take immutable `HistogramSnapshot`s and subtract the one
they took before, so every consumer (each /stats/stream client, the Envoy-style /stats flush)
owns its own interval and none disturbs another. Bucket boundaries are the same in every
process, so snapshots from many sidecars merge exactly by adding counts.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate, compress

SUB_BUCKET_BITS = 6
SUB_BUCKETS = 1 << SUB_BUCKET_BITS
# frexp exponents covered: value = m * 2**e with m in [0.5, 1).
MIN_EXPONENT = -9
MAX_EXPONENT = 22
LOWEST = 2.0 ** (MIN_EXPONENT - 1)  # 0.0009765625 ms, just under 1 us
HIGHEST = 2.0**MAX_EXPONENT  # 4194304 ms, about 70 minutes
BUCKET_COUNT = (MAX_EXPONENT - MIN_EXPONENT + 1) * SUB_BUCKETS + 2
UNDERFLOW = 0
OVERFLOW = BUCKET_COUNT - 1
# Index of m * 2**e is (e << bits) + int(m * 2 * SUB_BUCKETS) + _OFFSET; the lowest
# in-range value (m = 0.5, e = MIN_EXPONENT) lands on 1, right after the underflow bucket.
_OFFSET = 1 - ((MIN_EXPONENT << SUB_BUCKET_BITS) + SUB_BUCKETS)
_SCALE = float(2 * SUB_BUCKETS)

# The quantiles Envoy computes for every histogram (admin /stats shows all of them).
ENVOY_QUANTILES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
# The ones the dashboard shows.
SUMMARY_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99, 0.999)

_frexp = math.frexp


def bucket_index(value_ms: float) -> int:
    """The bucket `Histogram.record` puts `value_ms` in."""
    if LOWEST <= value_ms < HIGHEST:
        m, e = _frexp(value_ms)
        return (e << SUB_BUCKET_BITS) + int(m * _SCALE) + _OFFSET
    if value_ms < LOWEST:
        return UNDERFLOW
    return OVERFLOW


def bucket_bounds(index: int) -> tuple[float, float]:
    """[lower, upper) of a bucket. The overflow bucket is nominally one power of two wide."""
    if index == UNDERFLOW:
        return 0.0, LOWEST
    if index == OVERFLOW:
        return HIGHEST, 2 * HIGHEST
    if not 0 < index < OVERFLOW:
        raise ValueError(f"no bucket {index}")
    octave, sub = divmod(index - 1, SUB_BUCKETS)
    width = math.ldexp(1.0, MIN_EXPONENT + octave - SUB_BUCKET_BITS - 1)
    lower = (SUB_BUCKETS + sub) * width
    return lower, lower + width


def bucket_value(index: int) -> float:
    """The value a bucket stands for in quantiles: its midpoint (the error bound's centre).

    The underflow bucket reads as 0 and the overflow bucket as its lower bound: neither has a
    bounded error, and both are outside the range a request latency can have.
    """
    if index == UNDERFLOW:
        return 0.0
    if index == OVERFLOW:
        return HIGHEST
    lower, upper = bucket_bounds(index)
    return (lower + upper) / 2


def rank_of(q: float, count: int) -> int:
    """0-based rank of quantile `q` among `count` sorted values (nearest-rank definition)."""
    return min(count - 1, max(0, math.ceil(q * count) - 1))


def round_significant(value: float, digits: int = 4) -> float:
    """Quantiles are bucket midpoints good to 0.8 %; more digits would only be noise."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


class Histogram:
    """Cumulative bucket counts of one stat; only ever grows."""

    __slots__ = ("_counts", "count", "name", "sum")

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.sum = 0.0
        self._counts = [0] * BUCKET_COUNT

    def record(self, value_ms: float) -> None:
        # bucket_index inlined: a call costs as much as the rest of this method.
        self.count += 1
        self.sum += value_ms
        if LOWEST <= value_ms < HIGHEST:
            m, e = _frexp(value_ms)
            self._counts[(e << SUB_BUCKET_BITS) + int(m * _SCALE) + _OFFSET] += 1
        elif value_ms < LOWEST:
            self._counts[UNDERFLOW] += 1
        else:
            self._counts[OVERFLOW] += 1

    def snapshot(self) -> HistogramSnapshot:
        counts = self._counts
        return HistogramSnapshot(
            tuple(compress(range(BUCKET_COUNT), counts)),
            tuple(compress(counts, counts)),
            self.count,
            self.sum,
        )


class HistogramSnapshot:
    """Immutable bucket counts (sparse: ascending indices with non-zero counts), count and sum.

    Cumulative or interval alike; `a - b` is what was recorded between snapshot b and a,
    `a + b` merges two histograms (for example the same route on several sidecars).
    """

    __slots__ = ("_cumulative", "count", "counts", "indices", "sum")

    def __init__(
        self, indices: tuple[int, ...], counts: tuple[int, ...], count: int, total: float
    ) -> None:
        self.indices = indices
        self.counts = counts
        self.count = count
        self.sum = total
        self._cumulative: list[int] | None = None

    @classmethod
    def empty(cls) -> HistogramSnapshot:
        return cls((), (), 0, 0.0)

    @classmethod
    def from_values(cls, values: Iterable[float]) -> HistogramSnapshot:
        h = Histogram("")
        for v in values:
            h.record(v)
        return h.snapshot()

    @classmethod
    def from_buckets(
        cls, buckets: Iterable[Sequence[float]], total: float | None = None
    ) -> HistogramSnapshot:
        """Rebuild from `bucket_data` triples (lower bound, width, count), e.g. read from JSON.

        The sum is not in the buckets; pass it when known, otherwise it is estimated from the
        bucket midpoints.
        """
        merged: dict[int, int] = {}
        for lower, width, n in buckets:
            idx = bucket_index(lower + width / 2)
            merged[idx] = merged.get(idx, 0) + int(n)
        return cls._from_dict(merged, total)

    @classmethod
    def _from_dict(cls, merged: dict[int, int], total: float | None) -> HistogramSnapshot:
        pairs = sorted((i, n) for i, n in merged.items() if n > 0)
        indices = tuple(i for i, _ in pairs)
        counts = tuple(n for _, n in pairs)
        if total is None:
            total = sum(bucket_value(i) * n for i, n in pairs)
        return cls(indices, counts, sum(counts), total)

    def __sub__(self, earlier: HistogramSnapshot) -> HistogramSnapshot:
        if earlier.count == self.count:
            return EMPTY
        if earlier.count == 0:
            return self
        diff = dict(zip(self.indices, self.counts, strict=True))
        for i, n in zip(earlier.indices, earlier.counts, strict=True):
            diff[i] = diff.get(i, 0) - n
        if any(n < 0 for n in diff.values()):
            raise ValueError("snapshot subtracted from an earlier one or another histogram")
        return self._from_dict(diff, self.sum - earlier.sum)

    def __add__(self, other: HistogramSnapshot) -> HistogramSnapshot:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        merged = dict(zip(self.indices, self.counts, strict=True))
        for i, n in zip(other.indices, other.counts, strict=True):
            merged[i] = merged.get(i, 0) + n
        return self._from_dict(merged, self.sum + other.sum)

    @classmethod
    def merge(cls, snapshots: Iterable[HistogramSnapshot]) -> HistogramSnapshot:
        merged: dict[int, int] = {}
        total = 0.0
        for s in snapshots:
            total += s.sum
            for i, n in zip(s.indices, s.counts, strict=True):
                merged[i] = merged.get(i, 0) + n
        return cls._from_dict(merged, total)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HistogramSnapshot):
            return NotImplemented
        return (self.indices, self.counts) == (other.indices, other.counts)

    def __hash__(self) -> int:
        return hash((self.indices, self.counts))

    def __repr__(self) -> str:
        return f"HistogramSnapshot(count={self.count}, sum={self.sum!r})"

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile (q in [0, 1]) within 1/128 of the exact value; nan if empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q} outside [0, 1]")
        if self.count == 0:
            return math.nan
        cum = self._cumulative
        if cum is None:
            cum = self._cumulative = list(accumulate(self.counts))
        return bucket_value(self.indices[bisect_right(cum, rank_of(q, self.count))])

    def quantiles(self, qs: Iterable[float]) -> list[float]:
        return [self.quantile(q) for q in qs]

    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def bucket_data(self) -> list[tuple[float, float, int]]:
        """(lower bound ms, width ms, count) per non-empty bucket: what a merging client needs."""
        out: list[tuple[float, float, int]] = []
        for i, n in zip(self.indices, self.counts, strict=True):
            lower, upper = bucket_bounds(i)
            out.append((lower, upper - lower, n))
        return out

    def counts_at_or_below(self, bounds: Sequence[float]) -> list[int]:
        """Cumulative count per upper bound, as Prometheus's `le` buckets.

        A value counts under `le` when its bucket's midpoint (the value quantiles report for
        it) is <= le, so a value within 0.8 % of a bound may fall on either side of it.
        """
        out = [0] * len(bounds)
        for i, n in zip(self.indices, self.counts, strict=True):
            slot = _le_slot(i, bounds)
            if slot < len(out):
                out[slot] += n
        return list(accumulate(out))


EMPTY = HistogramSnapshot.empty()


def _le_slot(index: int, bounds: Sequence[float]) -> int:
    """First position in ascending `bounds` whose bound holds bucket `index`."""
    return bisect_left(bounds, bucket_value(index))


class IntervalTracker:
    """One consumer's cursor over many histograms.

    `advance` returns what was recorded since this tracker last advanced that histogram (or
    everything, for a histogram it meets for the first time), plus the cumulative snapshot.
    """

    __slots__ = ("_previous",)

    def __init__(self) -> None:
        self._previous: dict[str, HistogramSnapshot] = {}

    def moved(self, histogram: Histogram) -> bool:
        """Whether `advance` would return a non-empty interval, or meets it for the first time."""
        previous = self._previous.get(histogram.name)
        return previous is None or previous.count != histogram.count

    def advance(self, histogram: Histogram) -> tuple[HistogramSnapshot, HistogramSnapshot]:
        previous = self._previous.get(histogram.name)
        if previous is not None and previous.count == histogram.count:
            return EMPTY, previous
        current = histogram.snapshot()
        self._previous[histogram.name] = current
        if previous is None:
            return current, current
        return current - previous, current
