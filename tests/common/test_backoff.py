"""The one full-jitter backoff, shared by the data plane's retries and the dashboard's
reconnects: its ceilings, its reset, and what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdev.common.backoff import Backoff
from meshdev.common.envoy_defaults import RETRY_BASE_INTERVAL, RETRY_MAX_INTERVAL


@given(
    base=st.floats(min_value=1e-4, max_value=10.0),
    factor=st.floats(min_value=1.0, max_value=1e4),
    draws=st.integers(min_value=1, max_value=40),
)
def test_ceilings_are_the_base_doubled_up_to_the_cap(
    base: float, factor: float, draws: int
) -> None:
    cap = base * factor
    top = Backoff(base, cap, rand=lambda: 1.0)
    got = [top.next_delay() for _ in range(draws)]
    assert got == [min(cap, base * 2.0**n) for n in range(draws)]


def test_each_delay_is_a_uniform_draw_below_its_ceiling() -> None:
    draws = iter([0.0, 0.5, 0.25])
    b = Backoff(1.0, 10.0, rand=lambda: next(draws))
    assert [b.next_delay() for _ in range(3)] == [0.0, 1.0, 1.0]


def test_reset_starts_again_from_the_base() -> None:
    b = Backoff(0.1, 5.0, rand=lambda: 1.0)
    for _ in range(10):
        b.next_delay()
    assert b.next_delay() == 5.0
    b.reset()
    assert b.next_delay() == 0.1


def test_envoys_retry_backoff_tops_out_at_ten_times_its_base() -> None:
    b = Backoff(RETRY_BASE_INTERVAL, RETRY_MAX_INTERVAL, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25, 0.25])


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_base_outside_zero_to_cap_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base, cap)
