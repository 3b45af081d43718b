"""`meshdev status`'s line for the last reload: a save's, or the dashboard's canary key's."""

from __future__ import annotations

from typing import Any

from meshdev.control import ReloadReport
from meshdev.runtime.paths import BY_KEY
from meshdev.status import render_table


def _status(
    report: ReloadReport, *, by_key: bool, weights: dict[str, Any] | None = None
) -> dict[str, Any]:
    # As Session.record writes it into the state file, which `status` reads back.
    last: dict[str, Any] = {"at": 0.0, **report.to_json(), **({BY_KEY: True} if by_key else {})}
    return {
        "mesh": "demo",
        "runtime": "process",
        "file": "/home/me/demo/mesh.yaml",
        "version": report.version,
        "pods": [],
        "last_reload": last,
        "weights": weights or {},
    }


def _reload_lines(status: dict[str, Any]) -> list[str]:
    lines = render_table(status).splitlines()
    assert lines[-1] == "no pods are running"
    at = next(i for i, line in enumerate(lines) if line.startswith("last reload:"))
    return lines[at:-1]


def test_a_canary_key_apply_says_it_came_from_the_key_and_not_the_file() -> None:
    report = ReloadReport(version=3, ok=True, sidecars=5, serving=5, pushed=2, elapsed_ms=84.2)
    line = _reload_lines(_status(report, by_key=True))[0]
    assert line == (
        "last reload: applied v3 to 5/5 sidecars in 84.2 ms by the dashboard's canary key (w); "
        "mesh.yaml unchanged, a save resets it"
    )


def test_a_save_says_nothing_of_the_key() -> None:
    report = ReloadReport(version=3, ok=True, sidecars=5, serving=5, pushed=2, elapsed_ms=84.2)
    line = _reload_lines(_status(report, by_key=False))[0]
    assert line == "last reload: applied v3 to 5/5 sidecars in 84.2 ms"


def test_a_canary_key_apply_that_failed_is_no_rejected_save() -> None:
    # The file validated (it was not even read): sidecars did not take the shifted weights.
    report = ReloadReport(
        version=4,
        ok=False,
        sidecars=5,
        serving=3,
        pushed=2,
        elapsed_ms=2004.0,
        errors=("backend-v1-0: push timed out",),
    )
    assert _reload_lines(_status(report, by_key=True)) == [
        "last reload: the dashboard's canary key (w) failed: v4 on 3/5 sidecars; "
        "mesh.yaml unchanged",
        "  backend-v1-0: push timed out",
    ]
    # A save's failure still reads as before.
    assert _reload_lines(_status(report, by_key=False))[0] == "last reload: rejected"


def test_a_canary_key_apply_says_which_weights_the_sidecars_run() -> None:
    # The file still says 90/10; `status` is where a script or a person learns what runs.
    report = ReloadReport(version=3, ok=True, sidecars=5, serving=5, pushed=2, elapsed_ms=84.2)
    weights = {"backend/items": {"backend.v1": 70, "backend.v2": 30}}
    assert _reload_lines(_status(report, by_key=True, weights=weights))[1:] == [
        "  weights applied: backend/items backend.v1 70 / backend.v2 30"
    ]
    # After a save they are the file's: nothing to tell.
    assert _reload_lines(_status(report, by_key=False, weights=weights))[1:] == []
