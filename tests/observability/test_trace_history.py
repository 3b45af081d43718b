"""The session's trace history over real HTTP on loopback: it reads sidecar-shaped /spans
servers, keeps what their rings forget, and serves it (with the session's token) in the shape a
sidecar's GET /spans has, which the same reader reads back with every span's node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from meshdev.common.trace_wire import RELAY_NODE
from meshdev.observability import trace_history
from meshdev.observability.trace_history import TraceHistory
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.io.spans import collect
from meshdev.testing.sample_spans import SpansServer, request_spans, split_by_node, trace_id
from tests.support import wait_until

TOKEN = "s3cret"


@pytest.fixture
async def sidecars() -> AsyncIterator[SpansServer]:
    spans = request_spans(1) + request_spans(2, status=503, flags="UO")
    srv = SpansServer(split_by_node(spans))
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def history(sidecars: SpansServer) -> AsyncIterator[TraceHistory]:
    said: list[str] = []
    hist = TraceHistory(sidecars.targets, TOKEN, said.append)
    hist.reader.every = 0.05
    await hist.start()
    yield hist
    await hist.stop()
    assert said == []  # the reader never failed


def nodes_by_span(store: TraceStore) -> dict[tuple[str, str, str], str]:
    return {s.key: s.node for t in store.traces() for s in t.spans()}


async def test_it_serves_what_it_read_with_each_spans_sidecar(
    sidecars: SpansServer, history: TraceHistory
) -> None:
    await wait_until(lambda: len(history.store) == 2, "both traces read")
    assert history.url is not None and history.url.startswith("http://127.0.0.1:")
    relayed, outcomes = await collect([(RELAY_NODE, history.url)], token=TOKEN)
    assert outcomes[RELAY_NODE].outcome == "ok"
    direct, _ = await collect(sidecars.targets())
    assert nodes_by_span(relayed) == nodes_by_span(direct)
    assert set(nodes_by_span(relayed).values()) == set(sidecars.rings)
    for n in (1, 2):
        a, b = relayed.get(trace_id(n)), direct.get(trace_id(n))
        assert a is not None and b is not None
        assert a.rows() == b.rows() and a.failed == b.failed


async def test_it_keeps_the_traces_the_sidecars_rings_have_forgotten(
    sidecars: SpansServer, history: TraceHistory
) -> None:
    await wait_until(lambda: len(history.store) == 2, "both traces read")
    for node in sidecars.rings:
        sidecars.wrap(node, keep=0)
    sidecars.add("frontend-0", request_spans(3)[2:4])
    await wait_until(lambda: len(history.store) == 3, "the newest trace")
    direct, _ = await collect(sidecars.targets())
    assert [t.trace_id for t in direct.traces()] == [trace_id(3)]
    assert history.url is not None
    relayed, _ = await collect([(RELAY_NODE, history.url)], token=TOKEN)
    kept = relayed.get(trace_id(1))
    assert kept is not None and kept.span_count == 5 and kept.orphans == 0
    assert {t.trace_id for t in relayed.traces()} == {trace_id(n) for n in (1, 2, 3)}


async def test_a_reader_gets_only_the_traces_changed_since_its_last_answer(
    sidecars: SpansServer, history: TraceHistory
) -> None:
    await wait_until(lambda: len(history.store) == 2, "both traces read")
    assert history.url is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(trust_env=False) as http:

        async def get(since: int, auth: dict[str, str] = headers) -> tuple[int, dict[str, object]]:
            url = f"{history.url}/spans?since={since}"
            async with http.get(url, headers=auth) as resp:
                return resp.status, await resp.json()

        status, everything = await get(0)
        assert status == 200 and everything["node"] == RELAY_NODE
        mark = everything["next"]
        assert isinstance(mark, int) and mark == history.store.version
        assert everything["first"] == 0
        assert len(everything["spans"]) == history.store.span_count  # type: ignore[arg-type]
        status, nothing = await get(mark)
        assert (nothing["first"], nothing["next"], nothing["spans"]) == (mark, mark, [])
        sidecars.add("backend-v1-0", request_spans(1)[-1:])  # no news: read already
        sidecars.add("backend-v1-0", request_spans(7)[-1:])
        await wait_until(lambda: history.store.get(trace_id(7)) is not None, "trace 7")
        _, news = await get(mark)
        spans = news["spans"]
        assert isinstance(spans, list) and [s["traceId"] for s in spans] == [trace_id(7)]
        assert (await get(0, {}))[0] == 401
        assert (await get(0, {"Authorization": "Bearer guess"}))[0] == 401
        async with http.get(f"{history.url}/spans?since=-1", headers=headers) as resp:
            assert resp.status == 400


async def test_a_dashboard_in_the_same_process_is_told_of_new_spans(
    sidecars: SpansServer, history: TraceHistory
) -> None:
    news: list[int] = []
    feed = asyncio.create_task(history.run(list, lambda: news.append(len(history.store))))
    try:
        await wait_until(lambda: news and news[-1] == 2, "the first spans")
        sidecars.add("backend-v1-0", request_spans(5)[-1:])
        await wait_until(lambda: news[-1] == 3, "the next trace")
        assert history.outcomes()["ok"] == len(sidecars.rings)
    finally:
        feed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await feed
    assert history._listeners == []


async def test_a_big_history_is_served_in_pages_and_read_to_its_end(
    sidecars: SpansServer, history: TraceHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace_history, "PAGE_SPANS", 6)
    sidecars.add("frontend-0", [s for n in range(3, 23) for s in request_spans(n)[2:4]])
    await wait_until(lambda: len(history.store) == 22, "every trace read")
    assert history.url is not None
    pages: list[int] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(trust_env=False) as http:
        since, seen = 0, 0
        while True:
            async with http.get(f"{history.url}/spans?since={since}", headers=headers) as resp:
                doc = await resp.json()
            if not doc["spans"]:
                break
            pages.append(len(doc["spans"]))
            seen += len(doc["spans"])
            assert doc["next"] > since
            since = doc["next"]
        assert since == history.store.version
        async with http.get(f"{history.url}/spans?since=%C2%B2", headers=headers) as resp:
            assert resp.status == 400  # "²" is a digit to str.isdigit, not to int()
    assert len(pages) > 1 and seen >= history.store.span_count
    relayed, _ = await collect([(RELAY_NODE, history.url)], token=TOKEN)
    assert len(relayed) == 22 and relayed.span_count == history.store.span_count


async def test_a_second_start_finds_it_running(
    sidecars: SpansServer, history: TraceHistory
) -> None:
    url = history.url
    tasks = len(asyncio.all_tasks())
    assert await history.start() == url
    assert len(asyncio.all_tasks()) == tasks  # no second poller
    await history.stop()
    assert history.url is None
    assert all(t.get_name() != "trace history" for t in asyncio.all_tasks())
