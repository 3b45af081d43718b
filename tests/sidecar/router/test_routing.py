"""Routing through real HTTP: virtual hosts by Host/authority, first match wins, weighted
splits, NR 404, and the headers a proxy adds or strips."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import AsyncIterator

from tests.sidecar.helpers import (
    COUNTED,
    Upstream,
    client,
    endpoint,
    get,
    listener_url,
    outbound_config,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.support import LOCALHOST


def cluster(name: str, *ups: Upstream) -> dict[str, object]:
    return {"name": name, "endpoints": [endpoint(u) for u in ups]}


def to(name: str, weight: int = 1) -> list[dict[str, object]]:
    return [{"cluster": name, "weight": weight}]


async def test_routes_match_by_path_method_and_headers_first_match_wins() -> None:
    async with upstreams("prefix", "exact", "regex", "post", "canary", "rest") as ups:
        names = [u.name for u in ups]
        routes = [
            {"name": "exact", "match": {"path": "/items/special"}, "clusters": to("exact")},
            {"name": "prefix", "match": {"prefix": "/items"}, "clusters": to("prefix")},
            {"name": "regex", "match": {"regex": r"/orders/\d+"}, "clusters": to("regex")},
            {"name": "post", "match": {"prefix": "/", "methods": ["POST"]}, "clusters": to("post")},
            {
                "name": "canary",
                "match": {"prefix": "/", "headers": [{"name": "x-canary", "exact": "1"}]},
                "clusters": to("canary"),
            },
            {"name": "rest", "match": {"prefix": "/"}, "clusters": to("rest")},
        ]
        cfg = outbound_config(
            [cluster(n, u) for n, u in zip(names, ups, strict=True)],
            [{"name": "backend", "domains": ["backend"], "routes": routes}],
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)

            async def who(path: str, **kw: object) -> str:
                status, headers, _ = await get(s, base, path, **kw)  # type: ignore[arg-type]
                assert status == 200
                return headers["x-upstream"]

            assert await who("/items/special") == "exact"
            assert await who("/items/special?x=1") == "exact"
            assert await who("/items/special/more") == "prefix"
            assert await who("/items") == "prefix"
            assert await who("/orders/42") == "regex"
            assert await who("/orders/42x") == "rest"
            assert await who("/items", method="POST") == "prefix"  # earlier route wins
            assert await who("/other", method="POST") == "post"
            assert await who("/other", headers={"x-canary": "1"}) == "canary"
            assert await who("/other", headers={"x-canary": "0"}) == "rest"
            assert stat(sc, "vhost.backend.route.prefix.upstream_rq_total") == 3
            assert stat(sc, "vhost.backend.route.prefix.upstream_rq_2xx") == 3
            assert stat(sc, "vhost.backend.route.exact.upstream_rq_200") == 2
            assert stat(sc, "cluster.rest.upstream_rq_total") == 2
            assert stat(sc, "http.outbound.rq_total") == 10
            assert stat(sc, "http.outbound.downstream_rq_2xx") == 10


async def test_virtual_host_by_host_header_and_absolute_form() -> None:
    async with upstreams("a", "b") as (a, b):
        cfg = outbound_config(
            [cluster("a", a), cluster("b", b)],
            [
                {"name": "a", "domains": ["svc-a"], "routes": [{"name": "r", "clusters": to("a")}]},
                {"name": "b", "domains": ["svc-b"], "routes": [{"name": "r", "clusters": to("b")}]},
            ],
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            assert (await get(s, base, host="svc-a"))[1]["x-upstream"] == "a"
            assert (await get(s, base, host="svc-b:8080"))[1]["x-upstream"] == "b"
            # Through HTTP_PROXY: absolute-form targets, routed by the URL's authority.
            async with s.get("http://svc-b/items?q=1", proxy=base) as resp:
                assert resp.status == 200
                assert resp.headers["x-upstream"] == "b"
                seen = json.loads(await resp.read())
            assert seen["path"] == "/items?q=1"  # origin-form upstream
            assert seen["headers"]["Host"] == "svc-b"
            assert b.seen_targets[-1] == "/items?q=1"


async def test_no_route_is_404_nr_and_counted() -> None:
    async with upstreams("a") as (a,):
        cfg = simple_config([a], route={"match": {"prefix": "/api"}})
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            status, _, body = await get(s, base, "/nothing")
            assert status == 404
            assert body == b""
            status, _, _ = await get(s, base, "/api", host="unknown-host")
            assert status == 404
            assert stat(sc, "http.outbound.no_route") == 2
            assert stat(sc, "http.outbound.downstream_rq_404") == 2
            assert a.hits == 0


async def test_weighted_split_within_statistical_bounds() -> None:
    async with upstreams("v1", "v2") as (v1, v2):
        cfg = outbound_config(
            [cluster("backend-v1", v1), cluster("backend-v2", v2)],
            [
                {
                    "name": "backend",
                    "domains": ["backend"],
                    "routes": [
                        {
                            "name": "split",
                            "clusters": [
                                {"cluster": "backend-v1", "weight": 80},
                                {"cluster": "backend-v2", "weight": 20},
                            ],
                        }
                    ],
                }
            ],
        )
        n = 1000
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            seen: Counter[str] = Counter()
            for _ in range(n):
                _, headers, _ = await get(s, base)
                seen[headers["x-upstream"]] += 1
        sigma = math.sqrt(n * 0.2 * 0.8)
        assert abs(seen["v2"] - 0.2 * n) < 5 * sigma, seen
        assert seen["v1"] + seen["v2"] == n
        assert stat(sc, "cluster.backend-v2.upstream_rq_total") == seen["v2"]


async def test_request_id_traceparent_forwarded_for_and_hop_by_hop() -> None:
    async with (
        upstreams("a") as (a,),
        sidecar(simple_config([a], vhost=COUNTED)) as sc,
        client() as s,
    ):
        base = listener_url(sc)
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        status, headers, _ = await get(
            s,
            base,
            headers={
                "traceparent": trace,
                "x-request-id": "keep-me",
                "x-forwarded-for": "10.1.1.1",
                "Connection": "keep-alive, x-secret",
                "x-secret": "drop me",
                "Keep-Alive": "timeout=5",
                "Upgrade": "h2c",
            },
        )
        assert status == 200
        got = a.seen_headers[-1]
        assert got["traceparent"] == trace
        assert got["x-request-id"] == "keep-me"
        assert got["x-forwarded-for"] == f"10.1.1.1, {LOCALHOST}"
        for hop in ("x-secret", "keep-alive", "upgrade"):
            assert hop not in got
        assert got.get("connection", "keep-alive").lower() == "keep-alive"
        assert headers["x-envoy-attempt-count"] == "1"
        assert "x-envoy-upstream-service-time" in headers
        await get(s, base)
        rid = a.seen_headers[-1]["x-request-id"]
        assert len(rid) == 36 and rid[14] == "4"
        await get(s, base)
        assert a.seen_headers[-1]["x-request-id"] != rid


async def test_large_bodies_stream_through_both_ways() -> None:
    async with (
        upstreams("a") as (a,),
        sidecar(simple_config([a])) as sc,
        client(timeout=60) as s,
    ):
        base = listener_url(sc)
        size = 8 * 1024 * 1024 + 17

        async def produce() -> AsyncIterator[bytes]:
            block = bytes(range(256)) * 256
            left = size
            while left:
                n = min(left, len(block))
                yield block[:n]
                left -= n

        async with s.post(base + "/echo", data=produce(), headers={"Host": "backend"}) as r:
            assert r.status == 200
            total = 0
            async for chunk in r.content.iter_chunked(65536):
                total += len(chunk)
        assert total == size
        async with s.get(base + f"/big?size={size}", headers={"Host": "backend"}) as r:
            assert r.status == 200
            assert r.headers["content-length"] == str(size)
            assert len(await r.read()) == size
        assert stat(sc, "cluster.backend.upstream_rq_2xx") == 2


async def test_head_and_bodiless_answers_keep_their_framing() -> None:
    async with upstreams("a") as (a,), sidecar(simple_config([a])) as sc, client() as s:
        base = listener_url(sc)
        status, headers, body = await get(s, base, "/same", method="HEAD")
        assert (status, body) == (200, b"")
        # The upstream's own content-length (of the body a GET would get) passes through.
        assert int(headers["content-length"]) > 100
        status, headers, body = await get(s, base, "/?status=204")
        assert (status, body) == (204, b"")
        assert "transfer-encoding" not in headers
        assert stat(sc, "cluster.backend.upstream_rq_204") == 1
