"""Fixtures for the dashboard's tests: a loopback pods server, a fake session, the app."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from meshdev.tui import app as app_module
from tests.tui.tuifakes import FakeSession, FakeSource, PodsServer


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    # Panels show wall-clock times; snapshots must not depend on the machine's zone.
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    # The app freezes the collector's view of what it built (one app per process); here
    # many apps run in one process, and each must be collectable after its test; and the
    # collector's thresholds the app sets are the dashboard process's, not the tests'.
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.fixture(autouse=True)
def _fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "TELEMETRY_RETRY_S", 0.05)


@pytest.fixture
async def server() -> AsyncIterator[PodsServer]:
    srv = PodsServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def session(server: PodsServer) -> AsyncIterator[FakeSession]:
    s = FakeSession(server)
    yield s
    await s.control.down()  # closes the HTTP session a canary push opened


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()
