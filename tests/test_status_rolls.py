"""`meshdev status`'s lines for the last code roll of each service (docs/code-loop.md)."""

from __future__ import annotations

from typing import Any

from meshdev.control import RollReport
from meshdev.status import render_table


def _status(*rolls: RollReport) -> dict[str, Any]:
    return {
        "mesh": "shop",
        "runtime": "process",
        "pods": [],
        "last_rolls": {r.service: {"at": 0.0, **r.to_json()} for r in rolls},
    }


def test_each_kind_of_roll_reads_as_what_happened() -> None:
    table = render_table(
        _status(
            RollReport("api", True, (("api-0", "api-0-r1"), ("api-1", "api-1-r1")), 812.0),
            RollReport("web", False, (), 900.0, "pod web-0-r1: app exited with code 1", ("web-0",)),
            RollReport("db", False, (), 300.0, kept=("db-0",), superseded=True),
        )
    ).splitlines()
    assert "last code roll of api: 2 pods in 812.0 ms" in table
    assert "last code roll of web: failed, old pods serve" in table
    assert "  pod web-0-r1: app exited with code 1" in table
    # Cut short by a newer save is not a failure: the newest code is rolling.
    assert "last code roll of db: cut short by a newer save, rolling it" in table
