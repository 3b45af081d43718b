"""Outlier detection with a fake clock: Envoy's consecutive-5xx rules, no sockets."""

from __future__ import annotations

from meshdev.common.sidecar_config import OutlierDetection
from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.upstream.outlier import HostHealth, OutlierDetector


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detector(
    n_hosts: int, **cfg: float
) -> tuple[OutlierDetector, list[HostHealth], Clock, Store, list[int]]:
    clock = Clock()
    store = Store()
    changes: list[int] = []
    od = OutlierDetector(
        OutlierDetection(**cfg),
        store,
        "backend",
        on_change=lambda: changes.append(1),
        clock=clock,
    )
    hosts = [HostHealth() for _ in range(n_hosts)]
    od.set_hosts(hosts)
    return od, hosts, clock, store, changes


def stat(store: Store, name: str) -> int:
    full = f"cluster.backend.outlier_detection.{name}"
    for c in store.counters():
        if c.name == full:
            return c.value
    for g in store.gauges():
        if g.name == full:
            return g.value
    raise AssertionError(f"no stat {full}")


def test_ejects_on_the_nth_consecutive_5xx_at_once() -> None:
    od, (a, _b), _clock, store, changes = detector(2, consecutive_5xx=3, max_ejection_percent=50)
    od.report(a, 503)
    od.report(a, 500)
    assert not a.ejected
    od.report(a, 502)
    assert a.ejected
    assert a.ejection_count == 1
    assert changes == [1]
    assert stat(store, "ejections_active") == 1
    assert stat(store, "ejections_enforced_total") == 1
    assert stat(store, "ejections_consecutive_5xx") == 1
    assert stat(store, "ejections_detected_consecutive_5xx") == 1


def test_a_success_resets_the_streak() -> None:
    od, (a, _b), _clock, _store, _ = detector(2, consecutive_5xx=3, max_ejection_percent=50)
    od.report(a, 503)
    od.report(a, 503)
    od.report(a, 200)
    od.report(a, 503)
    od.report(a, 503)
    assert not a.ejected
    assert a.consecutive_5xx == 2


def test_host_returns_only_on_a_tick_after_its_time() -> None:
    od, (a, _b), clock, store, _ = detector(
        2, consecutive_5xx=1, base_ejection_time=30, interval=10, max_ejection_percent=50
    )
    od.report(a, 500)
    assert a.ejected
    clock.now += 29.9
    od.tick()
    assert a.ejected
    assert 0 < od.remaining(a) <= 0.1 + 1e-9
    clock.now += 0.2
    assert a.ejected  # time is up, but hosts come back on ticks only
    od.tick()
    assert not a.ejected
    assert a.consecutive_5xx == 0
    assert stat(store, "ejections_active") == 0


def test_ejection_time_grows_with_the_multiplier_and_shrinks_when_healthy() -> None:
    od, (a, _b), clock, _store, _ = detector(
        2, consecutive_5xx=1, base_ejection_time=10, interval=1, max_ejection_percent=50
    )
    od.report(a, 500)
    clock.now += 10
    od.tick()
    assert not a.ejected
    od.report(a, 500)  # ejected again at once: second ejection lasts 2 x base
    assert a.ejection_count == 2
    assert od.ejection_time(a) == 20
    clock.now += 19
    od.tick()
    assert a.ejected
    clock.now += 1
    od.tick()
    assert not a.ejected
    # Each interval back in service takes one off the multiplier.
    clock.now += 1
    od.tick()
    assert a.eject_multiplier == 1
    clock.now += 1
    od.tick()
    assert a.eject_multiplier == 0
    od.report(a, 500)
    assert od.ejection_time(a) == 10


def test_max_ejection_percent_caps_ejections_but_one_host_may_always_go() -> None:
    od, hosts, _clock, store, _ = detector(4, consecutive_5xx=1, max_ejection_percent=10)
    for h in hosts:
        od.report(h, 500)
    assert [h.ejected for h in hosts] == [True, False, False, False]
    assert stat(store, "ejections_overflow") == 3
    assert stat(store, "ejections_active") == 1


def test_max_ejection_percent_allows_up_to_the_limit() -> None:
    od, hosts, _clock, store, _ = detector(4, consecutive_5xx=1, max_ejection_percent=50)
    for h in hosts:
        od.report(h, 503)
    assert sum(h.ejected for h in hosts) == 2
    assert stat(store, "ejections_active") == 2
    assert stat(store, "ejections_enforced_total") == 2


def test_removed_ejected_host_stops_counting_as_active() -> None:
    od, (a, b), _clock, store, _ = detector(2, consecutive_5xx=1, max_ejection_percent=50)
    od.report(a, 500)
    assert stat(store, "ejections_active") == 1
    od.set_hosts([b])
    assert stat(store, "ejections_active") == 0
    od.report(a, 500)  # a late result from a host that left changes nothing
    assert stat(store, "ejections_enforced_total") == 1
