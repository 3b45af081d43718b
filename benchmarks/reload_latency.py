"""Save of mesh.yaml -> every sidecar serving it: p50/p99 over policy-only edits.

Runs `meshdev up --headless` on a copy of the example (its own name and port), then edits the
canary weights N times. Each edit is timed from just before the file is written until every
sidecar's /config_dump reports the new version. The reference, measured in the same run, is
the floor of the same work without the watcher: POSTing each sidecar its current config
again, in parallel, straight to /config (what any reload must at least cost).

    .venv/bin/python benchmarks/reload_latency.py [--runtime process|docker] [--edits 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

# Run from a checkout: the e2e helpers start `meshdev up` the way the tests do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.meshrun import MeshUp, env_for, example_copy, free_port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def versions(session: aiohttp.ClientSession, admins: list[str]) -> list[int]:
    async def one(url: str) -> int:
        async with session.get(f"{url}/config_dump") as resp:
            return int((await resp.json())["version"])

    return await asyncio.gather(*(one(u) for u in admins))


async def wait_all(session: aiohttp.ClientSession, admins: list[str], version: int) -> None:
    while min(await versions(session, admins)) < version:
        await asyncio.sleep(0.002)


async def measure(up: MeshUp, edits: int) -> dict[str, object]:
    state = json.loads(
        (Path(up.env["MESHDEV_STATE_DIR"]) / up_name(up) / "session.json").read_text()
    )
    admins = [p["admin_url"] for p in state["pods"]]
    token = state["token"]
    text = up.mesh_file.read_text()
    a, b = "backend.v1: 90, backend.v2: 10", "backend.v1: 80, backend.v2: 20"
    assert a in text
    saves: list[float] = []
    floor: list[float] = []
    async with aiohttp.ClientSession(trust_env=False) as session:
        version = max(await versions(session, admins))
        for i in range(edits):
            text = text.replace(a, b) if i % 2 == 0 else text.replace(b, a)
            t0 = time.perf_counter()
            up.mesh_file.write_text(text)
            version += 1
            await asyncio.wait_for(wait_all(session, admins, version), 10)
            saves.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.3)  # let the watcher settle between saves
            floor.append(await repush(session, admins, token))
    return {
        "edits": edits,
        "sidecars": len(admins),
        "save_to_serving_ms": {"p50": pct(saves, 0.5), "p99": pct(saves, 0.99), "max": max(saves)},
        "direct_push_floor_ms": {"p50": pct(floor, 0.5), "p99": pct(floor, 0.99)},
        "ratio_p50": statistics.median(saves) / statistics.median(floor),
    }


async def repush(session: aiohttp.ClientSession, admins: list[str], token: str) -> float:
    dumps = []
    for url in admins:
        async with session.get(f"{url}/config_dump") as resp:
            dumps.append((url, (await resp.json())["config"]))
    t0 = time.perf_counter()

    async def post(url: str, cfg: dict[str, object]) -> None:
        async with session.post(
            f"{url}/config", json=cfg, headers={"x-meshdev-token": token}
        ) as resp:
            assert resp.status == 200, await resp.text()

    await asyncio.gather(*(post(u, c) for u, c in dumps))
    return (time.perf_counter() - t0) * 1000


def up_name(up: MeshUp) -> str:
    for line in up.mesh_file.read_text().splitlines():
        if line.startswith("name: "):
            return line.split(": ", 1)[1].strip()
    raise ValueError("no name")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["process", "docker"], default="process")
    parser.add_argument("--edits", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        name = f"bench-reload-{os.getpid()}"
        mesh_file = example_copy(Path(tmp), name, free_port())
        up = MeshUp(mesh_file, env_for(Path(tmp)), "--runtime", args.runtime)
        try:
            up.wait_for("ready:", 300)
            result = asyncio.run(measure(up, args.edits))
        except BaseException:
            print("\n".join(up.lines[-20:]), file=sys.stderr)
            raise
        finally:
            up.stop()
    print(json.dumps({"runtime": args.runtime, **result}, indent=2))


if __name__ == "__main__":
    main()
