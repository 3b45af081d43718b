"""Reading /spans from sidecars over real HTTP on loopback: cursors, 404s, wrapped rings,
restarted sidecars, bad answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.io import spans as spans_module
from meshdev.telemetry.io.spans import SpanReader, collect
from meshdev.testing.sample_spans import SpansServer, request_spans, split_by_node, trace_id
from tests.support import wait_until


@pytest.fixture
async def server() -> AsyncIterator[SpansServer]:
    by_node = split_by_node(request_spans(1) + request_spans(2, status=503, flags="UO"))
    srv = SpansServer(by_node, missing=["envoy"])
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as s:
        yield s


async def test_collect_joins_every_sidecars_spans_and_skips_one_without_spans(
    server: SpansServer,
) -> None:
    store, outcomes = await collect(server.targets())
    assert {n: c.outcome for n, c in outcomes.items()} == {
        "ingress": "ok",
        "frontend-0": "ok",
        "backend-v1-0": "ok",
        "envoy": "missing",
    }
    ok = store.get(trace_id(1))
    assert (
        ok is not None
        and ok.span_count == 5
        and ok.services
        == (
            "ingress",
            "frontend",
            "backend",
        )
    )
    failed = store.get(trace_id(2))
    assert failed is not None and failed.failed and failed.flags == ("UO",)
    # Each span remembers which sidecar reported it.
    assert {s.node for s in ok.spans()} == {"ingress", "frontend-0", "backend-v1-0"}


async def test_each_poll_asks_for_what_follows_the_last_answer(
    server: SpansServer, session: aiohttp.ClientSession
) -> None:
    reader = SpanReader(TraceStore())
    await reader.poll(session, server.targets())
    assert reader.outcomes() == {"ok": 3, "missing": 1, "error": 0}
    assert server.asked["ingress"] == [0, 4]  # the second answer says nothing is newer
    server.add("ingress", request_spans(3)[:2])
    await reader.poll(session, server.targets())
    assert server.asked["ingress"] == [0, 4, 4, 6]
    assert reader.cursors["ingress"].since == 6
    assert len(reader.store) == 3
    # The 404 is not asked again at every poll.
    assert "envoy" not in server.asked
    assert reader.cursors["envoy"].outcome == "missing"


async def test_a_missing_endpoint_is_asked_again_later(
    server: SpansServer, session: aiohttp.ClientSession
) -> None:
    now = [100.0]
    reader = SpanReader(TraceStore(), clock=lambda: now[0])
    targets = [("envoy", server.admin_url("envoy"))]
    await reader.poll(session, targets)
    assert reader.cursors["envoy"].outcome == "missing"
    server.missing.discard("envoy")
    server.add("envoy", request_spans(9)[:1])  # a newer sidecar took its place
    now[0] += 1
    await reader.poll(session, targets)
    assert len(reader.store) == 0
    now[0] += spans_module.RECHECK_MISSING
    await reader.poll(session, targets)
    assert len(reader.store) == 1
    assert str(reader.cursors["envoy"].outcome) == "ok"


async def test_a_wrapped_ring_counts_what_was_lost_and_a_restart_rereads(
    server: SpansServer, session: aiohttp.ClientSession
) -> None:
    reader = SpanReader(TraceStore())
    targets = [("ingress", server.admin_url("ingress"))]
    await reader.poll(session, targets)
    assert reader.cursors["ingress"].since == 4
    server.add("ingress", [s for n in (3, 4, 5) for s in request_spans(n)[:2]])
    server.wrap("ingress", keep=2)  # only trace 5's two ingress spans are left
    await reader.poll(session, targets)
    cursor = reader.cursors["ingress"]
    assert (cursor.lost, cursor.since) == (4, 10)
    assert reader.store.get(trace_id(5)) is not None
    assert reader.store.get(trace_id(4)) is None
    # The sidecar restarts: a fresh ring numbered from 0 that holds one new span.
    server.rings["ingress"] = request_spans(6)[:1]
    server.firsts["ingress"] = 0
    await reader.poll(session, targets)  # told it restarted, and read again at once
    assert server.asked["ingress"][-3:] == [10, 0, 1]
    assert reader.store.get(trace_id(6)) is not None
    assert reader.cursors["ingress"].since == 1


async def test_unreachable_and_bad_answers_are_errors_not_crashes(
    session: aiohttp.ClientSession,
) -> None:
    from aiohttp import web

    async def bad(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind == "json":
            return web.Response(text="{not json")
        if kind == "shape":
            return web.json_response({"spans": "many"})
        if kind == "spans":
            since = int(request.query["since"])
            spans = [1, {}, None][since:]
            return web.json_response(
                {"node": "x", "first": since, "next": 3, "dropped": 2, "spans": spans}
            )
        return web.Response(status=500)

    app = web.Application()
    app.router.add_get("/{kind}/spans", bad)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        reader = SpanReader(TraceStore())
        cursors = await reader.poll(
            session,
            [
                ("json", f"{url}/json"),
                ("shape", f"{url}/shape"),
                ("status", f"{url}/status"),
                ("spans", f"{url}/spans"),
                ("down", "http://127.0.0.1:9"),
            ],
        )
        assert {n: c.outcome for n, c in cursors.items()} == {
            "json": "error",
            "shape": "error",
            "status": "error",
            "spans": "ok",
            "down": "error",
        }
        assert "HTTP 500" in cursors["status"].error
        assert cursors["json"].error.startswith("bad JSON from /spans: ")
        assert "expected first, next and spans" in cursors["shape"].error
        assert cursors["down"].error.startswith("cannot connect")
        assert reader.bad_spans == 3 and cursors["spans"].dropped == 2
    finally:
        await runner.cleanup()


async def test_run_polls_the_targets_of_the_moment_and_says_when_something_is_new(
    server: SpansServer,
) -> None:
    reader = SpanReader(TraceStore(), every=0.02)
    targets: list[tuple[str, str]] = []
    news: list[int] = []
    task = asyncio.create_task(reader.run(lambda: targets, lambda: news.append(len(reader.store))))
    try:
        await asyncio.sleep(0.1)
        assert news == [] and reader.polls == 0  # nothing to watch yet
        targets.extend(server.targets())
        await wait_until(lambda: news == [2], "the first spans")
        server.add("backend-v1-0", request_spans(3)[-1:])
        await wait_until(lambda: news == [2, 3], "the next trace")
        polls = reader.polls
        await wait_until(lambda: reader.polls > polls + 2, "more polls")
        assert news == [2, 3]  # nothing new: no news
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_paged_answer_is_read_to_its_end_in_one_poll(
    server: SpansServer, session: aiohttp.ClientSession
) -> None:
    server.page = 3
    server.add("frontend-0", [s for n in range(3, 9) for s in request_spans(n)[2:4]])
    reader = SpanReader(TraceStore())
    await reader.poll(session, [("frontend-0", server.admin_url("frontend-0"))])
    ring = len(server.rings["frontend-0"])  # 4 + 12
    assert reader.cursors["frontend-0"].since == ring
    assert server.asked["frontend-0"] == [0, 3, 6, 9, 12, 15, 16]
    assert reader.store.get(trace_id(8)) is not None
    # A sidecar that never stops paging cannot hold a poll.
    server.add("frontend-0", [s for n in range(9, 40) for s in request_spans(n)[2:4]])
    await reader.poll(session, [("frontend-0", server.admin_url("frontend-0"))])
    assert len(server.asked["frontend-0"]) == 7 + spans_module.MAX_PAGES


async def test_a_busy_sidecar_is_asked_again_before_the_next_full_poll(
    server: SpansServer,
) -> None:
    # Polls a second apart, quick ones every 0.05 s: within 0.6 s only a sidecar that answered
    # many spans is asked more than once.
    reader = SpanReader(TraceStore(), every=1.0, quick_every=0.05)
    server.add(
        "frontend-0", [s for n in range(3, 3 + spans_module.BUSY) for s in request_spans(n)[2:4]]
    )
    targets = server.targets()
    task = asyncio.create_task(reader.run(lambda: targets, lambda: None))
    try:
        await wait_until(lambda: len(server.asked.get("frontend-0", [])) >= 4, "quick polls")
        server.add("frontend-0", request_spans(99)[2:4])
        await wait_until(lambda: reader.store.get(trace_id(99)) is not None, "the newest trace")
        assert reader.polls == 1  # no full poll yet: the quick ones found it
        quiet = [n for n in server.rings if n != "frontend-0"]
        # The quiet ones wait for the next full poll: asked once, and once more for the rest.
        assert quiet and all(server.asked[n] == [0, len(server.rings[n])] for n in quiet)
        asked = server.asked["frontend-0"]
        assert asked[:2] == [0, len(server.rings["frontend-0"]) - 2]
        # Nothing to watch any more (tracing turned off): nothing is asked, busy or not.
        targets.clear()
        await wait_until(lambda: reader.cursors == {}, "the next full poll's turn", timeout=3)
        before = len(server.asked["frontend-0"])
        await asyncio.sleep(0.3)
        assert len(server.asked["frontend-0"]) == before
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
