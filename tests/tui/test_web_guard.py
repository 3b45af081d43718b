"""The web dashboard answers this machine's own pages only: another site's page (its Origin on
the terminal's WebSocket) or another name for 127.0.0.1 (a DNS rebinding: its Host) is refused,
since a tab's keys act on the mesh. Against the real textual-serve application on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from meshdev.tui.web import WebDashboard, watch_command
from tests.support import free_port


@pytest.fixture
async def served() -> AsyncIterator[str]:
    port = free_port()
    # The command would only run for a WebSocket that gets through: none does here.
    dashboard = WebDashboard(watch_command(["http://127.0.0.1:9"]), port, "guard test")
    await dashboard.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await dashboard.stop()


async def get(url: str, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession(trust_env=False) as http,
        http.get(url, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status


async def test_the_page_loads_for_its_own_host(served: str) -> None:
    assert await get(served + "/", {}) == 200
    host = served.removeprefix("http://").replace("127.0.0.1", "localhost")
    assert await get(served + "/", {"Host": host}) == 200


async def test_another_name_for_loopback_is_refused(served: str) -> None:
    port = served.rsplit(":", 1)[1]
    assert await get(served + "/", {"Host": f"attacker.example:{port}"}) == 403


async def test_another_sites_page_cannot_open_the_terminal(served: str) -> None:
    ws = served + "/ws"
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    upgrade["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    assert await get(ws, {**upgrade, "Origin": "https://attacker.example"}) == 403
    # No Origin at all is no browser page of ours either.
    assert await get(ws, upgrade) == 403
    # Requests from the dashboard's own page get through (its terminal's WebSocket too: the
    # browser test, tests/e2e/test_web_dashboard.py, would fail without it).
    assert await get(served + "/", {"Origin": served}) == 200
