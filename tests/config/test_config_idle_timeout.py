"""`policies.<service>.idle_timeout` on an http service: Envoy's stream_idle_timeout for its
upgraded (WebSocket) connections, a duration located like any other when it is not one."""

from __future__ import annotations

import pytest

from meshdev.config import MeshInvalid, parse_mesh
from meshdev.config.schema import mesh_json_schema

BASE = "name: demo\nservices:\n  chat:\n    command: python app.py\npolicies:\n  chat:\n"


def test_an_http_service_takes_an_idle_timeout() -> None:
    mesh = parse_mesh((BASE + "    idle_timeout: 30m\n").encode(), "mesh.yaml")
    assert mesh.policies["chat"].idle_timeout == 1800.0
    off = parse_mesh((BASE + "    idle_timeout: 0s\n").encode(), "mesh.yaml")
    assert off.policies["chat"].idle_timeout == 0.0


@pytest.mark.parametrize("value", ["30", "-1s", "soon"])
def test_a_bad_idle_timeout_is_located(value: str) -> None:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh((BASE + f"    idle_timeout: {value}\n").encode(), "mesh.yaml")
    assert [str(p) for p in info.value.problems] == [
        "mesh.yaml:7:19 policies.chat.idle_timeout: expected a duration like 250ms or 2s"
    ]


def test_the_schema_tells_editors_what_it_does() -> None:
    field = mesh_json_schema()["$defs"]["Policy"]["properties"]["idle_timeout"]
    assert "WebSocket" in field["description"] and "stream_idle_timeout" in field["description"]
