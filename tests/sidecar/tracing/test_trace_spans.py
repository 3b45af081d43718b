"""Spans through real sidecars: a CLIENT span per try on an outbound listener, a SERVER span on
an inbound one, the gateway's SERVER span over its tries, parented across hops through the
headers; GET /spans, the tracing stats, a save that changes tracing, and exporters posting to
a real collector on loopback."""

from __future__ import annotations

import json
from typing import Any

from meshdev.common import trace_wire as tw
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import (
    Upstream,
    client,
    dead_endpoint,
    endpoint,
    get,
    listener_url,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.sidecar.proxy.wsapp import inbound_to, outbound_to, ws_app
from tests.sidecar.tracing.collector import collector, wait_for
from tests.support import LOCALHOST, free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_SPAN = "00f067aa0ba902b7"


def traced(cfg: SidecarConfig, **tracing: Any) -> SidecarConfig:
    data = cfg.model_dump(mode="json")
    data["tracing"] = {"sampling": 100, **tracing}
    data["service"] = data.get("service") or "frontend"
    return SidecarConfig.model_validate(data)


def spans(sc: Sidecar, since: int = 0) -> list[tw.ZipkinSpan]:
    return sc.plane.tracer.spans(since)["spans"]


async def test_outbound_makes_a_client_span_per_try_under_the_apps_span() -> None:
    async with upstreams("a") as (a,):
        a.script.extend(["503"])
        cfg = traced(simple_config([a], route={"retries": {"attempts": 2, "retry_on": ["5xx"]}}))
        async with sidecar(cfg) as sc, client() as s:
            parent = {"traceparent": f"00-{TRACE}-{APP_SPAN}-01", "x-request-id": "rid-1"}
            status, _, _ = await get(s, listener_url(sc), "/items?q=1", headers=parent)
            assert status == 200
            first, second = spans(sc)
    for span, n, code in ((first, 1, "503"), (second, 2, "200")):
        assert span["kind"] == "CLIENT"
        assert span["traceId"] == TRACE and span.get("parentId") == APP_SPAN
        assert span["name"] == "backend/main"
        assert span["localEndpoint"] == {"serviceName": "frontend"}
        assert span["remoteEndpoint"] == {
            "serviceName": "backend",
            "ipv4": LOCALHOST,
            "port": a.port,
        }
        tags = span["tags"]
        assert tags[tw.TAG_ATTEMPT] == str(n) and tags[tw.TAG_STATUS] == code
        assert tags[tw.TAG_CLUSTER] == "backend" and tags[tw.TAG_ROUTE] == "main"
        assert tags[tw.TAG_UPSTREAM] == f"{LOCALHOST}:{a.port}"
        assert tags[tw.TAG_REQUEST_ID] == "rid-1"
        assert tags[tw.TAG_URL] == "http://backend/items?q=1" and tags[tw.TAG_METHOD] == "GET"
        assert tags[tw.TAG_NODE] == "test-node" and tags[tw.TAG_COMPONENT] == "proxy"
        assert span["duration"] >= 1 and span["timestamp"] > 1_600_000_000_000_000
    assert first["tags"][tw.TAG_ERROR] == "true" and tw.TAG_ERROR not in second["tags"]
    assert first["id"] != second["id"]
    assert first["timestamp"] + first["duration"] <= second["timestamp"] + 1000
    # Each try went upstream as its own span, the app's span as its parent: W3C and B3.
    for seen, span in zip(a.seen_headers, (first, second), strict=True):
        assert seen["traceparent"] == f"00-{TRACE}-{span['id']}-01"
        assert seen["b3"] == f"{TRACE}-{span['id']}-1-{APP_SPAN}"
        assert not any(k.startswith("x-b3-") for k in seen)


async def test_a_caller_using_b3_multi_headers_gets_them_replaced_per_try() -> None:
    async with upstreams("a") as (a,):
        a.script.extend(["503"])
        cfg = traced(simple_config([a], route={"retries": {"attempts": 1, "retry_on": ["5xx"]}}))
        async with sidecar(cfg) as sc, client() as s:
            multi = {"x-b3-traceid": TRACE, "x-b3-spanid": APP_SPAN, "x-b3-sampled": "1"}
            await get(s, listener_url(sc), "/", headers=multi)
            first, second = spans(sc)
    for seen, span in zip(a.seen_headers, (first, second), strict=True):
        assert seen["x-b3-traceid"] == TRACE and seen["x-b3-sampled"] == "1"
        assert seen["x-b3-spanid"] == span["id"] and seen["x-b3-parentspanid"] == APP_SPAN
        assert seen["traceparent"] == f"00-{TRACE}-{span['id']}-01"


async def test_a_request_with_no_context_starts_a_trace() -> None:
    async with upstreams("a") as (a,), sidecar(traced(simple_config([a]))) as sc, client() as s:
        await get(s, listener_url(sc), "/")
        [span] = spans(sc)
    assert "parentId" not in span and len(span["traceId"]) == 32
    seen = a.seen_headers[0]
    assert seen["traceparent"] == f"00-{span['traceId']}-{span['id']}-01"
    assert seen["x-request-id"] == span["tags"][tw.TAG_REQUEST_ID]


async def test_connect_failures_and_local_answers_have_their_flags() -> None:
    async with upstreams("a") as (a,):
        cfg = simple_config(
            [a], route={"retries": {"attempts": 1, "retry_on": ["connect-failure"]}}
        )
        data = cfg.model_dump(mode="json")
        data["clusters"][0]["endpoints"] = [dead_endpoint()]
        async with sidecar(traced(SidecarConfig.model_validate(data))) as sc, client() as s:
            status, _, _ = await get(s, listener_url(sc), "/")
            assert status == 503
            tries = spans(sc)
            status, _, _ = await get(s, listener_url(sc), "/", host="nowhere")
            assert status == 404
            no_route = spans(sc, since=2)
    assert [t["tags"][tw.TAG_FLAGS] for t in tries] == ["UF", "UF"]
    assert all(t["tags"][tw.TAG_ERROR] == "true" and tw.TAG_STATUS not in t["tags"] for t in tries)
    [nr] = no_route
    assert nr["kind"] == "CLIENT" and nr["name"] == "no_route"
    assert nr["tags"][tw.TAG_FLAGS] == "NR" and nr["tags"][tw.TAG_STATUS] == "404"


def inbound_config(app: Upstream, **tracing: Any) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "mesh": "test",
            "node": "backend-0",
            "service": "backend",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": [
                {
                    "name": "inbound",
                    "kind": "inbound",
                    "address": LOCALHOST,
                    "port": free_port(),
                    "cluster": "inbound|app",
                }
            ],
            "clusters": [{"name": "inbound|app", "endpoints": [endpoint(app)]}],
            "access_log": "off",
            "tracing": {"sampling": 100, **tracing},
        }
    )


def ingress_config(target: Sidecar, **tracing: Any) -> SidecarConfig:
    inbound = target.config.listeners[0]
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "mesh": "test",
            "node": "ingress",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": [
                {
                    "name": "ingress",
                    "kind": "ingress",
                    "address": LOCALHOST,
                    "port": free_port(),
                    "routes": [
                        {"name": "web", "match": {"prefix": "/"}, "virtual_host": "backend"}
                    ],
                }
            ],
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["backend"],
                    "routes": [
                        {"name": "default", "clusters": [{"cluster": "backend", "weight": 1}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "endpoints": [
                        {"address": inbound.address, "port": inbound.port, "pod": "backend-0"}
                    ],
                }
            ],
            "access_log": "off",
            "tracing": {"sampling": 100, **tracing},
        }
    )


async def test_gateway_and_inbound_hops_nest_in_one_trace() -> None:
    async with (
        upstreams("app") as (app,),
        sidecar(inbound_config(app)) as back,
        sidecar(ingress_config(back)) as gw,
        client() as s,
    ):
        status, _, _ = await get(s, listener_url(gw, "ingress"), "/hello")
        assert status == 200
        await wait_for(lambda: len(spans(gw)) == 2)
        gw_server, gw_client = sorted(spans(gw), key=lambda x: x["kind"] != "SERVER")
        [inbound] = spans(back)
    assert gw_server["kind"] == "SERVER" and "parentId" not in gw_server
    assert gw_server["localEndpoint"] == {"serviceName": "ingress"}
    assert gw_server["name"] == "backend/default"
    assert gw_server["tags"][tw.TAG_PEER] == LOCALHOST
    assert gw_client["kind"] == "CLIENT" and gw_client["parentId"] == gw_server["id"]
    assert gw_client["tags"][tw.TAG_ATTEMPT] == "1"
    assert inbound["kind"] == "SERVER" and inbound["parentId"] == gw_client["id"]
    assert inbound["name"] == "backend/inbound"
    assert inbound["localEndpoint"] == {"serviceName": "backend"}
    assert inbound["tags"][tw.TAG_CLUSTER] == "inbound|app"
    assert inbound["tags"][tw.TAG_UPSTREAM] == f"{LOCALHOST}:{app.port}"
    assert len({gw_server["traceId"], gw_client["traceId"], inbound["traceId"]}) == 1
    # Nested in time: each child within its parent (µs; the same clock, one host).
    for parent, child in ((gw_server, gw_client), (gw_client, inbound)):
        assert parent["timestamp"] <= child["timestamp"] + 1000
        end = child["timestamp"] + child["duration"]
        assert end <= parent["timestamp"] + parent["duration"] + 1000
    # The app gets the inbound SERVER span as its parent, so its own calls hang under it.
    seen = app.seen_headers[0]
    assert seen["b3"] == f"{inbound['traceId']}-{inbound['id']}-1-{gw_client['id']}"


async def test_get_spans_on_the_admin_api_and_the_stats() -> None:
    async with upstreams("a") as (a,), sidecar(traced(simple_config([a]))) as sc, client() as s:
        for _ in range(3):
            await get(s, listener_url(sc), "/")
        admin = f"http://{LOCALHOST}:{sc.admin_port}"
        async with s.get(f"{admin}{tw.SPANS_PATH}?since=1") as resp:
            assert resp.status == 200
            answer: tw.SpansAnswer = json.loads(await resp.read())
        async with s.get(f"{admin}{tw.SPANS_PATH}?since=x") as resp:
            assert resp.status == 400
        async with s.get(f"{admin}/stats/prometheus") as resp:
            prom = await resp.text()
        assert stat(sc, "http.outbound.tracing.random_sampling") == 3
        assert stat(sc, "http.outbound.tracing.not_traceable") == 0
    assert (answer["node"], answer["first"], answer["next"], answer["dropped"]) == (
        "test-node",
        1,
        3,
        0,
    )
    assert [sp["kind"] for sp in answer["spans"]] == ["CLIENT", "CLIENT"]
    assert 'envoy_http_tracing_random_sampling{envoy_http_conn_manager_prefix="outbound"} 3' in prom


async def test_sampling_zero_makes_no_spans_and_touches_no_header() -> None:
    async with upstreams("a") as (a,):
        off = traced(simple_config([a]), sampling=0)
        async with sidecar(off) as sc, client() as s:
            await get(s, listener_url(sc), "/")
            assert spans(sc) == []
            assert stat(sc, "http.outbound.tracing.not_traceable") == 0
    assert not any(k.startswith(("x-b3", "traceparent")) for k in a.seen_headers[0])


async def test_a_save_that_changes_tracing_applies_at_once() -> None:
    async with upstreams("a") as (a,), collector() as col:
        cfg = traced(simple_config([a]), sampling=0)
        async with sidecar(cfg) as sc, client() as s:
            await get(s, listener_url(sc), "/")
            assert spans(sc) == []
            data = cfg.model_dump(mode="json")
            data["version"] = 2
            data["tracing"] = {"sampling": 100, "zipkin": col.zipkin_url}
            admin = f"http://{LOCALHOST}:{sc.admin_port}"
            async with s.post(
                f"{admin}/config", json=data, headers={"x-meshdev-token": "test-token"}
            ) as resp:
                assert resp.status == 200, await resp.text()
            await get(s, listener_url(sc), "/")
            [kept] = spans(sc)
            await wait_for(lambda: len(col.zipkin_spans()) == 1)
            # The collector holds the report before its answer reaches the sidecar, which
            # counts a report as sent at that answer.
            await wait_for(lambda: stat(sc, "tracing.zipkin.reports_sent") == 1)
            assert stat(sc, "tracing.zipkin.spans_sent") == 1
    # The collector got the very span the ring keeps.
    assert col.zipkin_spans() == [kept]


async def test_malformed_context_is_replaced_not_sent_beside_ours() -> None:
    async with upstreams("a") as (a,), sidecar(traced(simple_config([a]))) as sc, client() as s:
        bad = {"traceparent": "00-nothex-00f067aa0ba902b7-01", "x-b3-spanid": "zz"}
        status, _, _ = await get(s, listener_url(sc), "/", headers=bad)
        assert status == 200
        [span] = spans(sc)
    seen = a.seen_headers[0]
    assert "parentId" not in span  # nothing valid came: a new trace
    assert seen["traceparent"] == f"00-{span['traceId']}-{span['id']}-01"
    # The malformed x-b3-spanid is gone, ours in its place.
    assert seen["x-b3-spanid"] == span["id"]


async def test_an_unsampled_first_hop_tells_the_next_hops() -> None:
    async with upstreams("a") as (a,):
        cfg = traced(simple_config([a]), sampling=0.001)
        async with sidecar(cfg) as sc, client() as s:
            for _ in range(20):
                await get(s, listener_url(sc), "/")
            sampled = len(spans(sc))
            not_traced = stat(sc, "http.outbound.tracing.not_traceable")
    unsampled = [h for h in a.seen_headers if "traceparent" not in h]
    assert sampled + not_traced == 20 and len(unsampled) == not_traced
    assert all(h["x-b3-sampled"] == "0" for h in unsampled)


async def test_a_websocket_upgrade_is_traced_through_two_hops() -> None:
    async with ws_app() as app:
        inner_cfg = traced(inbound_to(app.port))
        inner_port = next(lst.port for lst in inner_cfg.listeners if lst.name == "inbound")
        outer_cfg = traced(outbound_to(inner_port))
        async with (
            sidecar(inner_cfg) as inner,
            sidecar(outer_cfg) as outer,
            client() as s,
            s.ws_connect(listener_url(outer) + "/ws", headers={"Host": "backend"}) as ws,
        ):
            await ws.send_str("hello")
            msg = await ws.receive()
            assert msg.data == "hello"
            # The try's span ends at the 101, while the stream goes on.
            [attempt] = spans(outer)
            await ws.close()
            await wait_for(lambda: len(spans(inner)) == 1)
            [server] = spans(inner)
    assert attempt["kind"] == "CLIENT" and attempt["tags"][tw.TAG_STATUS] == "101"
    assert server["kind"] == "SERVER" and server["parentId"] == attempt["id"]
    assert server["tags"][tw.TAG_STATUS] == "101"
