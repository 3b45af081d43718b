"""What every test folder shares: where the checkout is, a free loopback port, and waiting for
a condition instead of sleeping for a guess.

Folder-specific helpers stay in their folders (tests/sidecar/helpers.py's upstreams,
tests/e2e/meshrun.py's mesh runner, tests/tui/tuifakes.py's fakes); they build on these.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import shutil
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, overload

import pytest

# The checkout: tests/support.py sits one level below it.
ROOT = Path(__file__).resolve().parents[1]

# The unit tests' own mesh, so that editing examples/flask-app/mesh.yaml breaks no unit test;
# its header lists the tests that assert on it.
DEMO_MESH = ROOT / "tests" / "fixtures" / "demo" / "mesh.yaml"

# meshdev's console script, from the environment running the tests.
MESHDEV = str(Path(sys.executable).with_name("meshdev"))

LOCALHOST = "127.0.0.1"

# How long a wait for something in this process (a server, a task, a stat, a frame) may take:
# generous, so that only a hang reaches it, even on a loaded 2-core machine.
WAIT = 10.0
# Between two checks of a condition: short against the things awaited (a loopback round
# trip, a frame), long enough not to starve what is being waited for.
STEP = 0.01

T = TypeVar("T")
# What was awaited, for the failure message; a callable is asked only on failure, so the
# message can show the state at that moment (a process's output, a screen).
What = str | Callable[[], str]


# Below Linux's ephemeral range (32768-60999 by default), where the kernel picks the local port
# of every outgoing connection: a port handed out from there could be taken by one of the
# suite's own connections before the test's server binds it ("address already in use").
_PORTS = range(20000, 32768)
_given: set[int] = set()
_pick = random.Random()


def free_port() -> int:
    """A loopback port nothing listens on now, and not handed out before in this run."""
    for _ in range(1000):
        port = _pick.choice(_PORTS)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind((LOCALHOST, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_PORTS.start}-{_PORTS.stop - 1}")


def need_prometheus() -> None:
    """Skip the test without the `prometheus` binary; in CI (which installs it through
    scripts/test.sh) fail instead, so that CI never goes green by skipping it."""
    if shutil.which("prometheus") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is required in CI (scripts/test.sh installs it)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")


def _timed_out(what: What, timeout: float) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout:g}s waiting for {text}")


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T | None]],
    what: What,
    *,
    timeout: float = ...,
    step: float = ...,
    pause: Callable[[float], Awaitable[object]] = ...,
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T | None],
    what: What,
    *,
    timeout: float = ...,
    step: float = ...,
    pause: Callable[[float], Awaitable[object]] = ...,
) -> T: ...


async def wait_until(
    condition: Callable[[], object],
    what: What,
    *,
    timeout: float = WAIT,
    step: float = STEP,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> object:
    """Check `condition` (a function, or a coroutine function) every `step` seconds until it
    returns something true, and return that (never None, so a condition may return a value
    or None); fail naming `what` after `timeout` seconds.

    `pause` is how to let time pass between checks: a Textual test passes `pilot.pause`, so
    the app lays out and paints between them as it does between frames.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise _timed_out(what, timeout)
        await pause(step)


def wait_until_sync(
    condition: Callable[[], T | None], what: What, *, timeout: float = WAIT, step: float = STEP
) -> T:
    """`wait_until` for a test without an event loop (a real process, a thread, a container):
    blocks, checking `condition` every `step` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        time.sleep(step)
