"""`meshdev traces`: its collection against real sidecar-shaped /spans servers on loopback,
its table and JSON, and the console script as a user runs it (the running mesh found from a
session's state file, as `meshdev up` writes it, pointing at those servers)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meshdev.cli.traces import RINGS_ONLY, empty_reason, gather, pick, render_table, trace_json
from meshdev.common.trace_wire import RELAY_NODE
from meshdev.observability.trace_history import TraceHistory
from meshdev.telemetry.io.spans import collect
from meshdev.testing.sample_spans import (
    SpansServer,
    request_spans,
    split_by_node,
    trace_id,
)
from tests.support import MESHDEV, wait_until


@pytest.fixture
async def sidecars() -> AsyncIterator[SpansServer]:
    spans = (
        request_spans(1)
        + request_spans(2, backend_ms=80)
        + request_spans(3, status=503, flags="UO")
        + request_spans(4, tries=2)
    )
    srv = SpansServer(split_by_node(spans), missing=["greeter-0"])
    await srv.start()
    yield srv
    await srv.stop()


async def test_the_collection_joins_the_sidecars_and_the_table_lists_newest_first(
    sidecars: SpansServer,
) -> None:
    store, outcomes = await collect(sidecars.targets())
    assert outcomes["greeter-0"].outcome == "missing"
    newest = pick(store, slow=False, failed=False, limit=20)
    assert [t.trace_id for t in newest] == [trace_id(n) for n in (4, 3, 2, 1)]
    lines = render_table(newest).splitlines()
    assert lines[0].split() == ["TIME", "TRACE", "ROUTE", "SERVICES", "MS", "SPANS", "STATUS"]
    first = lines[1]
    assert trace_id(4)[:12] in first
    assert "GET /items" in first and "ingress > frontend > backend" in first
    assert "200 (a hop failed)" in first  # the first try got 503; the retry hid it
    assert "503 UO" in lines[2]
    assert " 7 " in first  # spans: five plus one more try (client and server)
    slow = pick(store, slow=True, failed=False, limit=1)
    assert [t.trace_id for t in slow] == [trace_id(2)]
    failed = pick(store, slow=False, failed=True, limit=20)
    assert [t.trace_id for t in failed] == [trace_id(4), trace_id(3)]


async def test_the_json_shape_has_every_span_properly_parented(sidecars: SpansServer) -> None:
    store, _ = await collect(sidecars.targets())
    trace = store.get(trace_id(1))
    assert trace is not None
    doc = json.loads(json.dumps(trace_json(trace)))
    assert set(doc) == {
        "trace_id", "start_us", "start", "duration_ms", "root", "services", "hops",
        "span_count", "status", "flags", "failed", "orphans", "truncated", "slowest", "spans",
    }  # fmt: skip
    assert doc["start"] == "2023-11-14T22:13:21.000000Z"
    assert doc["root"] == {"service": "ingress", "name": "frontend/web", "route": "GET /items"}
    assert (doc["hops"], doc["span_count"], doc["failed"], doc["status"]) == (2, 5, False, 200)
    spans = doc["spans"]
    by_id = {s["id"]: s for s in spans}
    assert [(s["service"], s["kind"], s["depth"]) for s in spans] == [
        ("ingress", "SERVER", 0),
        ("ingress", "CLIENT", 1),
        ("frontend", "SERVER", 2),
        ("frontend", "CLIENT", 3),
        ("backend", "SERVER", 4),
    ]
    for s in spans[1:]:
        assert by_id[s["parent_id"]]["depth"] == s["depth"] - 1
    client = spans[3]
    assert (client["route"], client["cluster"], client["attempt"]) == ("items", "backend.v1", 1)
    assert client["node"] == "frontend-0" and client["tags"]["http.status_code"] == "200"
    assert doc["slowest"]["service"] == "backend" and doc["slowest"]["self_ms"] == 4.0


def test_gather_blocks_for_the_cli_and_says_why_it_is_empty(tmp_path: Path) -> None:
    store, outcomes = gather([("gone", "http://127.0.0.1:9")])
    assert len(store) == 0 and outcomes["gone"].outcome == "error"
    assert "no sidecar answered" in empty_reason(outcomes, "mesh.yaml", None)
    assert "is `meshdev up mesh.yaml` running" in empty_reason({}, "mesh.yaml", None)


def _write_state(state_dir: Path, mesh: str, pods: list[dict[str, Any]], **session: object) -> None:
    folder = state_dir / mesh
    folder.mkdir(parents=True, exist_ok=True)
    state = {"mesh": mesh, "ingress_url": "http://127.0.0.1:8123/", "pods": pods, **session}
    (folder / "session.json").write_text(json.dumps(state))


async def _meshdev(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    # Asynchronous: the sidecars it reads are served by this test's event loop.
    proc = await asyncio.create_subprocess_exec(
        MESHDEV,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_console_script_reads_the_running_mesh(
    sidecars: SpansServer, tmp_path: Path
) -> None:
    (tmp_path / "mesh.yaml").write_text(
        "name: traced\nservices:\n  web: {command: python app.py}\n"
    )
    pods = [{"name": n, "admin_url": u} for n, u in sidecars.targets()]
    _write_state(tmp_path / "state", "traced", pods)
    env = {**os.environ, "MESHDEV_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    code, out, err = await _meshdev("traces", "--json", env=env, cwd=tmp_path)
    assert code == 0, err
    doc = json.loads(out)
    assert [t["trace_id"] for t in doc] == [trace_id(n) for n in (4, 3, 2, 1)]
    assert all(s["parent_id"] for t in doc for s in t["spans"][1:])
    assert err == ""  # greeter-0 has no /spans: skipped quietly
    args = ("traces", "--failed", "--slow", "--limit", "1")
    code, out, err = await _meshdev(*args, env=env, cwd=tmp_path)
    assert code == 0
    assert len(out.splitlines()) == 2 and trace_id(4)[:12] in out
    assert RINGS_ONLY in err  # no `up` keeps a history: the table says why it may be short
    code, out, _ = await _meshdev("traces", "--help", env=env, cwd=tmp_path)
    assert "--failed" in out and "newest first" in out


async def test_the_console_script_without_a_mesh_or_without_spans_says_what_to_do(
    tmp_path: Path,
) -> None:
    (tmp_path / "mesh.yaml").write_text("name: idle\nservices:\n  web: {command: python app.py}\n")
    env = {**os.environ, "MESHDEV_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    code, _, err = await _meshdev("traces", env=env, cwd=tmp_path)
    assert code == 1
    assert "no `meshdev up` of mesh idle is running" in err
    empty = SpansServer({"ingress": []})
    await empty.start()
    try:
        pods = [{"name": "ingress", "admin_url": empty.admin_url("ingress")}]
        _write_state(tmp_path / "state", "idle", pods)
        code, out, err = await _meshdev("traces", "--json", env=env, cwd=tmp_path)
        assert code == 0 and json.loads(out) == []
        assert "no traces yet" in err and "curl http://127.0.0.1:8123/" in err
    finally:
        await empty.stop()
    code, _, err = await _meshdev("traces", env=env, cwd=tmp_path)
    assert code == 1 and "no sidecar answered" in err
    assert "warning: ingress: cannot connect" in err


async def test_the_console_script_reads_the_history_of_the_live_up(
    sidecars: SpansServer, tmp_path: Path
) -> None:
    (tmp_path / "mesh.yaml").write_text("name: kept\nservices:\n  web: {command: python app.py}\n")
    history = TraceHistory(sidecars.targets, "tok")
    history.reader.every = 0.05
    await history.start()
    # A live process that passes for the mesh's `meshdev up` (its command line says so).
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(120)", "meshdev"
    )
    env = {**os.environ, "MESHDEV_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    pods = [{"name": n, "admin_url": u} for n, u in sidecars.targets()]
    try:
        # Until it has exec'd, its command line is this test's, which does not say so.
        cmdline = Path(f"/proc/{holder.pid}/cmdline")
        await wait_until(lambda: b"meshdev" in cmdline.read_bytes(), "the holder's exec")
        await wait_until(lambda: len(history.store) == 4, "the history's traces")
        for node in sidecars.rings:
            sidecars.wrap(node, keep=0)  # the rings forgot them: only the history has them
        _write_state(
            tmp_path / "state", "kept", pods, pid=holder.pid, token="tok", traces_url=history.url
        )
        code, out, err = await _meshdev("traces", "--json", env=env, cwd=tmp_path)
        assert code == 0, err
        doc = json.loads(out)
        assert [t["trace_id"] for t in doc] == [trace_id(n) for n in (4, 3, 2, 1)]
        assert {s["node"] for t in doc for s in t["spans"]} == set(sidecars.rings)
        code, out, err = await _meshdev("traces", env=env, cwd=tmp_path)
        assert code == 0 and len(out.splitlines()) == 5 and err == ""
        # The `up` stopped answering: the rings, said so, which hold nothing now.
        await history.stop()
        code, out, err = await _meshdev("traces", "--json", env=env, cwd=tmp_path)
        assert code == 0 and json.loads(out) == []
        assert f"warning: {RELAY_NODE}: cannot connect" in err
        assert "reading the sidecars' own rings" in err and "no traces yet" in err
    finally:
        holder.kill()
        await holder.wait()
        await history.stop()
