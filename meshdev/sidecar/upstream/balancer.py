"""Load balancers: round_robin, least_request (power of two choices), random, ring_hash.

A balancer is built per config apply over that config's hosts of one cluster. Every policy
skips hosts ejected by outlier detection; `pick` answers None when no host is left, which the
proxy turns into 503 `UH`. Unlike Envoy there is no panic threshold: an ejected host is never
picked, even when that leaves no host (meshdev wants ejection to be visible).

The healthy list is recomputed only when the cluster's health epoch moves (an ejection or a
return), so a pick costs an int comparison plus the policy's own work.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

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


H = TypeVar("H", bound=LbHost)


class Balancer(Generic[H]):
    __slots__ = ("_epoch", "_healthy", "_seen", "hosts")

    def __init__(self, hosts: Sequence[H], epoch: HealthEpoch) -> None:
        self.hosts: tuple[H, ...] = tuple(hosts)
        self._epoch = epoch
        self._seen = -1
        self._healthy: tuple[H, ...] = ()

    def healthy(self) -> tuple[H, ...]:
        if self._seen != self._epoch.value:
            self._seen = self._epoch.value
            self._healthy = tuple(h for h in self.hosts if not h.ejected)
        return self._healthy

    def pick(self, hash_key: str | None = None) -> H | None:
        raise NotImplementedError


class RoundRobin(Balancer[H]):
    __slots__ = ("_next",)

    def __init__(self, hosts: Sequence[H], epoch: HealthEpoch) -> None:
        super().__init__(hosts, epoch)
        # Envoy starts each worker's round robin at a random offset so that sidecars do not
        # all hit the first host together.
        self._next = random.randrange(len(self.hosts)) if self.hosts else 0

    def pick(self, hash_key: str | None = None) -> H | None:
        healthy = self.healthy()
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
        self, hosts: Sequence[H], epoch: HealthEpoch, rand: Callable[[], float] = random.random
    ) -> None:
        super().__init__(hosts, epoch)
        self._rand = rand


class LeastRequest(_Drawing[H]):
    """Envoy's unweighted least_request: two random draws (with replacement), fewer active wins."""

    __slots__ = ()

    def pick(self, hash_key: str | None = None) -> H | None:
        healthy = self.healthy()
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
        healthy = self.healthy()
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
    entry, so ejections and returns move only the keys of the host concerned. A request
    without the hash header gets a random point, as Envoy does when it has no hash.
    """

    __slots__ = ("_owners", "_points")

    def __init__(
        self,
        hosts: Sequence[H],
        epoch: HealthEpoch,
        ring_size: int = RING_SIZE,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(hosts, epoch, rand)
        entries: list[tuple[int, int]] = []
        if self.hosts:
            per_host = max(1, -(-ring_size // len(self.hosts)))
            for idx, h in enumerate(self.hosts):
                entries.extend((hash64(f"{h.key}_{i}"), idx) for i in range(per_host))
        entries.sort()
        self._points = [p for p, _ in entries]
        self._owners = [i for _, i in entries]

    def pick(self, hash_key: str | None = None) -> H | None:
        if not self.healthy():
            return None
        points = self._points
        n = len(points)
        point = hash64(hash_key) if hash_key is not None else int(self._rand() * (1 << 64))
        start = bisect.bisect_left(points, point)
        hosts = self.hosts
        owners = self._owners
        for step in range(n):
            h = hosts[owners[(start + step) % n]]
            if not h.ejected:
                return h
        return None


def make_balancer(policy: LbPolicy, hosts: Sequence[H], epoch: HealthEpoch) -> Balancer[H]:
    if policy == "round_robin":
        return RoundRobin(hosts, epoch)
    if policy == "least_request":
        return LeastRequest(hosts, epoch)
    if policy == "random":
        return Random(hosts, epoch)
    return RingHash(hosts, epoch)
