"""Live reload under load (issue 5), through `meshdev up --headless` on the process runtime:
saves apply without a failed request, bad saves keep the last good config, scaling drains."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
from pathlib import Path

import pytest

from meshdev.loadgen import LoadGenerator, LoadResult, LoadSpec
from meshdev.runtime.paths import STATE_FILE
from tests.e2e.meshrun import MeshUp, env_for, example_copy, get
from tests.support import free_port, wait_until_sync

pytestmark = pytest.mark.slow

# Two valid configs whose routes always answer: only weights, timeouts and retries differ.
MESH = """\
name: demo
services:
  frontend:
    build: .
    command: python app.py
    health_path: /healthz
    env: {{UPSTREAM: http://backend}}
  backend:
    build: .
    command: python app.py
    health_path: /healthz
    versions:
      v1: {{replicas: {v1}}}
      v2: {{replicas: 1}}
ingress:
  port: 8000
  routes:
    - {{match: {{prefix: /}}, to: frontend}}
routes:
  backend:
    - name: items
      match: {{prefix: /items}}
      to: {{backend.v1: {w1}, backend.v2: {w2}}}
      timeout: {timeout}
      retries: {{attempts: {attempts}, retry_on: [5xx, reset, connect-failure]}}
policies:
  backend:
    lb: {lb}
"""

A = {"v1": 2, "w1": 90, "w2": 10, "timeout": "2s", "attempts": 2, "lb": "round_robin"}
B = {"v1": 2, "w1": 10, "w2": 90, "timeout": "3s", "attempts": 1, "lb": "least_request"}


def failed(result: LoadResult) -> int:
    bad = sum(n for code, n in result.status.items() if not 200 <= code < 300)
    return bad + result.error_count


class Reloading:
    def __init__(self, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.path = example_copy(tmp, name, self.port, MESH.format(**A))
        self.up = MeshUp(self.path, env_for(tmp), "--runtime", "process")
        self.version = 1
        self.name = name
        build = re.search(r"build: (.*)$", self.path.read_text(), re.M)
        assert build is not None
        self.build = build.group(1)

    def write(self, fields: dict[str, object]) -> None:
        text = MESH.format(**fields).replace("  port: 8000", f"  port: {self.port}", 1)
        self.path.write_text(self.fixups(text))

    def fixups(self, text: str) -> str:
        """Keep this test's mesh name, port and absolute build folder in a rewritten file."""
        text = text.replace("  port: 8000", f"  port: {self.port}", 1)
        text = re.sub(r"^name: .*$", f"name: {self.name}", text, count=1, flags=re.M)
        return text.replace("build: .", f"build: {self.build}")

    async def applied(self, timeout: float = 30) -> str:
        self.version += 1
        return await asyncio.to_thread(self.up.wait_for, f"applied v{self.version} ", timeout)

    def rejection_after(self, seen: int, timeout: float = 10.0) -> list[str]:
        """The located problems `meshdev up` printed for the first save rejected after line
        `seen` of its output."""

        def reported() -> list[str] | None:
            lines = self.up.lines[seen:]
            at = next((i for i, ln in enumerate(lines) if "not applied, still serving" in ln), None)
            if at is None:
                return None
            problems = list(itertools.takewhile(lambda ln: ln.startswith("  "), lines[at + 1 :]))
            # The session prints a rejection's problems, then records them in its state file:
            # once the file lists exactly the lines printed, no more are on their way.
            whole = bool(problems) and [p[2:] for p in problems] == self.recorded_errors()
            return problems if whole else None

        return wait_until_sync(
            reported,
            lambda: "a whole rejection printed:\n" + "\n".join(self.up.lines[seen:]),
            timeout=timeout,
            step=0.02,
        )

    def recorded_errors(self) -> list[str] | None:
        """The problems of the last reload, as `meshdev up` recorded them for `status`."""
        state = Path(self.up.env["MESHDEV_STATE_DIR"]) / self.name / STATE_FILE
        try:
            errors = (json.loads(state.read_text()).get("last_reload") or {}).get("errors")
        except FileNotFoundError:
            return None
        return errors if isinstance(errors, list) else None

    def load(self, rps: float) -> LoadGenerator:
        gen = LoadGenerator(
            LoadSpec(f"http://127.0.0.1:{self.port}/items", rps=rps, retry_stale=False)
        )
        gen.start()
        return gen


async def test_fifty_rewrites_under_load_lose_nothing(tmp_path: Path) -> None:
    mesh = Reloading(tmp_path, f"lr-{os.getpid()}")
    try:
        await asyncio.to_thread(mesh.up.wait_for, "ready:")
        gen = mesh.load(200)
        await asyncio.sleep(0.5)
        for i in range(50):
            mesh.write(B if i % 2 == 0 else A)
            line = await mesh.applied()
            assert "to 5/5 sidecars" in line, line
            await asyncio.sleep(0.05)
        result = await gen.stop()
        assert result.responses > 1000
        assert failed(result) == 0, json.dumps(result.to_json())
        assert result.errors.get("reset", 0) == 0
    finally:
        mesh.up.run("down", str(mesh.path))
        mesh.up.stop()


async def test_bad_saves_keep_serving_the_last_good_config(tmp_path: Path) -> None:
    mesh = Reloading(tmp_path, f"lb-{os.getpid()}")
    try:
        await asyncio.to_thread(mesh.up.wait_for, "ready:")
        before = {p["name"]: p["config_hash"] for p in mesh.up.status()["pods"]}
        gen = mesh.load(100)
        good = mesh.fixups(MESH.format(**A))
        bomb = "".join(
            f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9) if i else 'lol'}]\n" for i in range(10)
        )
        # The foundation issue's bad inputs, hostile files included.
        bad_saves: list[tuple[bytes, str]] = [
            (b"", "file is empty"),
            (b"- a list\n", "expected a mapping"),
            (good.replace("services:\n", "services:\n\t").encode(), "a tab character"),
            (
                good.replace(
                    "  backend:\n    build", "  backend:\n    build: x\n    build"
                ).encode(),
                "duplicate key",
            ),
            (good.encode().replace(b"name: ", b"name: caf\xe9", 1), "not UTF-8"),
            (good.encode() + b"#" * (1024 * 1024), "the limit is 1 MiB"),
            ((bomb + good).encode(), "expands to too many values"),
            (good.replace("timeout: 2s", "timeout: 2").encode(), "expected a duration like 250ms"),
            (good.replace("lb: round_robin", "lb: fastest").encode(), "policies.backend.lb: "),
            (good.replace("backend.v2: 10", "backend.v3: 10").encode(), "unknown version 'v3'"),
            (good.replace("backend.v1: 90", "backend.v1: -1").encode(), "must be at least 0"),
            (good.replace("prefix: /items", "regex: '(['").encode(), "regex does not compile"),
            (good.replace("  backend:\n    - name", "  backnd:\n    - name").encode(), "'backnd'"),
            (good.replace("    - name: items\n", "    - name: Items!\n").encode(), "DNS label"),
        ]
        for raw, message in bad_saves:
            seen = len(mesh.up.lines)
            mesh.path.write_bytes(raw)
            problems = await asyncio.to_thread(mesh.rejection_after, seen)
            assert all(re.match(rf"  {re.escape(str(mesh.path))}:\d+:\d+", p) for p in problems), (
                problems
            )
            assert any(message in p for p in problems), (message, problems)
        status = mesh.up.status(name=mesh.name)
        assert {p["name"]: p["config_hash"] for p in status["pods"]} == before
        assert status["last_reload"]["ok"] is False
        mesh.write(B)
        assert "to 5/5 sidecars" in await mesh.applied()
        result = await gen.stop()
        assert failed(result) == 0, json.dumps(result.to_json())
    finally:
        mesh.up.run("down", str(mesh.path))
        mesh.up.stop()


async def test_scaling_under_load_drains_before_stopping(tmp_path: Path) -> None:
    mesh = Reloading(tmp_path, f"ls-{os.getpid()}")
    try:
        await asyncio.to_thread(mesh.up.wait_for, "ready:")
        gen = mesh.load(150)
        await asyncio.sleep(0.5)
        for v1 in (3, 1, 4):
            mesh.write({**A, "v1": v1})
            line = await mesh.applied(60)
            assert f"to {v1 + 3}/{v1 + 3} sidecars" in line, line
            await asyncio.sleep(1.0)
        result = await gen.stop()
        assert failed(result) == 0, json.dumps(result.to_json())
        names = sorted(p["name"] for p in mesh.up.status()["pods"])
        assert names == sorted(
            ["ingress", "frontend-0", "backend-v2-0"] + [f"backend-v1-{i}" for i in range(4)]
        )
        status, body = get(f"http://127.0.0.1:{mesh.port}/items")
        assert status == 200, body
        assert json.loads(body)["answered_by"]["pod"].startswith("backend-")
    finally:
        mesh.up.run("down", str(mesh.path))
        mesh.up.stop()
