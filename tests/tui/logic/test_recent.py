"""The refusals of the last seconds (tui/logic/recent.py): counted from every view over a
sliding window of the views' own time, and the views' deferred security parts worked out only
where a refusal may be in them."""

from __future__ import annotations

import dataclasses

from meshdev.telemetry.aggregation.deferred_view import DeferredSecurityView
from meshdev.telemetry.aggregation.view import EdgeStats, MeshView, PodSecurity, RouteStats
from meshdev.tui.logic.recent import RecentFailures, Seen

EDGE = EdgeStats("frontend", "backend", "mtls", 10.0, 0.0)
ITEMS = RouteStats("backend", "items", 10.0, 100.0, 1.0, 2.0, 3.0, 0.0, 100)
POD = PodSecurity("backend-0", "backend", "STRICT", 10.0, 0.0)


def view(at: float, *, denied: float = 0.0, failed: int = 0, refused: int = 0) -> MeshView:
    codes = {"200": 10, **({"403": round(denied / 4)} if denied else {})}
    flags = {"UF": failed} if failed else {}
    return MeshView(
        at=at,
        routes=(dataclasses.replace(ITEMS, codes=codes, flags=flags),),
        edges=(
            dataclasses.replace(
                EDGE,
                denied_per_s=denied,
                tls_failures={"fail_verify_san": failed} if failed else {},
            ),
        ),
        pod_security=(
            dataclasses.replace(
                POD,
                rbac_denied_per_s=denied,
                tls_failures={"no_filter_chain_match": refused} if refused else {},
            ),
        ),
    )


def test_a_refusal_stays_for_the_window_and_says_how_long_ago() -> None:
    recent = RecentFailures(window=2.0)
    recent.observe(view(100.0, denied=4.0))
    for tick in range(1, 8):
        recent.observe(view(100.0 + tick / 4))
        assert recent.denied(EDGE.key) == Seen(1, tick / 4)
        assert recent.route(ITEMS.key, "403") == Seen(1, tick / 4)
        assert recent.refused_callers(["backend"]) == ["frontend"]
        assert recent.rbac_denied(["backend"])
    last = recent.route(ITEMS.key, "403")
    assert last is not None and last.when(2.0) == "the last 1.8 s ago, 1 in the last 2 s"
    recent.observe(view(102.0))  # two seconds after it: out of the window
    assert recent.denied(EDGE.key) is None
    assert recent.route(ITEMS.key, "403") is None
    assert recent.refused_callers(["backend"]) == []
    assert not recent.rbac_denied(["backend"])


def test_counts_add_up_over_the_window_from_rates_and_counts() -> None:
    recent = RecentFailures(window=10.0)
    recent.observe(view(100.0, denied=8.0, failed=1, refused=2))  # 2 in its 0.25 s
    recent.observe(view(100.5, denied=4.0, failed=2))  # 2 in the 0.5 s since the last
    assert recent.denied(EDGE.key) == Seen(4, 0.0)
    assert recent.route(ITEMS.key, "UF") == Seen(3, 0.0)
    assert recent.tls_failures(["backend"]) == (
        {"fail_verify_san": 3},
        {"no_filter_chain_match": 2},
    )
    assert recent.tls_failures(["frontend"]) == ({}, {})
    # A view that is not newer (a repeat) counts nothing twice.
    recent.observe(view(100.5, denied=4.0, failed=2))
    assert recent.denied(EDGE.key) == Seen(4, 0.0)


def deferred(v: MeshView) -> DeferredSecurityView:
    parts = (v.edges, v.pod_security)
    fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    fields.update(edges=(), pod_security=())
    return DeferredSecurityView(**fields, security=lambda: parts)


def test_security_parts_are_read_only_when_shown_or_where_a_route_failed() -> None:
    recent = RecentFailures()
    quiet = deferred(view(100.0, refused=1))
    recent.observe(quiet, security=False)
    assert quiet.security_pending  # nothing of it shown, and no route refused: not worked out
    assert recent.tls_failures(["backend"]) == ({}, {})
    shown = deferred(view(100.25, refused=1))
    recent.observe(shown, security=True)
    assert not shown.security_pending
    assert recent.tls_failures(["backend"]) == ({}, {"no_filter_chain_match": 1})
    refused = deferred(view(100.5, denied=4.0))
    recent.observe(refused, security=False)
    assert not refused.security_pending  # a 403 on a route: whose, the edges say
    assert recent.refused_callers(["backend"]) == ["frontend"]


def test_a_clock_set_back_starts_the_window_anew() -> None:
    recent = RecentFailures()
    recent.observe(view(1000.0, denied=4.0))
    recent.observe(view(1000.25))
    assert recent.denied(EDGE.key) == Seen(1, 0.25)
    recent.observe(view(900.0, denied=8.0))  # not ignored as older: counted afresh
    assert recent.denied(EDGE.key) == Seen(2, 0.0)
    recent.observe(view(900.25))
    assert recent.denied(EDGE.key) == Seen(2, 0.25)
