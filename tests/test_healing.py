"""Kubernetes' crash-loop backoff as meshdev applies it (meshdev/healing.py)."""

from __future__ import annotations

from meshdev import healing


def test_the_first_restart_is_at_once_then_10s_doubling_to_5_minutes() -> None:
    assert [healing.backoff(n) for n in range(1, 9)] == [0, 10, 20, 40, 80, 160, 300, 300]


def test_a_pod_that_keeps_crashing_waits_longer_each_time() -> None:
    h = healing.PodHealth(started_at=0.0)
    assert h.exited(137, now=5.0) == 0
    assert h.state == healing.EXITED
    h.restarting(now=5.0)
    assert h.exited(3, now=6.0) == 10
    assert h.state == healing.CRASH_LOOPING
    assert h.describe(now=8.0) == "crash-looping, exit 3, next try in 8 s"
    h.restarting(now=16.0)
    assert h.exited(3, now=17.0) == 20
    assert h.restarts == 2
    assert h.to_json(now=27.0) == {
        "state": "crash-looping",
        "restarts": 2,
        "exit_code": 3,
        "last_exit": h.last_exit,
        "next_try_in": 10.0,
    }
    h.restarting(now=37.0)
    h.running()
    assert h.describe() == ""


def test_ten_minutes_of_running_forgive_the_earlier_crashes() -> None:
    h = healing.PodHealth(started_at=0.0)
    for t in (1.0, 2.0, 3.0):
        h.exited(1, now=t)
        h.restarting(now=t)
    assert h.crashes == 3
    # Ran 10 minutes since its last start: its next crash restarts at once again.
    assert h.exited(1, now=3.0 + healing.FORGIVE_AFTER) == 0
    assert h.crashes == 1
