"""Load balancing through real HTTP: each policy's distribution over real upstreams."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

from aiohttp import ClientSession

from tests.sidecar.helpers import client, get, listener_url, sidecar, simple_config, upstreams


async def who(s: ClientSession, base: str, headers: dict[str, str] | None = None) -> str:
    status, h, _ = await get(s, base, headers=headers)
    assert status == 200
    return h["x-upstream"]


async def test_round_robin_is_exactly_even() -> None:
    async with upstreams("a", "b", "c") as ups:
        async with sidecar(simple_config(ups)) as sc, client() as s:
            seen = Counter([await who(s, listener_url(sc)) for _ in range(300)])
        assert seen == {"a": 100, "b": 100, "c": 100}


async def test_random_is_even_within_bounds() -> None:
    async with upstreams("a", "b", "c") as ups:
        cfg = simple_config(ups, cluster={"lb": "random"})
        async with sidecar(cfg) as sc, client() as s:
            n = 900
            seen = Counter([await who(s, listener_url(sc)) for _ in range(n)])
        sigma = math.sqrt(n * (1 / 3) * (2 / 3))
        for name in "abc":
            assert abs(seen[name] - n / 3) < 5 * sigma, seen


async def test_least_request_prefers_the_idle_host() -> None:
    async with upstreams("slow", "fast") as (slow, fast):
        slow.delay = 0.05
        cfg = simple_config([slow, fast], cluster={"lb": "least_request"})
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            seen: Counter[str] = Counter()

            async def worker() -> None:
                for _ in range(60):
                    seen[await who(s, base)] += 1

            await asyncio.gather(*(worker() for _ in range(10)))
        n = sum(seen.values())
        # Round robin would give each half; two random choices send a request to the busy
        # host only when both draws land on it (about a quarter of the time).
        assert seen["fast"] > 0.65 * n, seen


async def test_ring_hash_is_sticky_per_header_value() -> None:
    async with upstreams("a", "b", "c") as ups:
        cfg = simple_config(ups, cluster={"lb": "ring_hash", "hash_header": "x-user"})
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            owner: dict[str, str] = {}
            for user in range(40):
                picks = {await who(s, base, {"x-user": f"user-{user}"}) for _ in range(5)}
                assert len(picks) == 1
                owner[f"user-{user}"] = picks.pop()
            assert len(set(owner.values())) == 3
            # Without the header each request lands on a random point of the ring.
            anonymous = Counter([await who(s, base) for _ in range(90)])
            assert len(anonymous) == 3
