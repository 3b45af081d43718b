"""The Traces view's feed of a watch of a session run elsewhere: the session's trace history
(a real TraceHistory on loopback, found through a state file as `up` writes it) while a live
`up` serves one, the sidecars' own rings otherwise, and back again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from meshdev.observability.trace_history import TraceHistory
from meshdev.runtime.paths import STATE_FILE, mesh_dir, trace_relay
from meshdev.testing.sample_spans import SpansServer, request_spans, split_by_node, trace_id
from meshdev.tui.session_traces import SessionTraces
from tests.support import wait_until, wait_until_sync

MESH = "traced"


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHDEV_STATE_DIR", str(tmp_path / "state"))
    return mesh_dir(MESH)


@pytest.fixture
def up_pid() -> Iterator[int]:
    """A live process that passes for the mesh's `meshdev up` (its command line says so)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "meshdev"])
    # Until it has exec'd, its command line is this test's, which does not say so.
    wait_until_sync(
        lambda: b"meshdev" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), "the exec"
    )
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
async def sidecars() -> AsyncIterator[SpansServer]:
    srv = SpansServer(split_by_node(request_spans(1)))
    await srv.start()
    yield srv
    await srv.stop()


def write_state(where: Path, pid: int, url: str | None, token: str = "t1") -> None:
    state = {"mesh": MESH, "pid": pid, "token": token, "traces_url": url, "pods": []}
    (where / STATE_FILE).write_text(json.dumps(state))


async def test_the_feed_reads_the_sessions_history_while_its_up_serves_one(
    state_dir: Path, up_pid: int, sidecars: SpansServer
) -> None:
    history = TraceHistory(sidecars.targets, "t1")
    history.reader.every = 0.05
    feed = SessionTraces(MESH, recheck_every=0.2)
    feed._direct.every = 0.05
    task: asyncio.Task[None] | None = None
    try:
        # Trace 1 is only in the history: the rings forgot it before the feed began.
        await history.start()
        await wait_until(lambda: len(history.store) == 1, "the history's first trace")
        for node in sidecars.rings:
            sidecars.wrap(node, keep=0)
        sidecars.add("frontend-0", request_spans(2)[2:4])
        task = asyncio.create_task(feed.run(sidecars.targets, lambda: None))
        # No `up` in the state: the rings, which hold trace 2 only.
        await wait_until(lambda: feed.store.get(trace_id(2)) is not None, "the rings' trace")
        assert not feed.relayed and feed.store.get(trace_id(1)) is None
        assert history.url is not None
        write_state(state_dir, up_pid, history.url)
        assert trace_relay(MESH) == (history.url, "t1")
        await wait_until(lambda: feed.store.get(trace_id(1)) is not None, "the history's trace")
        assert feed.relayed and feed.outcomes()["ok"] == 1
        whole = feed.store.get(trace_id(1))
        assert whole is not None and whole.span_count == 5 and whole.orphans == 0
        # Another `up` (another token) is asked with its own token: refused by this one.
        write_state(state_dir, up_pid, history.url, token="t2")
        await wait_until(lambda: feed.outcomes()["error"] == 1, "a refused token")
        # The history's `up` gone: back to the rings.
        await history.stop()
        write_state(state_dir, up_pid + 10**6, "http://127.0.0.1:1")
        await wait_until(lambda: not feed.relayed, "the rings again")
        sidecars.add("backend-v1-0", request_spans(3)[-1:])
        await wait_until(lambda: feed.store.get(trace_id(3)) is not None, "a new ring trace")
    finally:
        if task is not None:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await history.stop()


async def test_a_history_that_does_not_answer_leaves_the_feed_on_the_rings(
    state_dir: Path, up_pid: int, sidecars: SpansServer
) -> None:
    write_state(state_dir, up_pid, "http://127.0.0.1:1")  # live `up`, dead history
    feed = SessionTraces(MESH, recheck_every=0.1)
    feed._direct.every = 0.05
    task = asyncio.create_task(feed.run(sidecars.targets, lambda: None))
    try:
        await wait_until(lambda: feed.store.get(trace_id(1)) is not None, "the rings' trace")
        await wait_until(
            lambda: feed.outcomes()["ok"] == len(sidecars.rings), "every ring answering"
        )
        # It stays there, round after round, not a round of errors every other round.
        for _ in range(10):
            await asyncio.sleep(0.05)
            assert not feed.relayed
        # Until the state names another history (an `up` that restarted).
        history = TraceHistory(sidecars.targets, "t1")
        history.reader.every = 0.05
        await history.start()
        try:
            assert history.url is not None
            write_state(state_dir, up_pid, history.url)
            await wait_until(lambda: feed.relayed, "the new history")
        finally:
            await history.stop()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
