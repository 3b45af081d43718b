"""Envoy's consecutive-5xx outlier detection, with a clock that tests can drive.

As in Envoy (source/common/upstream/outlier_detection_impl.cc):
- every upstream result is charged to its host; a local failure counts as a 5xx (connect
  failure and reset as 503, a per-try timeout as 504), anything else resets the streak;
- on exactly the Nth consecutive 5xx the host is considered at once (not at the next tick):
  `ejections_detected_consecutive_5xx` and the deprecated `ejections_consecutive_5xx` count
  it, then it is ejected unless that would exceed `max_ejection_percent` (`ejections_overflow`)
  - except that one host may always be ejected (Envoy's `always_eject_one_host`, which meshdev
  turns on because a small dev mesh would otherwise never eject anything);
- an ejection lasts `base_ejection_time x multiplier` (capped at max(300 s, base)); the
  multiplier grows with each ejection and shrinks by one on each interval tick the host spends
  back in service;
- hosts return only on `interval` ticks, so a host is out for at least its ejection time and
  at most one interval more; a returning host starts a fresh streak.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from meshdev.common.sidecar_config import OutlierDetection
from meshdev.sidecar.stats.store import Store

DEFAULT_MAX_EJECTION_TIME = 300.0


class HostHealth:
    """Per-host outlier state; the data plane's host objects inherit it."""

    __slots__ = (
        "consecutive_5xx",
        "eject_multiplier",
        "ejected",
        "ejected_at",
        "ejection_count",
        "returned_at",
    )

    def __init__(self) -> None:
        self.ejected = False
        self.consecutive_5xx = 0
        self.ejection_count = 0
        self.eject_multiplier = 0
        self.ejected_at = 0.0
        self.returned_at: float | None = None


class OutlierDetector:
    """One cluster's detector. `report` is on the request path; `tick` runs every interval."""

    def __init__(
        self,
        config: OutlierDetection,
        store: Store,
        cluster: str,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._hosts: list[HostHealth] = []
        prefix = f"cluster.{cluster}.outlier_detection."
        self.ejections_active = store.gauge(prefix + "ejections_active")
        self.ejections_enforced_total = store.counter(prefix + "ejections_enforced_total")
        self.ejections_enforced_5xx = store.counter(prefix + "ejections_enforced_consecutive_5xx")
        self.ejections_detected_5xx = store.counter(prefix + "ejections_detected_consecutive_5xx")
        self.ejections_consecutive_5xx = store.counter(prefix + "ejections_consecutive_5xx")
        self.ejections_total = store.counter(prefix + "ejections_total")
        self.ejections_overflow = store.counter(prefix + "ejections_overflow")

    @property
    def threshold(self) -> int:
        return self.config.consecutive_5xx

    def update(self, config: OutlierDetection) -> None:
        self.config = config

    def set_hosts(self, hosts: Iterable[HostHealth]) -> None:
        """Track a new host set; ejected hosts that left stop counting as active ejections."""
        self._hosts = list(hosts)
        self.ejections_active.set(sum(1 for h in self._hosts if h.ejected))

    def hosts(self) -> list[HostHealth]:
        return list(self._hosts)

    def report(self, host: HostHealth, status: int) -> None:
        if status >= 500:
            host.consecutive_5xx += 1
            if host.consecutive_5xx == self.config.consecutive_5xx:
                self._on_consecutive_5xx(host)
        else:
            host.consecutive_5xx = 0

    def _on_consecutive_5xx(self, host: HostHealth) -> None:
        if host.ejected or host not in self._hosts:
            return
        self.ejections_detected_5xx.inc()
        self._eject(host)
        self.ejections_consecutive_5xx.inc()
        host.consecutive_5xx = 0

    def _eject(self, host: HostHealth) -> None:
        total = len(self._hosts)
        active = self.ejections_active.value
        within = 100.0 * (active + 1) / total <= self.config.max_ejection_percent
        if not (within or active == 0):
            self.ejections_overflow.inc()
            return
        self.ejections_total.inc()
        self.ejections_active.inc()
        self.ejections_enforced_total.inc()
        self.ejections_enforced_5xx.inc()
        host.ejected = True
        host.ejection_count += 1
        host.ejected_at = self._clock()
        base = self.config.base_ejection_time
        if host.eject_multiplier * base < self._max_time() + base:
            host.eject_multiplier += 1
        self._on_change()

    def _max_time(self) -> float:
        return max(DEFAULT_MAX_EJECTION_TIME, self.config.base_ejection_time)

    def ejection_time(self, host: HostHealth) -> float:
        return min(self.config.base_ejection_time * host.eject_multiplier, self._max_time())

    def remaining(self, host: HostHealth) -> float:
        """Seconds until an ejected host is due back (it returns on the first tick after)."""
        if not host.ejected:
            return 0.0
        return max(0.0, host.ejected_at + self.ejection_time(host) - self._clock())

    def tick(self) -> None:
        now = self._clock()
        changed = False
        for host in self._hosts:
            if host.ejected and self.ejection_time(host) <= now - host.ejected_at:
                host.ejected = False
                host.consecutive_5xx = 0
                host.returned_at = now
                self.ejections_active.dec()
                changed = True
        for host in self._hosts:
            if (
                not host.ejected
                and host.returned_at is not None
                and now - host.returned_at >= self.config.interval
                and host.eject_multiplier > 0
            ):
                host.eject_multiplier -= 1
        if changed:
            self._on_change()
