"""relabel(): what /proc shows of a process after it wrote its command line and environment
over the ones it was started (or forked) with -- what `meshdev down` and `ps` read of a
sidecar the template forked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """\
import ctypes, json, os, sys
from meshdev.sidecar.template import relabel
argv, env = json.loads(sys.argv[1])
relabel(argv, env)
# C code reads the environment through libc: it must see the new values, not torn bytes.
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
seen = {k: (libc.getenv(k.encode()) or b"").decode() for k in env}
print(json.dumps(seen), flush=True)
sys.stdin.read()
"""


def _relabelled(
    argv: list[str], env: dict[str, str], start_env: dict[str, str]
) -> tuple[list[bytes], list[bytes], dict[str, str]]:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps([argv, env]), " " * 200],
        env=start_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            seen = json.loads(child.stdout.readline())
            cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{child.pid}/environ").read_bytes().split(b"\0")
        finally:
            child.kill()
    return [a for a in cmdline if a], [e for e in environ if e], seen


@pytest.fixture
def start_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "ROOM": " " * 400,
    }


def test_proc_shows_the_new_command_line_and_environment(start_env: dict[str, str]) -> None:
    argv = ["python", "-m", "meshdev", "sidecar", "--config", "/state/demo/web-0.sidecar.json"]
    env = {"HOME": "/home/x", "MESHDEV_MESH": "demo", "MESHDEV_POD": "web-0"}
    cmdline, environ, seen = _relabelled(argv, env, start_env)
    assert cmdline == [a.encode() for a in argv]
    assert sorted(environ) == sorted(f"{k}={v}".encode() for k, v in env.items())
    assert seen == env  # getenv() in C agrees


def test_labels_come_first_when_the_environment_does_not_fit(start_env: dict[str, str]) -> None:
    start_env["ROOM"] = ""
    big = {f"VAR{i}": "x" * 100 for i in range(20)}
    env = {**big, "MESHDEV_MESH": "demo", "MESHDEV_POD": "web-0"}
    _, environ, seen = _relabelled(["python"], env, start_env)
    assert b"MESHDEV_MESH=demo" in environ and b"MESHDEV_POD=web-0" in environ
    assert len(environ) < len(env)  # what did not fit is left out of /proc's view only
    assert seen == env
