"""The admin API through real HTTP on loopback, against an in-memory ControlSurface."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from meshdev.common.histogram import HistogramSnapshot
from meshdev.sidecar.admin.server import TOKEN_HEADER, AdminServer, start_admin
from meshdev.testing.fake_surface import FakeSurface, breaker, config_document, host, make_config
from tests.sidecar.promtool import promtool_check
from tests.support import WAIT, wait_until

TOKEN = "s3cret-mesh-token"
AUTH = {TOKEN_HEADER: TOKEN}
RQ_TIME = "cluster.backend.v1.upstream_rq_time"


@dataclass
class Admin:
    surface: FakeSurface
    session: aiohttp.ClientSession
    server: AdminServer


Serve = Callable[..., Awaitable[Admin]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[Admin] = []

    async def start(
        surface: FakeSurface | None = None, *, token: str = TOKEN, flush_interval: float = 5.0
    ) -> Admin:
        surface = surface if surface is not None else FakeSurface()
        server = await start_admin(
            surface,
            host="127.0.0.1",
            port=0,
            token=token,
            server_info={"version": "meshdev/0.1.0-test", "pid": 4242},
            flush_interval=flush_interval,
        )
        session = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}")
        admin = Admin(surface, session, server)
        started.append(admin)
        return admin

    yield start
    for admin in started:
        await admin.session.close()
        await admin.server.close()


@pytest.fixture
async def admin(serve: Serve) -> Admin:
    return await serve()


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < n:
        block = await asyncio.wait_for(
            resp.content.readuntil(b"\n\n", max_size=16 * 1024 * 1024), WAIT
        )
        assert block.startswith(b"data: "), block[:80]
        events.append(json.loads(block[len(b"data: ") : -2]))
    return events


async def events_until(
    resp: aiohttp.ClientResponse, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or not done(events[-1]):
        events += await read_events(resp, 1)
    return events


# -- read-only endpoints --------------------------------------------------------------------


async def test_ready_answers_live(admin: Admin) -> None:
    async with admin.session.get("/ready") as resp:
        assert resp.status == 200
        assert (await resp.text()).strip() == "LIVE"


async def test_server_info_names_node_mesh_and_config(admin: Admin) -> None:
    async with admin.session.get("/server_info") as resp:
        assert resp.status == 200
        info = await resp.json()
    cfg = admin.surface.config
    assert info["state"] == "LIVE"
    assert info["version"] == "meshdev/0.1.0-test"
    assert info["pid"] == 4242
    assert info["node"]["id"] == "frontend-0"
    assert info["node"]["cluster"] == "frontend"
    assert info["mesh"] == "demo"
    assert info["config"] == {"version": 1, "hash": cfg.content_hash()}
    assert re.fullmatch(r"\d+s", info["uptime_current_epoch"])


async def test_config_dump_has_version_hash_and_the_config(admin: Admin) -> None:
    async with admin.session.get("/config_dump") as resp:
        dump = await resp.json()
    cfg = admin.surface.config
    assert dump["version"] == 1
    assert dump["hash"] == cfg.content_hash()
    assert make_config(**{k: v for k, v in dump["config"].items() if k != "version"}) == cfg


async def test_clusters_text_lists_hosts_and_thresholds_envoy_style(admin: Admin) -> None:
    admin.surface.host_views = [
        host("backend.v1", "10.0.0.3", rq_total=12, rq_success=9, rq_error=3),
        host("backend.v1", "10.0.0.4", ejected=True, rq_total=7, rq_error=7),
    ]
    admin.surface.breaker_views = [breaker("backend.v1")]
    async with admin.session.get("/clusters") as resp:
        assert resp.status == 200
        lines = (await resp.text()).splitlines()
    assert "backend.v1::10.0.0.3:15006::rq_total::12" in lines
    assert "backend.v1::10.0.0.3:15006::health_flags::healthy" in lines
    assert "backend.v1::10.0.0.4:15006::health_flags::/failed_outlier_check" in lines
    assert "backend.v1::10.0.0.3:15006::cx_active::2" in lines
    assert "backend.v1::10.0.0.3:15006::rq_active::1" in lines
    assert "backend.v1::10.0.0.3:15006::success_rate::75" in lines
    assert "backend.v1::10.0.0.4:15006::success_rate::0" in lines
    assert "backend.v1::default_priority::max_connections::50" in lines
    assert "backend.v1::default_priority::max_requests::20" in lines
    # Clusters without live breaker views fall back to the config's (Envoy's default) limits.
    assert "inbound|8080::default_priority::max_connections::1024" in lines
    assert "backend.v2::observability_name::backend.v2" in lines
    assert all(line.count("::") >= 2 for line in lines)


async def test_clusters_json(admin: Admin) -> None:
    admin.surface.host_views = [host("backend.v1", "10.0.0.4", ejected=True, rq_total=7)]
    async with admin.session.get("/clusters", params={"format": "json"}) as resp:
        doc = await resp.json()
    by_name = {c["name"]: c for c in doc["cluster_statuses"]}
    assert set(by_name) == {"inbound|8080", "backend.v1", "backend.v2"}
    (status,) = by_name["backend.v1"]["host_statuses"]
    assert status["address"]["socket_address"] == {"address": "10.0.0.4", "port_value": 15006}
    assert status["health_status"]["failed_outlier_check"] is True
    assert {"name": "rq_total", "value": "7"} in status["stats"]
    thresholds = by_name["backend.v1"]["circuit_breakers"]["thresholds"][0]
    assert thresholds["max_connections"] == 50


def record_traffic(surface: FakeSurface) -> None:
    s = surface.stats
    s.counter("cluster.backend.v1.upstream_rq_total").inc(12)
    s.counter("cluster.backend.v1.upstream_rq_503").inc(2)
    s.counter("cluster.inbound|8080.upstream_rq_total").inc(5)
    s.gauge("cluster.backend.v1.upstream_rq_active").set(3)
    s.counter("vhost.backend.route.items.upstream_rq_total").inc(12)
    for v in (1.0, 2.0, 3.0, 4.0, 50.0):
        s.histogram(RQ_TIME).record(v)


async def test_stats_in_text_json_and_prometheus(admin: Admin) -> None:
    record_traffic(admin.surface)
    async with admin.session.get("/stats") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "cluster.backend.v1.upstream_rq_total: 12\n" in text
    assert re.search(rf"^{re.escape(RQ_TIME)}: P0\(nan,1\.0\d*\) P25\(", text, re.M)

    async with admin.session.get("/stats", params={"format": "json"}) as resp:
        doc = await resp.json()
    names = {s["name"]: s["value"] for s in doc["stats"] if "name" in s}
    assert names["cluster.inbound|8080.upstream_rq_total"] == 5
    (computed,) = doc["stats"][-1]["histograms"]["computed_quantiles"]
    assert computed["name"] == RQ_TIME
    assert computed["values"][2]["cumulative"] == pytest.approx(3.0, rel=0.01)

    for path, params in (("/stats/prometheus", {}), ("/stats", {"format": "prometheus"})):
        async with admin.session.get(path, params=params) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            prom = await resp.text()
        assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend.v1"} 12\n' in prom
        assert (
            'envoy_cluster_upstream_rq{envoy_response_code="503",'
            'envoy_cluster_name="backend.v1"} 2\n' in prom
        )
        assert (
            'envoy_vhost_route_upstream_rq_total{envoy_virtual_host="backend",'
            'envoy_route="items"} 12\n' in prom
        )
        assert 'envoy_cluster_upstream_rq_time_count{envoy_cluster_name="backend.v1"} 5\n' in prom


async def test_prometheus_endpoint_passes_promtool(admin: Admin) -> None:
    record_traffic(admin.surface)
    s = admin.surface.stats
    s.counter("cluster.backend.v1.upstream_rq_2xx").inc(10)
    s.counter("cluster.backend.v1.upstream_rq_retry").inc(1)
    s.gauge("cluster.backend.v1.circuit_breakers.default.rq_open").set(1)
    s.gauge("cluster.backend.v1.membership_total").set(2)
    s.counter("http.ingress.fault.aborts_injected").inc(1)
    s.histogram("cluster.backend.v2.upstream_rq_time")
    async with admin.session.get("/stats/prometheus") as resp:
        promtool_check(await resp.text())


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/stats", {}),
        ("/stats", {"format": "json"}),
        ("/stats/prometheus", {}),
        ("/stats/stream", {"interval": "1s"}),
    ],
)
async def test_bad_filter_is_400_with_the_reason(
    admin: Admin, path: str, params: dict[str, str]
) -> None:
    async with admin.session.get(path, params={**params, "filter": "upstream_(rq"}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert "invalid filter regex 'upstream_(rq'" in body["error"]
    assert "missing )" in body["error"]


async def test_filter_applies_to_every_format(admin: Admin) -> None:
    record_traffic(admin.surface)
    params = {"filter": r"inbound\|8080"}
    async with admin.session.get("/stats", params=params) as resp:
        assert (await resp.text()) == "cluster.inbound|8080.upstream_rq_total: 5\n"
    async with admin.session.get("/stats", params={**params, "format": "json"}) as resp:
        doc = await resp.json()
    assert doc["stats"][0] == {"name": "cluster.inbound|8080.upstream_rq_total", "value": 5}
    assert doc["stats"][-1]["histograms"]["computed_quantiles"] == []
    async with admin.session.get("/stats/prometheus", params=params) as resp:
        samples = [ln for ln in (await resp.text()).splitlines() if not ln.startswith("#")]
    assert samples == ['envoy_cluster_upstream_rq_total{envoy_cluster_name="inbound|8080"} 5']


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/stats", {"format": "xml"}),
        ("/stats", {"histogram_buckets": "weird"}),
        ("/clusters", {"format": "yaml"}),
    ],
)
async def test_unknown_options_are_400(admin: Admin, path: str, params: dict[str, str]) -> None:
    async with admin.session.get(path, params=params) as resp:
        assert resp.status == 400
        assert "unknown" in (await resp.json())["error"]


async def test_stats_interval_quantiles_come_from_the_periodic_flush(serve: Serve) -> None:
    admin = await serve(flush_interval=0.05)
    h = admin.surface.stats.histogram(RQ_TIME)
    h.record(1000.0)

    async def p100() -> tuple[float | None, float | None]:
        async with admin.session.get("/stats", params={"format": "json"}) as resp:
            doc = await resp.json()
        values = doc["stats"][-1]["histograms"]["computed_quantiles"][0]["values"]
        return values[-1]["interval"], values[-1]["cumulative"]

    async def interval_p100() -> float | None:
        return (await p100())[0]

    async def below_100() -> float | None:
        interval = await interval_p100()
        return interval if interval is not None and interval < 100 else None

    # After a flush that saw only the 1000 ms value, then one that saw only 2 ms values.
    first = await wait_until(interval_p100, "a flush with an interval p100")
    assert first == pytest.approx(1000.0, rel=0.01)
    for _ in range(4):
        h.record(2.0)
    second = await wait_until(below_100, "a flush that saw only the 2 ms values")
    assert second == pytest.approx(2.0, rel=0.01)
    _, cumulative = await p100()
    assert cumulative == pytest.approx(1000.0, rel=0.01)


async def test_a_failing_surface_answers_500_json(
    admin: Admin, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("outlier detector exploded")

    monkeypatch.setattr(admin.surface, "hosts", broken)
    async with admin.session.get("/clusters") as resp:
        assert resp.status == 500
        assert "internal error" in (await resp.json())["error"]
    assert "outlier detector exploded" in caplog.text


async def test_unknown_path_is_404_json(admin: Admin) -> None:
    async with admin.session.get("/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "Not Found"


# -- /stats/stream --------------------------------------------------------------------------


async def test_stream_yields_snapshots_with_increasing_timestamps_and_interval_counts(
    admin: Admin,
) -> None:
    h = admin.surface.stats.histogram(RQ_TIME)
    h.record(7.0)  # before the client connects: cumulative, never in its intervals
    async with admin.session.get("/stats/stream", params={"interval": "50ms"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = (await read_events(resp, 1))[0]
        for _ in range(5):
            h.record(10.0)
        events = [
            first,
            *await events_until(
                resp, lambda e: e["histograms"][RQ_TIME]["cumulative"]["count"] == 6
            ),
        ]
        events += await read_events(resp, 1)

    assert len(events) >= 3
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert [e["seq"] for e in events] == list(range(len(events)))
    hist = [e["histograms"][RQ_TIME] for e in events]
    assert hist[0]["interval"]["count"] == 0
    assert hist[0]["cumulative"]["count"] == 1
    # Each interval is exactly the growth of the cumulative count since the previous event...
    for before, after in itertools.pairwise(hist):
        assert (
            after["interval"]["count"]
            == after["cumulative"]["count"] - before["cumulative"]["count"]
        )
        assert sum(b[2] for b in after["interval"]["buckets"]) == after["interval"]["count"]
    # ...and all intervals together hold the five values recorded while streaming.
    assert sum(x["interval"]["count"] for x in hist) == 5
    busy = next(x["interval"] for x in hist if x["interval"]["count"])
    assert busy["quantiles"]["p50"] == pytest.approx(10.0, rel=0.01)
    assert set(busy["quantiles"]) == {"p50", "p90", "p95", "p99", "p99.9"}
    assert hist[-1]["interval"]["count"] == 0
    assert math.isclose(hist[-1]["cumulative"]["quantiles"]["p50"], 10.0, rel_tol=0.01)


async def test_two_stream_clients_get_independent_intervals(admin: Admin) -> None:
    stats = admin.surface.stats
    h = stats.histogram(RQ_TIME)
    counter = stats.counter("cluster.backend.v1.upstream_rq_total")
    async with (
        admin.session.get("/stats/stream", params={"interval": "50ms"}) as fast,
        admin.session.get("/stats/stream", params={"interval": "200ms"}) as slow,
    ):
        await read_events(fast, 1)
        await read_events(slow, 1)
        for _ in range(8):
            h.record(3.0)
            counter.inc()

        def caught_up(e: dict[str, Any]) -> bool:
            return bool(e["histograms"][RQ_TIME]["cumulative"]["count"] == 8)

        fast_events = await events_until(fast, caught_up)
        slow_events = await events_until(slow, caught_up)

    for events in (fast_events, slow_events):
        assert sum(e["histograms"][RQ_TIME]["interval"]["count"] for e in events) == 8
        assert (
            sum(e["counter_deltas"].get("cluster.backend.v1.upstream_rq_total", 0) for e in events)
            == 8
        )
        assert events[-1]["counters"]["cluster.backend.v1.upstream_rq_total"] == 8


async def test_stream_snapshot_carries_node_config_hosts_and_breakers(admin: Admin) -> None:
    admin.surface.host_views = [host("backend.v1", "10.0.0.4", ejected=True, rq_total=3)]
    admin.surface.breaker_views = [breaker("backend.v1", rq_open=True)]
    admin.surface.stats.gauge("cluster.backend.v1.upstream_rq_active").set(4)
    async with admin.session.get("/stats/stream", params={"interval": "100ms"}) as resp:
        (snap,) = await read_events(resp, 1)
    cfg = admin.surface.config
    assert snap["node"] == {
        "id": "frontend-0",
        "mesh": "demo",
        "service": "frontend",
        "subset": None,
    }
    assert snap["config"] == {"version": 1, "hash": cfg.content_hash()}
    assert snap["gauges"]["cluster.backend.v1.upstream_rq_active"] == 4
    (h,) = snap["hosts"]
    assert (h["cluster"], h["address"], h["port"], h["ejected"]) == (
        "backend.v1",
        "10.0.0.4",
        15006,
        True,
    )
    assert h["ejected_for"] == 30.0
    (b,) = snap["breakers"]
    assert b["rq_open"] is True
    assert b["max_requests"] == 20


async def test_stream_filter_limits_the_snapshot(admin: Admin) -> None:
    record_traffic(admin.surface)
    params = {"interval": "1s", "filter": "^cluster\\.inbound"}
    async with admin.session.get("/stats/stream", params=params) as resp:
        (snap,) = await read_events(resp, 1)
    assert list(snap["counters"]) == ["cluster.inbound|8080.upstream_rq_total"]
    assert snap["histograms"] == {}


async def test_stream_interval_buckets_merge_into_the_right_quantiles(admin: Admin) -> None:
    h = admin.surface.stats.histogram(RQ_TIME)
    async with admin.session.get("/stats/stream", params={"interval": "50ms"}) as resp:
        await read_events(resp, 1)
        for v in (1.0, 2.0, 3.0, 400.0):
            h.record(v)
        events = await events_until(
            resp, lambda e: e["histograms"][RQ_TIME]["cumulative"]["count"] == 4
        )
    merged = HistogramSnapshot.merge(
        HistogramSnapshot.from_buckets(e["histograms"][RQ_TIME]["interval"]["buckets"])
        for e in events
    )
    assert merged.count == 4
    assert merged.quantile(1.0) == pytest.approx(400.0, rel=0.01)
    assert merged.quantile(0.5) == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize("interval", ["10ms", "2m", "fast", "250", "-1s", "0s"])
async def test_stream_interval_out_of_bounds_or_malformed_is_400(
    admin: Admin, interval: str
) -> None:
    async with admin.session.get("/stats/stream", params={"interval": interval}) as resp:
        assert resp.status == 400
        assert "interval" in (await resp.json())["error"]


async def test_shutdown_ends_open_streams(serve: Serve) -> None:
    admin = await serve()
    async with admin.session.get("/stats/stream", params={"interval": "60s"}) as resp:
        await read_events(resp, 1)
        await asyncio.wait_for(admin.server.close(), WAIT)
        rest = await asyncio.wait_for(resp.content.read(), WAIT)
    assert rest == b""


# -- security -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/config", "/runtime_modify"])
async def test_state_changing_endpoints_refuse_get(admin: Admin, path: str) -> None:
    async with admin.session.get(path, headers=AUTH) as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST"
        assert (await resp.json())["error"] == "Method Not Allowed"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({TOKEN_HEADER: "wrong"}, 403), ({TOKEN_HEADER: TOKEN + "x"}, 403)],
)
@pytest.mark.parametrize("path", ["/config", "/runtime_modify?fault.http.abort.abort_percent=5"])
async def test_state_changing_endpoints_need_the_token(
    admin: Admin, path: str, headers: dict[str, str], status: int
) -> None:
    async with admin.session.post(path, json=config_document(2), headers=headers) as resp:
        assert resp.status == status
        assert TOKEN_HEADER in (await resp.json())["error"]
    assert admin.surface.applied == []
    assert admin.surface.overrides == {}


async def test_without_a_configured_token_nothing_changes_state(serve: Serve) -> None:
    admin = await serve(token="")
    async with admin.session.post(
        "/config", json=config_document(2), headers={TOKEN_HEADER: ""}
    ) as resp:
        assert resp.status == 403
    assert admin.surface.config.version == 1


async def test_body_over_the_limit_is_413(serve: Serve) -> None:
    limits = {"max_admin_body": 2048}
    admin = await serve(FakeSurface(make_config(limits=limits)))
    big = json.dumps(config_document(2, access_log="x" * 4096)).encode()
    async with admin.session.post("/config", data=big, headers=AUTH) as resp:
        assert resp.status == 413
        assert (await resp.json())["limit"] == 2048

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"k=" + b"v" * 510

    async with admin.session.post("/runtime_modify", data=chunked(), headers=AUTH) as resp:
        assert resp.status == 413
    assert admin.surface.config.version == 1
    assert admin.surface.overrides == {}


async def test_default_limit_is_one_mebibyte(admin: Admin) -> None:
    body = json.dumps(config_document(2, access_log="x" * (1024 * 1024))).encode()
    async with admin.session.post("/config", data=io.BytesIO(body), headers=AUTH) as resp:
        assert resp.status == 413
    small = json.dumps(config_document(2, access_log="x" * 1000)).encode()
    async with admin.session.post("/config", data=small, headers=AUTH) as resp:
        assert resp.status == 200


# -- POST /config ---------------------------------------------------------------------------


async def test_hot_swap_changes_version_and_keeps_counters(admin: Admin) -> None:
    record_traffic(admin.surface)
    old_hash = admin.surface.config.content_hash()
    new = config_document(2)
    new["clusters"][1]["circuit_breaker"]["max_requests"] = 99
    async with admin.session.post("/config", json=new, headers=AUTH) as resp:
        assert resp.status == 200
        answer = await resp.json()
    assert answer["version"] == 2
    assert answer["hash"] != old_hash
    assert answer["previous"] == {"version": 1, "hash": old_hash}
    assert answer["changed"] is True
    assert [c.version for c in admin.surface.applied] == [2]

    async with admin.session.get("/config_dump") as resp:
        dump = await resp.json()
    assert (dump["version"], dump["hash"]) == (2, answer["hash"])
    async with admin.session.get("/stats", params={"format": "json"}) as resp:
        stats = {s["name"]: s["value"] for s in (await resp.json())["stats"] if "name" in s}
    assert stats["cluster.backend.v1.upstream_rq_total"] == 12
    assert stats["config.update_success"] == 1
    async with admin.session.get("/clusters") as resp:
        assert "backend.v1::default_priority::max_requests::99" in (await resp.text())


async def test_rejected_config_lists_every_reason_and_keeps_the_old_one(admin: Admin) -> None:
    bad = config_document(2)
    bad["clusters"][0]["lb"] = "fastest"
    bad["clusters"][1]["endpoints"][0]["port"] = 70000
    bad["listeners"][0]["kind"] = "sideways"
    del bad["mesh"]
    async with admin.session.post("/config", json=bad, headers=AUTH) as resp:
        assert resp.status == 400
        answer = await resp.json()
    reasons = answer["reasons"]
    assert answer["error"] == "config rejected"
    assert len(reasons) == 4
    assert any(r.startswith("clusters.0.lb:") for r in reasons)
    assert any(r.startswith("clusters.1.endpoints.0.port:") for r in reasons)
    assert any(r.startswith("listeners.0.kind:") for r in reasons)
    assert any(r.startswith("mesh:") for r in reasons)
    assert answer["serving"]["version"] == 1
    assert admin.surface.applied == []

    async with admin.session.get("/config_dump") as resp:
        assert (await resp.json())["version"] == 1
    async with admin.session.get("/stats", params={"filter": "^config\\."}) as resp:
        assert (await resp.text()) == "config.update_rejected: 1\n"


async def test_reference_problems_are_rejected_too(admin: Admin) -> None:
    bad = config_document(2)
    bad["virtual_hosts"][0]["routes"][0]["clusters"][0]["cluster"] = "backend.v9"
    async with admin.session.post("/config", json=bad, headers=AUTH) as resp:
        assert resp.status == 400
        (reason,) = (await resp.json())["reasons"]
    assert "unknown cluster 'backend.v9'" in reason


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[1, 2]"])
async def test_non_config_bodies_are_rejected(admin: Admin, body: bytes) -> None:
    async with admin.session.post("/config", data=body, headers=AUTH) as resp:
        assert resp.status == 400
        assert (await resp.json())["reasons"]
    assert admin.surface.stats.counter("config.update_rejected").value == 1
    assert admin.surface.config.version == 1


async def test_a_config_the_data_plane_cannot_apply_is_rejected(admin: Admin) -> None:
    admin.surface.apply_error = OSError(98, "Address already in use")
    async with admin.session.post("/config", json=config_document(2), headers=AUTH) as resp:
        assert resp.status == 400
        (reason,) = (await resp.json())["reasons"]
    assert "Address already in use" in reason
    assert admin.surface.config.version == 1
    assert admin.surface.stats.counter("config.update_rejected").value == 1
    assert admin.surface.stats.counter("config.update_success").value == 0


# -- runtime --------------------------------------------------------------------------------


async def test_runtime_modify_takes_query_and_form_and_runtime_shows_them(admin: Admin) -> None:
    async with admin.session.post(
        "/runtime_modify?fault.http.abort.abort_percent=50", headers=AUTH
    ) as resp:
        assert resp.status == 200
        assert (await resp.text()).strip() == "OK"
    async with admin.session.post(
        "/runtime_modify", data={"fault.http.abort.http_status": "503", "x.y": "1"}, headers=AUTH
    ) as resp:
        assert resp.status == 200
    async with admin.session.get("/runtime") as resp:
        entries = (await resp.json())["entries"]
    assert entries["fault.http.abort.abort_percent"]["final_value"] == "50"
    assert entries["fault.http.abort.http_status"]["final_value"] == "503"

    # An empty value removes the override, as Envoy's admin layer does.
    async with admin.session.post("/runtime_modify?x.y=", headers=AUTH) as resp:
        assert resp.status == 200
    async with admin.session.get("/runtime") as resp:
        assert "x.y" not in (await resp.json())["entries"]


@pytest.mark.parametrize("query", ["", "?bad%20key=1"])
async def test_runtime_modify_refuses_nothing_or_bad_keys(admin: Admin, query: str) -> None:
    async with admin.session.post(f"/runtime_modify{query}", headers=AUTH) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert ("usage" in error) if not query else ("bad runtime key" in error)
    assert admin.surface.overrides == {}
