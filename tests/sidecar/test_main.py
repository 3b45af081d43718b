"""`meshdev sidecar` as a real process: YAML config, the ready line, serving, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import yaml

from tests.sidecar.helpers import client, endpoint, get, upstreams
from tests.support import LOCALHOST, free_port

SCRIPT = "import sys; from meshdev.sidecar.main import serve; serve(sys.argv[1], 'secret')"


async def test_runs_from_a_yaml_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    async with upstreams("app") as (app,):
        port = free_port()
        config = {
            "version": 7,
            "mesh": "demo",
            "node": "frontend-0",
            "access_log": "off",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": [
                {"name": "outbound", "kind": "outbound", "address": LOCALHOST, "port": port}
            ],
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["backend"],
                    "routes": [{"name": "all", "clusters": [{"cluster": "backend", "weight": 1}]}],
                }
            ],
            "clusters": [{"name": "backend", "endpoints": [endpoint(app)]}],
        }
        path = tmp_path / "sidecar.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SCRIPT,
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            assert b"ready" in line and b"config v7" in line, line
            async with client() as s:
                status, headers, _ = await get(s, f"http://{LOCALHOST}:{port}", "/x")
                assert (status, headers["x-upstream"]) == (200, "app")
                admin = f"http://{LOCALHOST}:{config['admin']['port']}/ready"  # type: ignore[index]
                async with s.get(admin) as resp:
                    assert resp.status == 200
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_reads_its_config_from_the_environment() -> None:
    """`--config env:NAME`: how the Docker runtime hands a container its first config."""
    async with upstreams("app") as (app,):
        port, admin_port = free_port(), free_port()
        config = {
            "version": 3,
            "mesh": "demo",
            "node": "web-0",
            "access_log": "off",
            "admin": {"address": LOCALHOST, "port": admin_port},
            "listeners": [
                {"name": "outbound", "kind": "outbound", "address": LOCALHOST, "port": port}
            ],
            "virtual_hosts": [
                {
                    "name": "backend",
                    "domains": ["backend"],
                    "routes": [{"name": "all", "clusters": [{"cluster": "backend", "weight": 1}]}],
                }
            ],
            "clusters": [{"name": "backend", "endpoints": [endpoint(app)]}],
        }
        env = {**os.environ, "SIDECAR_CONFIG_UNDER_TEST": json.dumps(config)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meshdev",
            "sidecar",
            "--config",
            "env:SIDECAR_CONFIG_UNDER_TEST",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
            assert b"config v3" in line, line
            async with client() as s:
                status, headers, _ = await get(s, f"http://{LOCALHOST}:{port}", "/x")
                assert (status, headers["x-upstream"]) == (200, "app")
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), timeout=20)

    missing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshdev",
        "sidecar",
        "--config",
        "env:NOT_SET_ANYWHERE",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(missing.communicate(), timeout=20)
    assert missing.returncode != 0
    assert b"environment variable NOT_SET_ANYWHERE is not set" in out + err
