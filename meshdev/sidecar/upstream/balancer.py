"""Load balancers: round_robin, least_request (power of two choices), random, ring_hash.

A balancer is built per config apply over that config's hosts of one cluster. Every policy
skips hosts ejected by outlier detection, unless fewer than Envoy's healthy panic threshold
(50 %) of the hosts are healthy: then, as Envoy's load balancers do, it picks among all of
them, ejected or not, and counts each such pick in `lb_healthy_panic` (a cluster with no host
at all is in panic too). So one bad host of two keeps being skipped, while two of three, or a
lone host, are still called rather than answered for; `pick` answers None only when the
cluster has no host, which the proxy turns into 503 `UH`.

The candidates are recomputed only when the cluster's health epoch moves (an ejection or a
return), so a pick costs an int comparison plus the policy's own work.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from meshdev.common.envoy_defaults import HEALTHY_PANIC_THRESHOLD
from meshdev.common.envoy_names import LbPolicy


class LbHost(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def ejected(self) -> bool: ...
    @property
    def rq_active(self) -> int: ...


class HealthEpoch:
    """Bumped on every ejection change of a cluster; balancers compare it to refresh."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        self.value += 1


class PanicCount(Protocol):
    """Where picks made in panic are counted (the cluster's `lb_healthy_panic` counter)."""

    value: int


class _Uncounted:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


H = TypeVar("H", bound=LbHost)


class Balancer(Generic[H]):
    __slots__ = ("_candidates", "_epoch", "_panic", "_panics", "_seen", "hosts")

    def __init__(
        self, hosts: Sequence[H], epoch: HealthEpoch, panics: PanicCount | None = None
    ) -> None:
        self.hosts: tuple[H, ...] = tuple(hosts)
        self._epoch = epoch
        self._panics: PanicCount = panics if panics is not None else _Uncounted()
        self._seen = -1
        self._candidates: tuple[H, ...] = ()
        self._panic = False

    def candidates(self) -> tuple[H, ...]:
        """The hosts this pick chooses among: the healthy ones, or in panic every host (the
        pick is then counted, as Envoy counts lb_healthy_panic per host selection)."""
        if self._seen != self._epoch.value:
            self._seen = self._epoch.value
            healthy = tuple(h for h in self.hosts if not h.ejected)
            n = len(self.hosts)
            # Envoy's isHostSetInPanic: healthy share strictly below the threshold.
            self._panic = n == 0 or 100.0 * len(healthy) < HEALTHY_PANIC_THRESHOLD * n
            self._candidates = self.hosts if self._panic else healthy
        if self._panic:
            self._panics.value += 1
        return self._candidates

    def pick(self, hash_key: str | None = None) -> H | None:
        raise NotImplementedError


class RoundRobin(Balancer[H]):
    __slots__ = ("_next",)

    def __init__(
        self, hosts: Sequence[H], epoch: HealthEpoch, panics: PanicCount | None = None
    ) -> None:
        super().__init__(hosts, epoch, panics)
        # Envoy starts each worker's round robin at a random offset so that sidecars do not
        # all hit the first host together.
        self._next = random.randrange(len(self.hosts)) if self.hosts else 0

    def pick(self, hash_key: str | None = None) -> H | None:
        healthy = self.candidates()
        n = len(healthy)
        if n == 0:
            return None
        i = self._next
        self._next = i + 1
        return healthy[i % n]


class _Drawing(Balancer[H]):
    """A policy that draws at random; tests pass their own `rand`."""

    __slots__ = ("_rand",)

    def __init__(
        self,
        hosts: Sequence[H],
        epoch: HealthEpoch,
        panics: PanicCount | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(hosts, epoch, panics)
        self._rand = rand


class LeastRequest(_Drawing[H]):
    """Envoy's unweighted least_request: two random draws (with replacement), fewer active wins."""

    __slots__ = ()

    def pick(self, hash_key: str | None = None) -> H | None:
        healthy = self.candidates()
        n = len(healthy)
        if n == 0:
            return None
        if n == 1:
            return healthy[0]
        rand = self._rand
        a = healthy[int(rand() * n)]
        b = healthy[int(rand() * n)]
        # Ties go to the first draw, as in Envoy.
        return b if b.rq_active < a.rq_active else a


class Random(_Drawing[H]):
    __slots__ = ()

    def pick(self, hash_key: str | None = None) -> H | None:
        healthy = self.candidates()
        n = len(healthy)
        if n == 0:
            return None
        return healthy[int(self._rand() * n)]


RING_SIZE = 1024  # Envoy's minimum_ring_size default


def hash64(text: str) -> int:
    """A stable 64-bit hash (Python's hash() is salted per process, rings must not be)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class RingHash(_Drawing[H]):
    """A consistent-hash ring over every host (Envoy's ring_hash, ketama-style entries).

    The ring holds ejected hosts too: a key whose host is ejected walks on to the next healthy
    entry, so ejections and returns move only the keys of the host concerned; in panic no
    entry is skipped (Envoy's ring of all hosts). A request without the hash header gets a
    random point, as Envoy does when it has no hash.
    """

    __slots__ = ("_owners", "_points")

    def __init__(
        self,
        hosts: Sequence[H],
        epoch: HealthEpoch,
        panics: PanicCount | None = None,
        ring_size: int = RING_SIZE,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(hosts, epoch, panics, rand)
        entries: list[tuple[int, int]] = []
        if self.hosts:
            per_host = max(1, -(-ring_size // len(self.hosts)))
            for idx, h in enumerate(self.hosts):
                entries.extend((hash64(f"{h.key}_{i}"), idx) for i in range(per_host))
        entries.sort()
        self._points = [p for p, _ in entries]
        self._owners = [i for _, i in entries]

    def pick(self, hash_key: str | None = None) -> H | None:
        if not self.candidates():
            return None
        points = self._points
        n = len(points)
        point = hash64(hash_key) if hash_key is not None else int(self._rand() * (1 << 64))
        start = bisect.bisect_left(points, point)
        hosts = self.hosts
        owners = self._owners
        if self._panic:
            return hosts[owners[start % n]]
        for step in range(n):
            h = hosts[owners[(start + step) % n]]
            if not h.ejected:
                return h
        return None


def make_balancer(
    policy: LbPolicy, hosts: Sequence[H], epoch: HealthEpoch, panics: PanicCount | None = None
) -> Balancer[H]:
    if policy == "round_robin":
        return RoundRobin(hosts, epoch, panics)
    if policy == "least_request":
        return LeastRequest(hosts, epoch, panics)
    if policy == "random":
        return Random(hosts, epoch, panics)
    return RingHash(hosts, epoch, panics)
