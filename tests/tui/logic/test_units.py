"""The dashboard's pure parts: explanations, weights, formatting, the mailbox, log filters."""

from __future__ import annotations

import dataclasses
import re
from types import MappingProxyType

import pytest
from rich.console import Console
from rich.segment import Segment
from rich.text import Text

from meshdev.config import load_mesh
from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.view import FLAGS, Event, MeshView
from meshdev.testing.sample_views import sample_view
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.actions import fault_values, shift_canary, shifted_weights
from meshdev.tui.logic.explain import destinations, explain
from meshdev.tui.logic.mailbox import ViewMailbox
from meshdev.tui.logic.pacer import FramePacer
from meshdev.tui.screens.route_detail import detail_text, histogram_lines
from meshdev.tui.tables.keyed import as_cell
from meshdev.tui.tables.routes import route_row
from meshdev.tui.widgets.header import HeaderFacts, header_text
from meshdev.tui.widgets.logs_view import compile_filter, render_line
from tests.support import DEMO_MESH


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return load_mesh(DEMO_MESH)


@pytest.mark.parametrize(
    ("route", "flag", "headline"),
    [
        ("items", "UO", "503 UO <- policies.backend.circuit_breaker.max_pending_requests: 5"),
        ("items", "UT", "504 UT <- routes.backend[1].timeout: 2s"),
        ("items", "URX", "5xx URX <- routes.backend[1].retries.attempts: 2"),
        (
            "items",
            "RL",
            "429 RL <- routes.backend[1].rate_limit: {requests_per_second: 200, burst: 50}",
        ),
        ("canary", "FI", "503 FI <- routes.backend[0].fault.abort: {percent: 5, status: 503}"),
        (
            "canary",
            "DI",
            "delayed DI <- routes.backend[0].fault.delay: {percent: 10, fixed: 300ms}",
        ),
        ("items", "UF", "503 UF <- policies.backend.connect_timeout: 1s"),
        ("items", "UH", "503 UH <- services.backend.versions.v1.replicas: 2"),
        ("items", "NR", "404 NR <- routes.backend: no match among its 3 routes"),
    ],
)
def test_each_flag_is_explained_by_its_field(
    mesh: Mesh, route: str, flag: str, headline: str
) -> None:
    assert explain(mesh, "backend", route, flag).headline() == headline


def test_every_flag_has_an_explanation(mesh: Mesh) -> None:
    for flag in FLAGS:
        cause = explain(mesh, "backend", "items", flag)
        assert cause.fields, flag
        assert cause.meaning


def test_explanations_name_envoy_defaults_when_mesh_yaml_is_silent(mesh: Mesh) -> None:
    # frontend has a breaker but no routes: its default route and Envoy's timeout apply.
    assert explain(mesh, "frontend", "default", "UT").headline() == (
        "504 UT <- routes.frontend.timeout: 15s (not set: Envoy's default)"
    )
    no_policy = mesh.model_copy(update={"policies": MappingProxyType({})})
    uo = explain(no_policy, "backend", "items", "UO")
    assert uo.fields[0] == (
        "policies.backend.circuit_breaker.max_pending_requests: 1024 (not set: Envoy's default)"
    )
    assert explain(None, "backend", "items", "UO").fields  # no mesh: still says something


def test_a_route_sends_to_the_services_of_its_subsets(mesh: Mesh) -> None:
    assert destinations(mesh, "backend", "items") == ["backend"]
    assert destinations(mesh, "backend", "nope") == ["backend"]


def test_canary_weights_step_up_and_wrap() -> None:
    weights = {"backend.v1": 90, "backend.v2": 10}
    seen = []
    for _ in range(7):
        weights = shifted_weights(weights, 20)
        assert sum(weights.values()) == 100
        seen.append(weights["backend.v2"])
    assert seen == [30, 50, 70, 90, 100, 0, 20]
    three = shifted_weights({"a": 60, "b": 30, "c": 10}, 20)
    assert three == {"a": 40, "b": 30, "c": 30}
    assert shifted_weights({"a": 3, "b": 1}, 20) == {"a": 55, "b": 45}


def test_shift_canary_changes_only_the_chosen_route(mesh: Mesh) -> None:
    shifted = shift_canary(mesh, ["backend/items"])
    assert shifted is not None
    new, text = shifted
    assert text == "backend/items: backend.v1 70 / backend.v2 30"
    old_routes, new_routes = mesh.routes["backend"], new.routes["backend"]
    assert new_routes[1].to == {"backend.v1": 70, "backend.v2": 30}
    assert new_routes[0] == old_routes[0]
    assert new_routes[2] == old_routes[2]
    assert mesh.routes["backend"][1].to == {"backend.v1": 90, "backend.v2": 10}  # untouched
    # Without a preference: the first weighted route in mesh.yaml's order.
    first = shift_canary(mesh)
    assert first is not None
    assert first[1].startswith("backend/canary")
    # Nothing weighted: nothing to shift.
    plain = mesh.model_copy(update={"routes": MappingProxyType({})})
    assert shift_canary(plain) is None


def test_fault_values_switch_on_and_remove() -> None:
    on = fault_values("backend", "items", True)
    assert on == {
        "fault.http.backend.items.abort.abort_percent": "50",
        "fault.http.backend.items.abort.http_status": "503",
    }
    assert fault_values("backend", "items", False) == dict.fromkeys(on, "")


def test_sparkline_scales_to_its_own_maximum() -> None:
    assert fmt.sparkline([0, 1, 2, 4], glyphs="abcde") == " bce"
    assert fmt.sparkline([0, 0], glyphs="abcde", zero="a") == "aa"
    assert fmt.sparkline(list(range(30)), width=5, glyphs="abcde") == "deeee"
    assert fmt.sparkline([]) == ""


def test_numbers_fit_their_cells() -> None:
    assert fmt.rate(1234.5) == "1234"
    assert fmt.rate(12.345) == "12"
    assert fmt.rate(2.345) == "2.3"
    assert fmt.rate(0.5) == "0.50"
    assert fmt.rate(0.0) == "0"
    assert fmt.ms(None) == fmt.DASH
    assert fmt.ms(1500) == "1.5s"
    assert fmt.ms(250) == "250ms"
    assert fmt.ms(12.4) == "12ms"
    assert fmt.ms(2.25) == "2.2ms"
    assert fmt.success(99.5).style == "green"
    assert fmt.success(90.0).style == "bold red"
    assert fmt.seconds(75) == "1m15s"


def test_the_mailbox_keeps_the_newest_view_and_every_event() -> None:
    box = ViewMailbox()
    e = [Event(float(i), "info", str(i)) for i in range(3)]
    assert box.put(MeshView(at=1, events=(e[0],)))
    assert not box.put(MeshView(at=2, events=(e[1], e[2])))
    view, events = box.take()
    assert view is not None and view.at == 2
    assert events == e
    assert box.dropped == 1
    assert box.take() == (None, [])
    assert box.put(MeshView(at=3))  # empty again: the next put needs a nudge


def test_log_filter_hides_and_highlights() -> None:
    pattern = compile_filter("5\\d\\d")
    shown = render_line("GET /items 503 UO", pattern)
    assert shown is not None
    assert [(s.start, s.end) for s in shown.spans] == [(11, 14)]
    assert render_line("GET /items 200", pattern) is None
    assert compile_filter("") is None
    with pytest.raises(re.error):
        compile_filter("(")


def test_histogram_groups_buckets_into_readable_bins() -> None:
    text = histogram_lines([(0.5, 0.5, 10), (1.2, 0.1, 5), (1.5, 0.1, 5), (300.0, 10.0, 1)])
    lines = text.plain.splitlines()
    assert lines[0].split() == ["0ms-1ms", "#" * 40, "10"]
    assert lines[1].split() == ["1ms-2ms", "#" * 40, "10"]
    assert lines[-1].split() == ["200ms-500ms", "#" * 4, "1"]
    assert len(lines) == 9  # the empty bins in between are drawn, as zero
    assert "no requests" in histogram_lines([]).plain


def test_header_says_what_runs_and_how_the_last_reload_went() -> None:
    facts = HeaderFacts(
        "demo",
        "mesh.yaml",
        "process",
        7,
        "http://127.0.0.1:8000/",
        "applied v7 to 7/7 sidecars in 84 ms",
        stale=1,
        sidecars=7,
    )
    plain = header_text(facts).plain
    assert "demo  v7  sidecars 6/7 live  process  http://127.0.0.1:8000/" in plain
    assert "reload: applied v7 to 7/7 sidecars in 84 ms" in plain


def test_the_pacer_spaces_frames_by_their_cost() -> None:
    now = {"wall": 0.0, "cpu": 0.0}
    pacer = FramePacer(share=0.1, max_wait=1.0, wall=lambda: now["wall"], cpu=lambda: now["cpu"])
    assert pacer.delay() == 0.0  # the first frame goes at once
    pacer.painted()
    now["cpu"] += 0.02  # that frame cost 20 ms of CPU: the next may start 200 ms later
    now["wall"] += 0.05
    assert pacer.delay() == pytest.approx(0.15)
    now["wall"] += 0.15
    assert pacer.delay() == 0.0
    pacer.painted()
    now["cpu"] += 0.5  # a very slow frame still leaves one frame a second
    now["wall"] += 0.1
    assert pacer.delay() == pytest.approx(0.9)
    assert pacer.deferred == 2
    # A wait of a few microseconds is no wait (a timer that short would never fire).
    now["wall"] += 0.9 - 1e-6
    assert pacer.delay() == 0.0
    assert pacer.deferred == 2


def test_cell_text_renders_like_text() -> None:
    console = Console(width=20, force_terminal=True, color_system="truecolor")
    samples = [
        Text("12", justify="right", style="red"),
        Text(" OPEN ", style="bold white on red"),
        Text("ab", style="red").append("cd", style="blue"),
        Text("a long cell that is cropped"),
        Text("right and long", justify="right"),
    ]
    for text in samples:
        for width in (4, 8, 16):
            options = console.options.update_width(width).update(no_wrap=True)
            ours = console.render_lines(as_cell(text), options)
            rich = console.render_lines(text, options)
            assert _plain(ours) == _plain(rich), (text, width)
            assert _styles(ours) == _styles(rich), (text, width)


def _plain(lines: list[list[Segment]]) -> list[str]:
    return ["".join(s.text for s in line) for line in lines]


def _styles(lines: list[list[Segment]]) -> list[list[tuple[str, str]]]:
    # Per character, so two ways of splitting the same styled text compare equal.
    return [[(ch, str(s.style)) for s in line for ch in s.text] for line in lines]


def test_the_full_limit_explains_an_overflow_first(mesh: Mesh) -> None:
    cause = explain(mesh, "backend", "items", "UO", full={"max_connections"})
    assert cause.headline() == "503 UO <- policies.backend.circuit_breaker.max_connections: 50"
    assert "policies.backend.circuit_breaker.max_pending_requests: 5" in cause.fields


def test_route_detail_tells_the_apps_own_errors_and_unattributed_flags(mesh: Mesh) -> None:
    view = sample_view(4)
    route = dataclasses.replace(view.routes[0], codes={"200": 10, "503": 9}, flags={"UO": 6})
    view = dataclasses.replace(view, unattributed_flags={"NR": 4, "FI": 0})
    text = detail_text(route, mesh, view).plain
    # The backend breaker's pending and request limits are full in this tick.
    assert f"503 UO {fmt.ARROW} policies.backend.circuit_breaker.max_pending_requests: 5" in text
    assert "3  5xx without a flag: answered so by the upstream app itself" in text
    assert "not tied to one route: NR 4" in text
    assert "FI 0" not in text


def test_open_websockets_show_in_a_routes_flags_and_detail(mesh: Mesh) -> None:
    plain = sample_view(4).routes[0]
    assert "WebSocket" not in detail_text(plain, mesh).plain
    plain_flags = route_row(plain).cells[-1]
    assert isinstance(plain_flags, Text) and "WS" not in plain_flags.plain
    route = dataclasses.replace(
        plain, flags={"UO": 2}, flags_per_s={"UO": 8.0}, upgrades=5, upgrades_open=3
    )
    flags = route_row(route).cells[-1]
    assert isinstance(flags, Text)
    # Open streams first: they are the route's state, the flags what went wrong lately.
    assert flags.plain == "WS 3 UO 8.0"
    assert "WebSocket 3 open, 5 upgrades in the last interval" in detail_text(route, mesh).plain


def test_a_grpc_routes_detail_shows_its_status_codes(mesh: Mesh) -> None:
    plain = sample_view(4).routes[0]
    assert "gRPC status codes" not in detail_text(plain, mesh).plain
    route = dataclasses.replace(plain, grpc_codes={"14": 2, "0": 40, "4": 1})
    text = detail_text(route, mesh).plain
    assert (
        "gRPC status codes (last interval)\n  0 OK 40  4 DEADLINE_EXCEEDED 1  14 UNAVAILABLE 2"
        in (text)
    )
