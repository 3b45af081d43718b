"""Each demo key against the loopback pods server: the request it makes, and what it says."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from textual.message import Message

from meshdev.loadgen import LoadResult
from meshdev.runtime.paths import BY_KEY
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.testing.sample_views import sample_view
from meshdev.tui.logic.commands import Commands
from meshdev.tui.messages import ActionDone
from tests.support import DEMO_MESH, wait_until
from tests.tui.tuifakes import (
    TOKEN,
    FakeSession,
    FakeSource,
    PodsServer,
    make_app,
    started,
    up,
)


def done(seen: list[Message]) -> list[ActionDone]:
    # A message is seen once per node it bubbles through (screen, then app).
    unique = {id(m): m for m in seen if isinstance(m, ActionDone)}
    return list(unique.values())


async def test_l_starts_and_stops_load_and_plus_minus_change_its_rate(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(size=(140, 40), message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        await pilot.press("plus")  # 20 -> 50 req/s, before it even runs
        await pilot.press("l")
        commands = app.controller.commands
        assert isinstance(commands, Commands)
        await wait_until(
            lambda: commands.load is not None and commands.load.running, "on", pause=pilot.pause
        )
        load = commands.load
        assert load is not None
        assert load.rate == 50.0
        await wait_until(lambda: _responses(load.snapshot()) >= 10, "responses", pause=pilot.pause)
        await pilot.press("minus", "minus")
        # A rate step is an action like the others (a worker): it lands a moment after the key.
        await wait_until(lambda: load.rate == 10.0, "10 req/s", pause=pilot.pause)
        bar = str(app.dashboard.query_one("#load-bar").render())
        assert "load on" in bar
        # The path only while it runs (the header shows the ingress): 80 columns keep the figures.
        assert "10 req/s -> /items  sent " in bar
        assert load.url == f"{server.url}/items"
        await pilot.press("l")
        # `running` turns false as the stop begins; its sentence comes once the stop is done.
        await wait_until(
            lambda: any(m.text.startswith("load stopped:") for m in done(seen)),
            "the stop's sentence",
            pause=pilot.pause,
        )
        assert not load.running
        assert all(m.ok for m in done(seen))


def _responses(result: LoadResult | None) -> int:
    return result.responses if result is not None else 0


async def test_b_trips_the_breaker_with_a_burst(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        await pilot.press("b")
        await wait_until(lambda: bool(done(seen)), "burst result", timeout=20, pause=pilot.pause)
        text = done(seen)[0].text
        # The server admits `limit` at a time and overflows the rest, as a breaker does.
        assert text.startswith("burst of 400")
        overflow = int(text.split(" x 503 UO")[0].rsplit(", ", 1)[1])
        assert overflow > 0
        assert "breaker open" in text


async def test_x_fails_one_replica_and_heals_it(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        await pilot.press("x")
        await wait_until(lambda: len(done(seen)) == 1, "chaos on", pause=pilot.pause)
        # backend has outlier detection and three pods: its first replica is the one.
        assert server.chaos == {"backend-v1-0": {"error_rate": 1.0}}
        assert "backend-v1-0 now fails every request" in done(seen)[0].text
        await pilot.press("x")
        await wait_until(lambda: len(done(seen)) == 2, "chaos off", pause=pilot.pause)
        assert server.chaos == {"backend-v1-0": {}}
        assert "healed" in done(seen)[1].text


async def test_x_on_the_pods_tab_fails_the_selected_pod(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(size=(160, 40), message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        await pilot.press("2")
        pods = app.dashboard.pods
        await wait_until(lambda: len(pods.keys) == 5, "pods", pause=pilot.pause)
        await pilot.press("down", "down")  # ingress, frontend-0, backend-v1-0
        target = pods.cursor_key
        assert target == "backend-v1-0"
        await pilot.press("down")
        assert pods.cursor_key == "backend-v1-1"
        await pilot.press("x")
        await wait_until(lambda: bool(done(seen)), "chaos", pause=pilot.pause)
        assert list(server.chaos) == ["backend-v1-1"]


async def test_f_switches_a_fault_at_runtime_on_every_sidecar(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(size=(140, 40), message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        view = sample_view(0)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        app.dashboard.routes.focus()
        await pilot.press("f")
        await wait_until(lambda: len(done(seen)) == 1, "fault on", pause=pilot.pause)
        key = "fault.http.backend.items.abort"
        expected = {f"{key}.abort_percent": "50", f"{key}.http_status": "503"}
        assert server.runtime == dict.fromkeys(session.control.pods, expected)
        assert done(seen)[0].text.startswith("fault on: backend/items aborts 50%")
        await pilot.press("f")
        await wait_until(lambda: len(done(seen)) == 2, "fault off", pause=pilot.pause)
        assert server.runtime == {pod: {} for pod in session.control.pods}


async def test_f_acts_on_the_load_s_route_until_the_user_moves_the_cursor(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    # The demo mesh's load (/items) takes frontend/default; the top row, backend/items here
    # (backend/canary on the example), is not where a new user's `l` then `f` would show.
    seen: list[Message] = []
    app = make_app(source, session)

    def with_load_route(tick: int) -> MeshView:
        view = sample_view(tick)
        taken = dataclasses.replace(view.routes[1], vhost="frontend", route="default")
        return dataclasses.replace(view, routes=(*view.routes, taken))

    async with app.run_test(size=(140, 40), message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        view = with_load_route(0)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        routes = app.dashboard.routes
        assert routes.keys[0] == "backend/items"
        assert routes.cursor_key == "frontend/default"
        await pilot.press("f")
        await wait_until(lambda: len(done(seen)) == 1, "fault on", pause=pilot.pause)
        assert done(seen)[0].text.startswith("fault on: frontend/default aborts 50%")
        on = {"abort_percent": "50", "http_status": "503"}
        expected = {f"fault.http.frontend.default.abort.{k}": v for k, v in on.items()}
        assert server.runtime == dict.fromkeys(session.control.pods, expected)
        # Moved by the user, the cursor stays where they put it, view after view.
        routes.focus()
        await pilot.press("up")
        chosen = routes.cursor_key
        assert chosen is not None and chosen != "frontend/default"
        later = with_load_route(1)
        source.emit(later)
        await wait_until(lambda: app.view is later, "a later view", pause=pilot.pause)
        assert routes.cursor_key == chosen
        await pilot.press("f")
        await wait_until(lambda: len(done(seen)) == 2, "second fault", pause=pilot.pause)
        assert done(seen)[1].text.startswith(f"fault on: {chosen} aborts 50%")


async def test_f_with_a_wrong_token_says_why(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    session.token = "not-" + TOKEN
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        source.emit(sample_view(0))
        await wait_until(lambda: app.view is not None, "view", pause=pilot.pause)
        await pilot.press("f")
        await wait_until(lambda: bool(done(seen)), "result", pause=pilot.pause)
        result = done(seen)[0]
        assert not result.ok
        assert "403" in result.text
        assert server.runtime == {}


async def test_w_shifts_the_canary_weight_through_the_control_plane(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    seen: list[Message] = []
    app = make_app(source, session)
    async with app.run_test(size=(140, 40), message_hook=seen.append) as pilot:
        await started(pilot, app, source)
        view = sample_view(0)
        source.emit(view)
        await wait_until(lambda: app.view is view, "view", pause=pilot.pause)
        app.dashboard.routes.focus()  # the cursor is on backend/items, a 90/10 split
        await pilot.press("w")
        await wait_until(lambda: bool(done(seen)), "canary", pause=pilot.pause)
        assert done(seen)[0].ok, done(seen)[0].text
        assert "backend/items: backend.v1 70 / backend.v2 30" in done(seen)[0].text
        assert session.control.version == 2
        # Every sidecar got the new split in its pushed config.
        assert set(server.configs) == set(session.control.pods)
        config = server.configs["frontend-0"]
        vhost = next(v for v in config["virtual_hosts"] if v["name"] == "backend")
        route = next(r for r in vhost["routes"] if r["name"] == "items")
        weights = {c["cluster"]: c["weight"] for c in route["clusters"]}
        assert weights == {"backend.v1": 70, "backend.v2": 30}
        assert json.dumps(config)  # what was pushed is plain JSON


async def test_after_w_the_reload_line_speaks_of_the_version_the_header_shows(
    session: FakeSession, source: FakeSource, server: PodsServer
) -> None:
    # The canary key applies v2 through the control plane: the header's version moved, and
    # the reload line once still said "applied v1" (the start's), as did `last_reload`.
    app = make_app(source, session)
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot, app, source)
        source.emit(sample_view(0))
        await wait_until(lambda: app.view is not None, "view", pause=pilot.pause)
        await pilot.press("w")
        await wait_until(lambda: session.control.version == 2, "canary", pause=pilot.pause)
        header = app.dashboard.query_one("#header")
        await wait_until(
            lambda: "reload: applied v2 " in str(header.render()), "reload line", pause=pilot.pause
        )
        text = str(header.render())
        assert " v2 " in text.splitlines()[0]
        assert "applied v1" not in text
        assert "mesh.yaml unchanged" in text
        assert up(app).reload_ok
        assert session.last_reload is not None and session.last_reload["version"] == 2
        assert session.last_reload[BY_KEY] is True  # watching dashboards tell it so too


async def test_the_load_goes_to_the_mesh_s_own_path_not_a_fixed_one(
    server: PodsServer, source: FakeSource, tmp_path: Path
) -> None:
    # The demo mesh without its load_path: its first GET route is `prefix: /`.
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text(DEMO_MESH.read_text().replace("  load_path: /items\n", ""))
    session = FakeSession(server, mesh_file=mesh_file)
    app = make_app(source, session)
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await started(pilot, app, source)
            bar = str(app.dashboard.query_one("#load-bar").render())
            assert f"send 20 req/s to {server.url}/ " in bar, bar
            await pilot.press("l")
            commands = app.controller.commands
            assert isinstance(commands, Commands)
            await wait_until(
                lambda: commands.load is not None and commands.load.running,
                "on",
                pause=pilot.pause,
            )
            assert commands.load is not None and commands.load.url == f"{server.url}/"
            await pilot.press("l")
            await wait_until(
                lambda: commands.load is not None and not commands.load.running,
                "off",
                pause=pilot.pause,
            )
    finally:
        await session.control.down()
