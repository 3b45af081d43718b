"""The demo keys of `up --web`'s tabs: RemoteKeys in a tab, KeyService in `up`, over real HTTP
on loopback. The keys' own effects are Commands' (tests/tui/logic); here: that each key reaches
`up` with what it was pressed on, that the answer or the refusal comes back, and that nothing
acts without the session's token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from rich.text import Text

from meshdev.tui.logic.actions import ActionFailed
from meshdev.tui.remote_keys import KeyService, RemoteKeys
from tests.support import wait_until

TOKEN = "s3cret"


@dataclass
class RecordingKeys:
    """A DemoKeys that says which key it got, with what; `refuse` makes every key fail."""

    pressed: list[tuple[str, object]] = field(default_factory=list)
    refuse: str | None = None

    def _done(self, name: str, arg: object = None) -> str:
        self.pressed.append((name, arg))
        if self.refuse is not None:
            raise ActionFailed(self.refuse)
        return f"{name} done"

    async def toggle_load(self) -> str:
        return self._done("load")

    async def rate(self, direction: int) -> str:
        return self._done("rate", direction)

    async def trip_breaker(self) -> str:
        return self._done("breaker")

    async def chaos(self, selected: str | None = None) -> str:
        return self._done("chaos", selected)

    async def plaintext(self, selected: str | None = None) -> str:
        return self._done("plaintext", selected)

    async def unauthorized(self) -> str:
        return self._done("unauthorized")

    async def fault(self, route_key: str | None) -> str:
        return self._done("fault", route_key)

    async def canary(self, prefer: Sequence[str] = ()) -> str:
        return self._done("canary", list(prefer))

    def load_text(self) -> Text:
        return Text.from_markup("[bold green] load on [/]  20 req/s -> http://x/items")


SERVICES: dict[str, KeyService] = {}


@pytest.fixture
async def served() -> AsyncIterator[tuple[RecordingKeys, str]]:
    keys = RecordingKeys()
    app = web.Application()
    service = KeyService(keys, TOKEN)
    service.install(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/"
    SERVICES[url] = service
    try:
        yield keys, url
    finally:
        SERVICES.pop(url)
        await runner.cleanup()


async def test_every_key_reaches_up_with_what_it_was_pressed_on(
    served: tuple[RecordingKeys, str],
) -> None:
    keys, url = served
    remote = RemoteKeys(url, TOKEN)
    assert await remote.toggle_load() == "load done"
    assert await remote.rate(-1) == "rate done"
    assert await remote.trip_breaker() == "breaker done"
    assert await remote.chaos("backend-1") == "chaos done"
    assert await remote.plaintext("api-0") == "plaintext done"
    assert await remote.unauthorized() == "unauthorized done"
    assert await remote.fault("backend/items") == "fault done"
    assert await remote.canary(["backend/items", "frontend/"]) == "canary done"
    assert keys.pressed == [
        ("load", None),
        ("rate", -1),
        ("breaker", None),
        ("chaos", "backend-1"),
        ("plaintext", "api-0"),
        ("unauthorized", None),
        ("fault", "backend/items"),
        ("canary", ["backend/items", "frontend/"]),
    ]


async def test_a_refusal_comes_back_as_the_tabs_own(served: tuple[RecordingKeys, str]) -> None:
    keys, url = served
    keys.refuse = "no route in mesh.yaml splits traffic by weight"
    with pytest.raises(ActionFailed) as refused:
        await RemoteKeys(url, TOKEN).canary()
    assert str(refused.value) == keys.refuse


async def test_nothing_acts_without_the_sessions_token(served: tuple[RecordingKeys, str]) -> None:
    keys, url = served
    with pytest.raises(ActionFailed, match="token"):
        await RemoteKeys(url, "guessed").toggle_load()
    assert keys.pressed == []


async def test_the_load_bar_is_ups(served: tuple[RecordingKeys, str]) -> None:
    _, url = served
    remote = RemoteKeys(url, TOKEN)
    first = remote.load_text()
    assert "asking" in first.plain
    await wait_until(lambda: "load on" in remote.load_text().plain, "up's load bar")
    text = remote.load_text()
    assert text.plain == " load on   20 req/s -> http://x/items"
    assert any("green" in str(span.style) for span in text.spans)


async def test_an_up_that_is_gone_is_said_as_such() -> None:
    remote = RemoteKeys("http://127.0.0.1:9/", TOKEN)  # the discard port: nothing listens
    with pytest.raises(ActionFailed, match="did not answer"):
        await remote.trip_breaker()


async def test_no_key_acts_once_the_mesh_is_stopping(served: tuple[RecordingKeys, str]) -> None:
    keys, url = served
    SERVICES[url].close()
    with pytest.raises(ActionFailed, match="stopping"):
        await RemoteKeys(url, TOKEN).toggle_load()
    assert keys.pressed == []


async def test_a_load_bar_is_never_left_from_an_up_that_stopped_answering() -> None:
    remote = RemoteKeys("http://127.0.0.1:9/", TOKEN)
    remote.load_text()
    await wait_until(lambda: "does not answer" in remote.load_text().plain, "the bar saying so")


def test_the_token_goes_to_this_machine_only() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        RemoteKeys("http://mesh.example:8080/", TOKEN)
