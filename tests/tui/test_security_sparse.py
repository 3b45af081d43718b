"""The 403 and TLS explanations at a low rate of refusals: one a second, in one view of four
(views come every 0.25 s). Each view counts its own interval, so an explanation drawn from
the view alone showed in one frame of four and was gone in the others; the dashboard keeps it
for the last seconds of views (tui/logic/recent.py), saying how recent it is."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static

from meshdev.telemetry.aggregation.view import MeshView
from meshdev.testing.sample_views import sample_view, secured_mesh
from meshdev.tui.app import MeshdevApp
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.recent import WINDOW_S
from meshdev.tui.screens.route_detail import RouteDetailScreen
from tests.support import wait_until
from tests.tui.tuifakes import FakeSession, FakeSource, make_app, started

EDGE = "frontend->backend"
DENIED_BY = "denied by no-admin DENY or outside ALLOW frontend-reads"
VIEWS_PER_S = 4


def refusing(tick: int, refused: bool) -> MeshView:
    """The secured sample at `tick`, where backend refuses one of frontend's requests (a 403
    of its RBAC filter) only when `refused`."""
    view = sample_view(tick, secured=True)
    items, *others = view.routes
    codes = {k: v for k, v in items.codes.items() if k != "403"}
    return dataclasses.replace(
        view,
        routes=(
            dataclasses.replace(items, codes={**codes, "403": 1} if refused else codes),
            *others,
        ),
        edges=tuple(
            dataclasses.replace(e, denied_per_s=VIEWS_PER_S if refused and e.key == EDGE else 0.0)
            for e in view.edges
        ),
        pod_security=tuple(
            dataclasses.replace(
                p,
                rbac_denied_per_s=(VIEWS_PER_S if refused and p.node == "backend-v1-0" else 0.0)
                if p.rbac_denied_per_s is not None
                else None,
                tls_failures={},
            )
            for p in view.pod_security
        ),
    )


def failing_handshake(tick: int, failed: bool) -> MeshView:
    """The secured sample at `tick` where one of frontend's connections to backend fails its
    handshake (backend's certificate names another identity) only when `failed`: a 503 UF on
    the route, `fail_verify_san` on frontend's cluster."""
    view = refusing(tick, False)
    items, *others = view.routes
    flags = {k: v for k, v in items.flags.items() if k != "UF"}
    return dataclasses.replace(
        view,
        routes=(dataclasses.replace(items, flags={**flags, "UF": 1} if failed else flags), *others),
        edges=tuple(
            dataclasses.replace(
                e, tls_failures={"fail_verify_san": 1} if failed and e.key == EDGE else {}
            )
            for e in view.edges
        ),
    )


async def emit(pilot: Pilot[Any], app: MeshdevApp, source: FakeSource, view: MeshView) -> None:
    source.emit(view)
    await wait_until(lambda: app.view is view, "the view", pause=pilot.pause)


async def test_the_edge_names_what_refused_it_between_sparse_403s(
    session: FakeSession, source: FakeSource
) -> None:
    session.mesh = secured_mesh(session.mesh)
    app = make_app(source, session)
    async with app.run_test(size=(140, 40)) as pilot:
        await started(pilot, app, source)
        await pilot.press("5")
        edges = app.dashboard.security.edges
        said: list[str] = []
        for tick in range(4 * VIEWS_PER_S):  # four seconds, one 403 each
            await emit(pilot, app, source, refusing(tick, tick % VIEWS_PER_S == 0))
            said.append(edges.cell_text(EDGE, "policies"))
        assert said[0] == DENIED_BY  # in the view
        assert said[1:4] == [f"{DENIED_BY}  (last 403 {s} s ago)" for s in ("0.2", "0.5", "0.8")]
        assert all(text.startswith(DENIED_BY) for text in said)
        # None for longer than the window: the destination's policies, as with no 403 at all.
        tick = 4 * VIEWS_PER_S
        while tick <= (4 + WINDOW_S) * VIEWS_PER_S:
            await emit(pilot, app, source, refusing(tick, False))
            tick += 1
        assert edges.cell_text(EDGE, "policies") == "no-admin DENY, frontend-reads ALLOW"


async def detail_bodies(
    pilot: Pilot[Any],
    app: MeshdevApp,
    source: FakeSource,
    make: Callable[[int, bool], MeshView],
    seconds: int = 3,
) -> list[str]:
    """The route detail of backend/items after each view of `seconds` with one failure a
    second (at each second's first view)."""
    await emit(pilot, app, source, make(0, True))
    app.dashboard.routes.focus()
    await pilot.press("enter")
    await wait_until(
        lambda: isinstance(app.screen, RouteDetailScreen),
        "detail",
        pause=pilot.pause,
    )
    bodies = []
    for tick in range(1, seconds * VIEWS_PER_S):
        await emit(pilot, app, source, make(tick, tick % VIEWS_PER_S == 0))
        bodies.append(str(app.screen.query_one("#detail-body", Static).render()))
    return bodies


async def test_the_route_detail_keeps_explaining_sparse_403s(
    session: FakeSession, source: FakeSource
) -> None:
    session.mesh = secured_mesh(session.mesh)
    app = make_app(source, session)
    async with app.run_test(size=(140, 60)) as pilot:
        await started(pilot, app, source)
        bodies = await detail_bodies(pilot, app, source, refusing)
        for body in bodies:
            assert f"403 RBAC {fmt.ARROW} authorization.backend[0]: {{name: frontend-reads" in body
            assert "no ALLOW policy of backend matches this caller/path" in body
        # Between two of them it says how recent they are; with one in the view, it does not.
        # The count is the last interval's, as on every line; the window's is said apart.
        assert "     0  403 RBAC" in bodies[0]
        assert "     1  403 RBAC" in bodies[VIEWS_PER_S - 1]
        assert "none in the last interval: the last 0.2 s ago, 1 in the last 10 s" in bodies[0]
        assert "none in the last interval: the last 0.8 s ago, 2 in the last 10 s" in bodies[6]
        assert "none in the last interval" not in bodies[VIEWS_PER_S - 1]


async def test_the_route_detail_keeps_explaining_sparse_failed_handshakes(
    session: FakeSession, source: FakeSource
) -> None:
    session.mesh = secured_mesh(session.mesh)
    app = make_app(source, session)
    async with app.run_test(size=(140, 60)) as pilot:
        await started(pilot, app, source)
        bodies = await detail_bodies(pilot, app, source, failing_handshake)
        for body in bodies:
            assert "503 UF" in body
            assert (
                "mTLS handshake failed: backend's certificate names another identity than "
                "spiffe://cluster.local/ns/demo/sa/backend" in body
            )
        assert "none in the last interval: the last 0.5 s ago, 1 in the last 10 s" in bodies[1]
