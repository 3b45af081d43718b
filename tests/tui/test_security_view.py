"""The security tab (5): who calls whom and how, each pod's RBAC, TLS and certificate, and
what a mesh without security is told; the route detail's 403s; the help's key."""

from __future__ import annotations

import dataclasses
import json
from functools import partial

from rich.text import Text
from textual.widgets import Static

from meshdev.telemetry.aggregation.deferred_view import DeferredSecurityView
from meshdev.telemetry.aggregation.mesh import Aggregator, SidecarInput
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.telemetry.aggregation.topology import from_config_dump
from meshdev.telemetry.io.stream_reader import StreamReader
from meshdev.testing.sample_views import sample_view, secured_mesh
from meshdev.testing.synthetic_sidecar import (
    SyntheticSidecar,
    sidecar_config,
    synthetic_spiffe_id,
)
from meshdev.tui.app import MeshdevApp
from meshdev.tui.controllers import WatchController
from meshdev.tui.logic import format as fmt
from meshdev.tui.screens.help import HelpScreen
from meshdev.tui.screens.route_detail import RouteDetailScreen
from meshdev.tui.tables.keyed import KeyedTable
from tests.support import wait_until
from tests.telemetry.support import Clock
from tests.tui.tuifakes import FakeSession, FakeSource, make_app, started


def style_of(table: KeyedTable, key: str, column: str) -> str:
    cell = table.get_cell(key, column)
    return str(cell.style) if isinstance(cell, Text) else ""


def is_bold(table: KeyedTable, key: str, column: str) -> bool:
    """Whether any part of the cell is bold (its words carry their own styles)."""
    cell = table.get_cell(key, column)
    styles = [cell.style, *(span.style for span in cell.spans)] if isinstance(cell, Text) else []
    return any("bold" in str(style) for style in styles)


async def test_the_security_tab_shows_who_calls_whom_and_each_pods_certificate(
    session: FakeSession, source: FakeSource
) -> None:
    session.mesh = secured_mesh(session.mesh)
    app = make_app(source, session)
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot, app, source)
        view = sample_view(4, secured=True)
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        await pilot.press("5")
        d = app.dashboard
        sec = d.security
        assert d.tabs.active == "security"
        assert app.focused is sec.edges
        assert sec.notice_text.startswith("mTLS STRICT mesh-wide (frontend PERMISSIVE)")
        edges = sec.edges
        assert edges.keys == ["frontend->backend", "ingress->frontend"]
        assert edges.cell_text("frontend->backend", "mode") == "mTLS"
        assert edges.cell_text("frontend->backend", "denied").strip() == "2.5"
        assert "red" in style_of(edges, "frontend->backend", "denied")
        assert edges.cell_text("frontend->backend", "policies") == (
            "denied by no-admin DENY or outside ALLOW frontend-reads"
        )
        assert edges.cell_text("ingress->frontend", "policies") == "none: every caller allowed"
        pods = sec.pods
        assert pods.display
        assert pods.cell_text("backend-v1-0", "mtls") == "STRICT"
        assert pods.cell_text("backend-v1-0", "allowed").strip() == "40"
        assert pods.cell_text("backend-v1-0", "denied").strip() == "1.5"
        assert pods.cell_text("backend-v1-1", "refused") == "plaintext 3"
        assert pods.cell_text("frontend-0", "cert") == "expires in 23h 40m"
        assert style_of(pods, "frontend-0", "cert") == ""
        # Under a tenth of its 24 h left: not renewed at half its life, worth a colour.
        assert pods.cell_text("backend-v2-0", "cert") == "expires in 1h 51m"
        assert "yellow" in style_of(pods, "backend-v2-0", "cert")

        # It follows the live view while it shows...
        more = dataclasses.replace(view.edges[0], denied_per_s=7.0)
        nxt = dataclasses.replace(view, edges=(more, *view.edges[1:]), at=view.at + 1)
        source.emit(nxt)
        await wait_until(lambda: app.view is nxt, "the next view", pause=pilot.pause)
        assert edges.cell_text("frontend->backend", "denied").strip() == "7.0"
        # ...and shows the newest one when switched back to.
        await pilot.press("1")
        cert = view.pod_security[2].cert
        assert cert is not None
        expired = dataclasses.replace(
            view.pod_security[2], cert=dataclasses.replace(cert, expires_in_s=-90.0)
        )
        pods_now = (*view.pod_security[:2], expired, *view.pod_security[3:])
        later = dataclasses.replace(nxt, pod_security=pods_now, at=nxt.at + 1)
        source.emit(later)
        await wait_until(lambda: app.view is later, "a later view", pause=pilot.pause)
        await pilot.press("5")
        assert pods.cell_text("backend-v1-0", "cert") == "expired 1m 30s ago"
        assert "red" in style_of(pods, "backend-v1-0", "cert")


async def test_a_plaintext_mesh_is_told_how_to_turn_security_on(
    session: FakeSession, source: FakeSource
) -> None:
    app = make_app(source, session)  # the demo mesh: no security section
    async with app.run_test(size=(120, 30)) as pilot:
        await started(pilot, app, source)
        view = sample_view(2)
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        await pilot.press("5")
        sec = app.dashboard.security
        notice = str(sec.query_one("#security-notice", Static).render())
        assert "plaintext mesh: add `security: {mtls: STRICT}` to mesh.yaml" in notice
        assert sec.edges.cell_text("frontend->backend", "mode") == "plaintext"
        # Nothing per pod to show: no identities, policies or TLS.
        assert not sec.pods.display


async def test_a_sidecars_real_counts_reach_the_tab(
    session: FakeSession, source: FakeSource
) -> None:
    """Stream documents of synthetic sidecars, aggregated as the dashboard's source does."""
    session.mesh = secured_mesh(session.mesh)
    clock = Clock()
    routes = {"backend": {"items": {"backend.v1": 1}}}
    configs = {
        "frontend-0": sidecar_config(
            "frontend-0",
            routes,
            service="frontend",
            spiffe_id=synthetic_spiffe_id("frontend"),
            tls=["backend.v1"],
        ),
        "backend-v1-0": sidecar_config(
            "backend-v1-0",
            routes,
            service="backend",
            spiffe_id=synthetic_spiffe_id("backend"),
            inbound="127.0.1.4",
            inbound_mtls="STRICT",
        ),
    }
    sidecars = {
        n: SyntheticSidecar(c, clock=clock, name_filter=STREAM_FILTER) for n, c in configs.items()
    }
    readers = {n: StreamReader() for n in configs}
    aggregator = Aggregator()

    def aggregate() -> None:
        inputs = [
            SidecarInput(
                node=n,
                admin_url=f"http://{n}:15000",
                latest=readers[n].parse(json.loads(json.dumps(sc.snapshot())), clock()),
                topology=from_config_dump({"config": configs[n].model_dump(mode="json")}),
            )
            for n, sc in sidecars.items()
        ]
        source.emit(aggregator.build(inputs, at=clock()))

    app = make_app(source, session)
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot, app, source)
        await pilot.press("5")
        aggregate()  # the streams' first documents: nothing counted yet
        clock.advance(0.5)
        sidecars["frontend-0"].request("backend", "items", "backend.v1", 200, 4.0, count=16)
        sidecars["frontend-0"].request("backend", "items", "backend.v1", 403, 1.0, count=4)
        sidecars["backend-v1-0"].rbac(allowed=16, denied=4)
        sidecars["backend-v1-0"].inbound_tls("127.0.1.4", handshake=1, no_filter_chain_match=2)
        aggregate()
        edges, pods = app.dashboard.security.edges, app.dashboard.security.pods
        await wait_until(lambda: edges.keys == ["frontend->backend"], "the edge", pause=pilot.pause)
        assert edges.cell_text("frontend->backend", "mode") == "mTLS"
        assert edges.cell_text("frontend->backend", "rps").strip() == "40"
        assert edges.cell_text("frontend->backend", "denied").strip() == "8.0"
        assert pods.cell_text("backend-v1-0", "allowed").strip() == "32"
        assert pods.cell_text("backend-v1-0", "denied").strip() == "8.0"
        assert pods.cell_text("backend-v1-0", "refused") == "plaintext 2"
        assert is_bold(pods, "backend-v1-0", "refused")  # just now
        # An interval later with no refusal: still there (Envoy's counter), no longer bold.
        clock.advance(0.25)
        aggregate()
        await pilot.pause()
        assert pods.cell_text("backend-v1-0", "refused") == "plaintext 2"
        assert not is_bold(pods, "backend-v1-0", "refused")
        # Its config names an identity, and no certificate was read: that is worth red.
        assert pods.cell_text("backend-v1-0", "cert") == "no certificate"


async def test_the_security_parts_are_worked_out_only_once_the_tab_or_a_detail_asks(
    session: FakeSession, source: FakeSource
) -> None:
    session.mesh = secured_mesh(session.mesh)
    clock = Clock()
    routes = {"backend": {"items": {"backend.v1": 1}}}
    config = sidecar_config("frontend-0", routes, service="frontend", tls=["backend.v1"])
    topology = from_config_dump({"config": config.model_dump(mode="json")})
    sidecar = SyntheticSidecar(config, clock=clock, name_filter=STREAM_FILTER)
    reader = StreamReader()
    aggregator = Aggregator()

    def aggregate() -> DeferredSecurityView:
        clock.advance(0.5)
        sidecar.request("backend", "items", "backend.v1", 200, 4.0, count=8)
        snap = reader.parse(json.loads(json.dumps(sidecar.snapshot())), clock())
        inputs = [SidecarInput("frontend-0", "http://frontend-0:15000", snap, topology)]
        view = aggregator.build(inputs, at=clock())
        assert isinstance(view, DeferredSecurityView)
        source.emit(view)
        return view

    app = make_app(source, session)
    async with app.run_test(size=(140, 45)) as pilot:
        await started(pilot, app, source)
        for _ in range(3):
            view = aggregate()
            await wait_until(partial(lambda v: app.view is v, view), "the view", pause=pilot.pause)
            assert view.security_pending  # the traffic tab shows
        await pilot.press("5")
        assert not view.security_pending
        assert app.dashboard.security.edges.keys == ["frontend->backend"]
        await pilot.press("1")
        view = aggregate()
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        assert view.security_pending
        app.dashboard.routes.focus()
        await pilot.press("enter")  # the route detail reads the edges (its 403s' callers)
        await wait_until(
            lambda: isinstance(app.screen, RouteDetailScreen), "detail", pause=pilot.pause
        )
        assert not view.security_pending


async def test_the_route_detail_explains_a_routes_403s(
    session: FakeSession, source: FakeSource
) -> None:
    session.mesh = secured_mesh(session.mesh)
    app = make_app(source, session)
    async with app.run_test(size=(140, 45)) as pilot:
        await started(pilot, app, source)
        view = sample_view(4, secured=True)
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        app.dashboard.routes.focus()
        await pilot.press("enter")  # backend/items: 5 of its requests got 403
        await wait_until(
            lambda: isinstance(app.screen, RouteDetailScreen), "detail", pause=pilot.pause
        )
        body = str(app.screen.query_one("#detail-body", Static).render())
        assert "5  403 RBAC" in body
        assert "authorization.backend[0]: {name: frontend-reads" in body
        assert "no ALLOW policy of backend matches this caller/path" in body


async def test_watching_without_a_mesh_file_the_traffic_says_how_it_is_secured() -> None:
    source = FakeSource()
    app = MeshdevApp(source, WatchController("watching 5 proxies"))
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(lambda: source.on_view is not None, "the source", pause=pilot.pause)
        view = sample_view(4, secured=True)
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        await pilot.press("5")
        sec = app.dashboard.security
        assert sec.notice_text.startswith("mutual TLS on 2 of 2 edges seen")
        assert sec.edges.cell_text("frontend->backend", "mode") == "mTLS"
        # The policies are in a mesh file this dashboard was not given.
        assert sec.edges.cell_text("frontend->backend", "policies") == fmt.DASH


async def test_watching_with_the_mesh_file_shows_its_policies(session: FakeSession) -> None:
    source = FakeSource()
    app = MeshdevApp(source, WatchController("watching 5 proxies", secured_mesh(session.mesh)))
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(lambda: source.on_view is not None, "the source", pause=pilot.pause)
        view = sample_view(4, secured=True)
        source.emit(view)
        await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)
        await pilot.press("5")
        sec = app.dashboard.security
        assert sec.notice_text.startswith("mTLS STRICT mesh-wide")
        assert sec.edges.cell_text("frontend->backend", "policies") == (
            "denied by no-admin DENY or outside ALLOW frontend-reads"
        )


async def test_help_lists_the_security_key(session: FakeSession, source: FakeSource) -> None:
    app = make_app(source, session)
    async with app.run_test(size=(100, 40)) as pilot:
        await started(pilot, app, source)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        body = str(app.screen.query_one("#help-body", Static).render())
        assert "1-6  traffic, pods, events, logs, security, traces" in body
        assert "Security" in body and "certificate expires" in body
