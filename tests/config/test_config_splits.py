"""Traffic splits by route key: what the control plane writes into the session's state, and
how a dashboard of another process lays it back over the file's model (config/splits.py)."""

from __future__ import annotations

import json

from meshdev.config import load_mesh
from meshdev.config.splits import split_weights, with_weights
from tests.support import DEMO_MESH


def test_the_applied_splits_come_back_from_json_over_the_files_model() -> None:
    file = load_mesh(DEMO_MESH)
    assert split_weights(file) == {
        "backend/canary": {"backend.v1": 50, "backend.v2": 50},
        "backend/items": {"backend.v1": 90, "backend.v2": 10},
    }
    # As the canary key leaves it, through the state file's JSON.
    applied = {**split_weights(file), "backend/items": {"backend.v1": 70, "backend.v2": 30}}
    back = with_weights(file, json.loads(json.dumps(applied)))
    assert split_weights(back)["backend/items"] == {"backend.v1": 70, "backend.v2": 30}
    assert back.routes["backend"][0] is file.routes["backend"][0]
    assert split_weights(back) == applied
    # The file's own splits change nothing: the very model comes back.
    assert with_weights(file, split_weights(file)) is file


def test_what_does_not_fit_the_file_keeps_the_files_weights() -> None:
    file = load_mesh(DEMO_MESH)
    weights: object
    for weights in (
        None,
        [],
        {"backend/items": {"backend.v1": 70}},  # the file was saved with other destinations
        {"backend/items": {"backend.v1": 70, "backend.v3": 30}},
        {"backend/items": {"backend.v1": "70", "backend.v2": 30}},
        {"backend/items": {"backend.v1": -1, "backend.v2": 30}},
        {"backend/items": {"backend.v1": True, "backend.v2": 30}},
        {"backend/gone": {"backend.v1": 70, "backend.v2": 30}},
        {"backend/items": 7},
    ):
        assert with_weights(file, weights) is file, weights
