"""Hot swap: atomic per request, no request lost under load, in-flight requests finish on
the config they started with, pools and stats survive, listeners re-bind only when moved."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import ClientError, ClientSession

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import (
    Upstream,
    client,
    endpoint,
    get,
    listener_url,
    outbound_config,
    sidecar,
    stat,
    upstreams,
)
from tests.support import LOCALHOST, free_port, wait_until


def two_versions(v1: Upstream, v2: Upstream, version: int, port: int, to: str) -> SidecarConfig:
    return outbound_config(
        [
            {"name": "backend-v1", "endpoints": [endpoint(v1)]},
            {"name": "backend-v2", "endpoints": [endpoint(v2)]},
        ],
        [
            {
                "name": "backend",
                "domains": ["backend"],
                "routes": [{"name": "main", "clusters": [{"cluster": to, "weight": 1}]}],
            }
        ],
        version=version,
        port=port,
    )


async def admin_post_config(s: ClientSession, sc: Sidecar, body: Any) -> tuple[int, Any]:
    url = f"http://{sc.config.admin.address}:{sc.admin_port}/config"
    data = body if isinstance(body, str) else json.dumps(body)
    async with s.post(url, data=data, headers={"x-meshdev-token": "test-token"}) as resp:
        return resp.status, await resp.json()


async def test_swaps_under_load_lose_no_request() -> None:
    async with upstreams("v1", "v2") as (v1, v2):
        port = free_port()
        async with sidecar(two_versions(v1, v2, 1, port, "backend-v1")) as sc, client() as s:
            base = listener_url(sc)
            stop = time.monotonic() + 2.0
            results: Counter[object] = Counter()

            async def load() -> None:
                while time.monotonic() < stop:
                    try:
                        status, headers, _ = await get(s, base)
                        results[(status, headers.get("x-upstream"))] += 1
                    except ClientError as exc:
                        results[type(exc).__name__] += 1

            async def swapper() -> int:
                version = 1
                while time.monotonic() < stop:
                    await asyncio.sleep(0.05)
                    version += 1
                    to = "backend-v2" if version % 2 else "backend-v1"
                    status, _ = await admin_post_config(
                        s, sc, two_versions(v1, v2, version, port, to).model_dump(mode="json")
                    )
                    assert status == 200
                return version

            loads = asyncio.gather(*(load() for _ in range(20)))
            last, _ = await asyncio.gather(swapper(), loads)
            total = sum(results.values())
            assert set(results) <= {(200, "v1"), (200, "v2")}, results
            assert results[(200, "v1")] > 0 and results[(200, "v2")] > 0
            assert sc.config.version == last >= 10
            # Stats continued across every swap.
            assert stat(sc, "http.outbound.rq_total") == total
            assert stat(sc, "http.outbound.downstream_rq_2xx") == total
            assert (
                stat(sc, "cluster.backend-v1.upstream_rq_200")
                + stat(sc, "cluster.backend-v2.upstream_rq_200")
                == total
            )
            assert stat(sc, "vhost.backend.route.main.upstream_rq_total") == total


async def test_in_flight_request_finishes_on_its_config() -> None:
    async with upstreams("v1", "v2") as (v1, v2):
        port = free_port()
        async with sidecar(two_versions(v1, v2, 1, port, "backend-v1")) as sc, client() as s:
            base = listener_url(sc)
            slow = asyncio.ensure_future(get(s, base, "/?hold=1"))
            await wait_until(lambda: v1.active == 1, "the held request at v1")
            # v2 only, and v1's endpoint gone from the config altogether.
            cfg = outbound_config(
                [{"name": "backend-v2", "endpoints": [endpoint(v2)]}],
                [
                    {
                        "name": "backend",
                        "domains": ["backend"],
                        "routes": [
                            {"name": "main", "clusters": [{"cluster": "backend-v2", "weight": 1}]}
                        ],
                    }
                ],
                version=2,
                port=port,
            )
            sc.apply(cfg)
            assert (await get(s, base))[1]["x-upstream"] == "v2"
            v1.release()
            status, headers, _ = await slow
            assert (status, headers["x-upstream"]) == (200, "v1")
            assert stat(sc, "cluster.backend-v1.upstream_rq_200") == 1


async def test_unchanged_endpoints_keep_their_connections() -> None:
    async with upstreams("a") as (a,):
        port = free_port()
        cfg = two_versions(a, a, 1, port, "backend-v1")
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            for _ in range(3):
                await get(s, base)
            opened = stat(sc, "cluster.backend-v1.upstream_cx_total")
            assert opened == 1
            for version in range(2, 6):
                sc.apply(two_versions(a, a, version, port, "backend-v1"))
                await get(s, base)
            assert stat(sc, "cluster.backend-v1.upstream_cx_total") == opened


async def test_listener_rebinds_only_when_its_address_changes() -> None:
    async with upstreams("a") as (a,):
        port = free_port()
        async with sidecar(two_versions(a, a, 1, port, "backend-v1")) as sc, client() as s:
            old = listener_url(sc)
            assert (await get(s, old))[0] == 200
            moved = free_port()
            sc.apply(two_versions(a, a, 2, moved, "backend-v1"))
            new = f"http://{LOCALHOST}:{moved}"

            async def serving() -> bool:
                try:
                    return (await get(s, new))[0] == 200
                except ClientError:
                    return False

            await wait_until(serving, "the listener at its new address")

            async def old_closed() -> bool:
                try:
                    await get(s, old, headers={"Connection": "close"})
                except ClientError:
                    return True
                return False

            await wait_until(old_closed, "the old address to close")


async def test_bad_configs_are_rejected_and_the_old_one_keeps_serving() -> None:
    async with upstreams("a") as (a,):
        port = free_port()
        async with sidecar(two_versions(a, a, 1, port, "backend-v1")) as sc, client() as s:
            base = listener_url(sc)
            bad = two_versions(a, a, 2, port, "backend-v1").model_dump(mode="json")
            bad["virtual_hosts"][0]["routes"][0]["clusters"][0]["cluster"] = "nope"
            status, answer = await admin_post_config(s, sc, bad)
            assert status == 400
            assert any("nope" in r for r in answer["reasons"])
            with socket_taken() as taken:
                busy = two_versions(a, a, 3, taken, "backend-v1").model_dump(mode="json")
                status, answer = await admin_post_config(s, sc, busy)
                assert status == 400
            assert sc.config.version == 1
            assert stat(sc, "config.update_rejected") == 2
            assert (await get(s, base))[0] == 200


@contextmanager
def socket_taken() -> Iterator[int]:
    """A port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        sock.listen()
        yield sock.getsockname()[1]
