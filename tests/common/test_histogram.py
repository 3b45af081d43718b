"""The log-linear histogram: error bound, intervals, merging, bucket data."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdev.common.histogram import (
    BUCKET_COUNT,
    ENVOY_QUANTILES,
    HIGHEST,
    LOWEST,
    OVERFLOW,
    UNDERFLOW,
    Histogram,
    HistogramSnapshot,
    IntervalTracker,
    bucket_bounds,
    bucket_index,
    bucket_value,
)

# 1 us .. 1 h in milliseconds: the range the error bound is promised for.
latencies = st.floats(min_value=0.001, max_value=3_600_000.0, allow_nan=False)
quantiles = st.floats(min_value=0.0, max_value=1.0)
MAX_RELATIVE_ERROR = 0.01


def exact_quantile(values: list[float], q: float) -> float:
    """Nearest rank over the sorted values: the definition the histogram approximates."""
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


@settings(max_examples=300)
@given(st.lists(latencies, min_size=1, max_size=300), quantiles)
def test_quantile_is_within_one_percent_of_the_exact_one(values: list[float], q: float) -> None:
    h = Histogram("t")
    for v in values:
        h.record(v)
    exact = exact_quantile(values, q)
    estimate = h.snapshot().quantile(q)
    assert abs(estimate - exact) <= MAX_RELATIVE_ERROR * exact


@given(st.lists(latencies, min_size=1, max_size=200))
def test_every_envoy_quantile_at_once_stays_within_bound(values: list[float]) -> None:
    snap = HistogramSnapshot.from_values(values)
    for q, estimate in zip(ENVOY_QUANTILES, snap.quantiles(ENVOY_QUANTILES), strict=True):
        exact = exact_quantile(values, q)
        assert abs(estimate - exact) <= MAX_RELATIVE_ERROR * exact, q


@given(latencies)
def test_a_value_lies_inside_its_bucket(value: float) -> None:
    lower, upper = bucket_bounds(bucket_index(value))
    assert lower <= value < upper
    assert (upper - lower) / lower <= 1 / 64


def test_buckets_tile_the_range_without_gaps() -> None:
    previous_upper = LOWEST
    for i in range(1, OVERFLOW):
        lower, upper = bucket_bounds(i)
        assert lower == previous_upper
        assert bucket_index(lower) == i
        assert bucket_index(math.nextafter(upper, 0)) == i
        previous_upper = upper
    assert previous_upper == HIGHEST


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (0.0, UNDERFLOW),
        (-5.0, UNDERFLOW),
        (LOWEST / 2, UNDERFLOW),
        (HIGHEST, OVERFLOW),
        (math.inf, OVERFLOW),
        (1e12, OVERFLOW),
    ],
)
def test_out_of_range_values_land_in_the_edge_buckets(value: float, bucket: int) -> None:
    h = Histogram("t")
    h.record(value)
    snap = h.snapshot()
    assert snap.indices == (bucket,)
    assert bucket_index(value) == bucket


def test_record_keeps_count_and_sum() -> None:
    h = Histogram("cluster.backend.v1.upstream_rq_time")
    for v in (1.5, 2.5, 10.0):
        h.record(v)
    assert (h.count, h.sum) == (3, 14.0)
    assert h.snapshot().count == 3
    assert h.snapshot().mean() == pytest.approx(14.0 / 3)


def test_empty_histogram_quantiles_are_nan() -> None:
    snap = Histogram("t").snapshot()
    assert snap.count == 0
    assert all(math.isnan(v) for v in snap.quantiles(ENVOY_QUANTILES))


def test_quantile_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        HistogramSnapshot.from_values([1.0]).quantile(1.5)


@given(st.lists(latencies, max_size=100), st.lists(latencies, max_size=100))
def test_interval_is_exactly_what_was_recorded_in_between(
    before: list[float], after: list[float]
) -> None:
    h = Histogram("t")
    for v in before:
        h.record(v)
    first = h.snapshot()
    for v in after:
        h.record(v)
    interval = h.snapshot() - first
    assert interval == HistogramSnapshot.from_values(after)
    assert interval.count == len(after)
    assert interval.sum == pytest.approx(sum(after), rel=1e-9, abs=1e-6)


@given(st.lists(st.lists(latencies, max_size=50), min_size=1, max_size=5))
def test_merging_equals_recording_everything_in_one(parts: list[list[float]]) -> None:
    snaps = [HistogramSnapshot.from_values(p) for p in parts]
    everything = HistogramSnapshot.from_values([v for p in parts for v in p])
    merged = HistogramSnapshot.merge(snaps)
    assert merged == everything
    assert merged.count == everything.count
    pairwise = snaps[0]
    for s in snaps[1:]:
        pairwise = pairwise + s
    assert pairwise == everything


@given(st.lists(latencies, min_size=1, max_size=100))
def test_bucket_data_round_trips_through_json_triples(values: list[float]) -> None:
    snap = HistogramSnapshot.from_values(values)
    rebuilt = HistogramSnapshot.from_buckets(snap.bucket_data(), total=snap.sum)
    assert rebuilt == snap
    assert rebuilt.count == len(values)
    assert sum(n for _, _, n in snap.bucket_data()) == len(values)


def test_two_trackers_keep_independent_intervals() -> None:
    h = Histogram("t")
    a, b = IntervalTracker(), IntervalTracker()
    a.advance(h)
    b.advance(h)
    for v in (1.0, 2.0, 3.0):
        h.record(v)
    interval_a, _ = a.advance(h)
    assert interval_a.count == 3
    h.record(4.0)
    interval_a, cumulative = a.advance(h)
    interval_b, _ = b.advance(h)
    # a already consumed the first three; b has not, and a's reading did not take them from b.
    assert interval_a.count == 1
    assert interval_b.count == 4
    assert cumulative.count == 4
    again_b, _ = b.advance(h)
    assert again_b.count == 0


def test_tracker_counts_everything_of_a_histogram_it_meets_first() -> None:
    h = Histogram("t")
    h.record(5.0)
    interval, cumulative = IntervalTracker().advance(h)
    assert interval.count == cumulative.count == 1


def test_prometheus_le_counts_are_cumulative_and_follow_bucket_midpoints() -> None:
    snap = HistogramSnapshot.from_values([0.3, 0.3, 4.0, 70.0, 5_000_000.0])
    bounds = (0.5, 5.0, 100.0)
    assert snap.counts_at_or_below(bounds) == [2, 3, 4]
    # A value at the very top of a bucket whose midpoint is above the bound counts above it.
    lower, _ = bucket_bounds(bucket_index(10.0))
    assert lower == 10.0
    just_below = math.nextafter(lower, 0)
    assert HistogramSnapshot.from_values([just_below]).counts_at_or_below([10.0]) == [1]
    assert bucket_value(bucket_index(just_below)) < 10.0


def test_bucket_count_covers_one_microsecond_to_one_hour() -> None:
    assert LOWEST <= 0.001
    assert HIGHEST >= 3_600_000
    assert BUCKET_COUNT == 32 * 64 + 2
