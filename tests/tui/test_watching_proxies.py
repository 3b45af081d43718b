"""`meshdev watch`'s dashboard: no mesh of its own, a real TelemetrySource polling an
Envoy-style admin API over loopback HTTP (Envoy's /stats?format=json, /clusters, /config_dump)."""

from __future__ import annotations

from meshdev.telemetry.io.source import TelemetrySource
from meshdev.tui.app import MeshdevApp
from meshdev.tui.controllers import WatchController
from tests.support import wait_until
from tests.telemetry.io.test_telemetry_http import FakeEnvoy
from tests.telemetry.support import Server


async def test_the_dashboard_watches_an_envoy_by_its_admin_url() -> None:
    envoy = FakeEnvoy()
    server = await Server(envoy.app).start()
    source = TelemetrySource([("edge", server.url)], interval=0.1)
    app = MeshdevApp(source, WatchController("watching 1 proxy"))
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            d = app.dashboard
            await wait_until(
                lambda: "site/home" in d.routes.keys and "web" in d.clusters.keys,
                "the Envoy's route and cluster",
                pause=pilot.pause,
            )
            await wait_until(
                lambda: d.routes.cell_text("site/home", "p50").strip() != "-",
                "latency",
                pause=pilot.pause,
            )
            assert d.routes.cell_text("site/home", "p50").strip() == "7.0ms"
            assert "UO" in d.routes.cell_text("site/home", "flags")
            header = str(d.query_one("#header").render())
            assert "watching 1 proxy" in header and "sidecars 1/1 live" in header
            assert " v0" not in header  # no mesh file, no config version to show
            # The demo keys act on a mesh meshdev runs; here they say so and change nothing.
            await pilot.press("b")
            await wait_until(
                lambda: any("not running here" in n.message for n in app._notifications),
                "the refusal",
                pause=pilot.pause,
            )
            await pilot.press("q")
            await wait_until(lambda: app.return_code is not None, "quit", pause=pilot.pause)
        assert app.return_code == 0
    finally:
        await server.stop()
