"""`tracing:` in mesh.yaml: on by default (sampling 100, spans kept, no collector), `sampling:
0` off; collectors as http:// URLs, located when wrong; the JSON Schema knows it."""

from __future__ import annotations

import jsonschema
import pytest

from meshdev.config import MeshInvalid, parse_mesh
from meshdev.config.schema import mesh_json_schema

BASE = "name: demo\nservices:\n  web:\n    command: python app.py\n"


def test_tracing_is_on_by_default_with_no_collector() -> None:
    mesh = parse_mesh(BASE.encode(), "mesh.yaml")
    assert (mesh.tracing.sampling, mesh.tracing.zipkin, mesh.tracing.otlp) == (100.0, None, None)


def test_tracing_with_both_collectors_and_a_sampling_share() -> None:
    text = BASE + (
        "tracing:\n  sampling: 12.5\n  zipkin: http://127.0.0.1:9411/api/v2/spans\n"
        "  otlp: http://localhost:4318/v1/traces\n"
    )
    mesh = parse_mesh(text.encode(), "mesh.yaml")
    assert mesh.tracing.sampling == 12.5
    assert mesh.tracing.zipkin == "http://127.0.0.1:9411/api/v2/spans"
    assert mesh.tracing.otlp == "http://localhost:4318/v1/traces"
    off = parse_mesh((BASE + "tracing: {sampling: 0}\n").encode(), "mesh.yaml")
    assert off.tracing.sampling == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "tracing: {zipkin: 'https://zipkin:9411/api/v2/spans'}",
            "mesh.yaml:5:19 tracing.zipkin: https collectors are not supported; expected an "
            "http:// URL like http://127.0.0.1:9411/api/v2/spans",
        ),
        (
            "tracing: {otlp: 'localhost:4318'}",
            "mesh.yaml:5:17 tracing.otlp: expected an http:// URL like "
            "http://127.0.0.1:9411/api/v2/spans",
        ),
        (
            "tracing: {zipkin: 'http://:9411/'}",
            "mesh.yaml:5:19 tracing.zipkin: expected a host and an optional port after http://",
        ),
        (
            "tracing: {zipkin: 'http://z:99999/'}",
            "mesh.yaml:5:19 tracing.zipkin: expected a URL like "
            "http://127.0.0.1:9411/api/v2/spans (its port is wrong)",
        ),
        (
            "tracing: {zipkin: 'http://127.0.0.1:4318/v1/traces'}",
            "mesh.yaml:5:19 tracing.zipkin: this is an OTLP path (/v1/traces): give it as otlp",
        ),
        (
            "tracing: {otlp: 'http://127.0.0.1:9411/api/v2/spans'}",
            "mesh.yaml:5:17 tracing.otlp: this is a Zipkin path (/api/v2/spans): give it as zipkin",
        ),
    ],
)
def test_a_bad_collector_is_located(line: str, message: str) -> None:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh((BASE + line + "\n").encode(), "mesh.yaml")
    assert [str(p) for p in info.value.problems] == [message]


def test_sampling_is_a_percent() -> None:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh((BASE + "tracing: {sampling: 150}\n").encode(), "mesh.yaml")
    [problem] = info.value.problems
    assert str(problem).startswith("mesh.yaml:5:21 tracing.sampling:")
    assert "100" in str(problem)


def test_an_unknown_key_gets_a_did_you_mean() -> None:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh((BASE + "tracing: {samplng: 50}\n").encode(), "mesh.yaml")
    [problem] = info.value.problems
    assert "unknown key 'samplng'; did you mean 'sampling'?" in str(problem)
    assert str(problem).startswith("mesh.yaml:5:11 tracing")


def test_the_schema_knows_tracing() -> None:
    schema = mesh_json_schema()
    fields = schema["$defs"]["Tracing"]["properties"]
    assert set(fields) == {"sampling", "zipkin", "otlp"}
    assert "0 turns tracing off" in fields["sampling"]["description"]
    doc = {"name": "x", "services": {"a": {"command": "c"}}, "tracing": {"sampling": 5}}
    jsonschema.validate(doc, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "tracing": {"sampling": 101}}, schema)
