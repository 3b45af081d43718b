"""Round trips: `import istio (export kubernetes M)` is M, modulo the normalisations
meshdev.bridges.kube.canonical documents; on the example, a rich mesh and generated ones,
whose every exported object also passes the real schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from meshdev.bridges.kube.canonical import canonical
from meshdev.bridges.kube.export import Export, export_mesh
from meshdev.bridges.kube.importer import Imported, import_istio
from meshdev.bridges.kube.yamltext import dump_all
from meshdev.config import Mesh, MeshInvalid, load_mesh, parse_mesh
from tests.bridges.kube.kube_meshes import RICH, mesh_of, meshes
from tests.bridges.kube.strict_schemas import all_documents, errors, local_rate_limit_errors

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flask-app" / "mesh.yaml"


def back(result: Export) -> Imported:
    files = [(n, t) for n, t in result.files.items() if n.endswith(".yaml")]
    return import_istio(files)


def same(a: Mesh, b: Mesh) -> None:
    """Equal meshes; a failure shows the difference as the mesh file's JSON."""
    left = json.dumps(a.model_dump(mode="json", by_alias=True), indent=1, sort_keys=True)
    right = json.dumps(b.model_dump(mode="json", by_alias=True), indent=1, sort_keys=True)
    assert left == right


@pytest.mark.parametrize("namespace", [None, "prod"])
def test_the_example_round_trips(namespace: str | None) -> None:
    mesh = load_mesh(EXAMPLE)
    result = back(export_mesh(mesh, namespace=namespace))
    same(result.mesh, canonical(mesh))
    assert result.notes == ()
    # What the normalisations change in the example: only env meshdev sets anyway.
    assert dict(mesh.services["frontend"].env) == {
        **result.mesh.services["frontend"].env,
        "SERVICE": "frontend",
    }


def test_a_mesh_with_security_tcp_and_authorization_round_trips() -> None:
    mesh = mesh_of(RICH)
    result = back(export_mesh(mesh, namespace="shop-prod"))
    same(result.mesh, canonical(mesh))
    assert result.notes == ()
    # A principal of a service of the mesh comes back as that service.
    (only,) = result.mesh.authorization["db"]
    assert only.from_ is not None
    assert only.from_.services == ("api",)
    assert only.from_.principals == ("cluster.local/ns/other/*",)


def test_the_attempt_count_istio_cannot_say_is_all_a_round_trip_loses() -> None:
    mesh = mesh_of(
        "name: m\nservices: {a: {image: x}}\n"
        "policies: {a: {include_attempt_count: true, lb: random}}\n"
    )
    result = back(export_mesh(mesh))
    same(result.mesh, canonical(mesh))
    assert result.mesh.policies["a"].lb == "random"
    assert not result.mesh.policies["a"].include_attempt_count


@pytest.mark.parametrize(
    "tracing",
    [
        "{sampling: 25, zipkin: 'http://zipkin.obs:9411/api/v2/spans'}",
        "{otlp: 'http://otel:4318/v1/traces'}",
        "{sampling: 0.5, zipkin: 'http://z:9411/api/v2/spans', otlp: 'http://o:4318/v1/traces'}",
    ],
)
def test_tracing_to_a_collector_round_trips(tracing: str) -> None:
    # The Telemetry was listed as "no place for a Telemetry": sampling and collectors lost.
    mesh = mesh_of(f"name: m\nservices: {{a: {{image: x}}}}\ntracing: {tracing}\n")
    result = back(export_mesh(mesh))
    same(result.mesh, canonical(mesh))
    assert result.mesh.tracing == mesh.tracing
    assert result.notes == ()


@pytest.mark.parametrize(
    "tracing", ["{sampling: 0}", "{sampling: 0, otlp: 'http://otel:4318/v1/traces'}"]
)
def test_tracing_off_round_trips_as_off(tracing: str) -> None:
    # Left out of the export, it came back as meshdev's default: every request traced.
    mesh = mesh_of(f"name: m\nservices: {{a: {{image: x}}}}\ntracing: {tracing}\n")
    result = back(export_mesh(mesh))
    same(result.mesh, canonical(mesh))
    assert result.mesh.tracing == mesh.tracing
    assert result.mesh.tracing.sampling == 0
    assert result.notes == ()


def test_a_telemetry_of_istio_s_own_keeps_its_sampling_and_names_its_provider() -> None:
    exported = export_mesh(mesh_of("name: m\nservices: {a: {image: x}}\n"))
    files = [(n, t) for n, t in exported.files.items() if n.endswith(".yaml")]
    telemetry = {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": "m"},
        "spec": {"tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 5}]},
    }
    result = import_istio([*files, ("telemetry.yaml", dump_all([telemetry]))])
    assert result.mesh.tracing.sampling == 5
    assert result.mesh.tracing.zipkin is None
    assert [str(n) for n in result.notes] == [
        "telemetry.yaml#1 Telemetry/mesh-default spec.tracing[0].providers: Istio's tracing "
        "providers are its mesh config's, whose addresses these files do not hold: give "
        "tracing.zipkin or tracing.otlp"
    ]


def test_canonical_changes_only_what_it_documents() -> None:
    mesh = load_mesh(EXAMPLE)
    normal = canonical(mesh)
    assert canonical(normal) == normal
    # The example's only route change: `to: greeter` on greeter's own route is implied.
    assert dict(normal.routes) == {
        dest: tuple(r.model_copy(update={"to": None}) if r.to == dest else r for r in routes)
        for dest, routes in mesh.routes.items()
    }
    assert normal.policies == mesh.policies
    assert normal.ingress == mesh.ingress


def test_an_edited_gateway_is_read_from_its_spec() -> None:
    exported = export_mesh(load_mesh(EXAMPLE))
    docs = [dict(d) for d in exported.documents["ingress.yaml"]]
    vs = json.loads(json.dumps(docs[1]))
    vs["spec"]["http"] = [r for r in vs["spec"]["http"] if r["name"] != "web"]
    files = [
        (n, t) for n, t in exported.files.items() if n.endswith(".yaml") and n != "ingress.yaml"
    ]
    result = import_istio([*files, ("ingress.yaml", dump_all([docs[0], vs]))])
    assert result.mesh.ingress is not None
    assert [r.to for r in result.mesh.ingress.routes] == ["greeter", "greeter"]
    assert any(
        "meshdev.dev/ingress-routes no longer matches spec.http" in str(n) for n in result.notes
    )
    # Its own timeout and retries are what the gateway's route had, and are listed.
    assert any(
        "ingress.yaml#2 VirtualService/ingress spec.http[0].retries" in str(n) for n in result.notes
    )


def _load(doc: dict[str, Any]) -> Mesh:
    try:
        return parse_mesh(yaml.safe_dump(doc, allow_unicode=True).encode(), "mesh.yaml")
    except MeshInvalid as exc:  # the strategy's fault: say what it made
        raise AssertionError(
            "\n".join(str(p) for p in exc.problems) + "\n" + yaml.safe_dump(doc)
        ) from None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes())
def test_generated_meshes_round_trip_and_pass_the_schemas(doc: dict[str, Any]) -> None:
    mesh = _load(doc)
    exported = export_mesh(mesh, namespace="ns1")
    for obj in all_documents(exported.documents):
        assert errors(obj) == []
        for patch in obj["spec"].get("configPatches", []) if obj["kind"] == "EnvoyFilter" else []:
            for config in patch["patch"]["value"].get("typed_per_filter_config", {}).values():
                assert local_rate_limit_errors(config) == []
    result = back(exported)
    same(result.mesh, canonical(mesh))
    # An import of an export's files has nothing to list: every field was meshdev's.
    assert result.notes == ()
    # And it loads as the mesh file it is.
    assert parse_mesh(result.text.encode(), "mesh.yaml") == result.mesh


def test_a_liveness_path_is_a_liveness_probe_and_comes_back() -> None:
    # It was dropped without a word: no livenessProbe, so a hung app was never restarted.
    mesh = mesh_of(
        "name: m\nservices:\n"
        "  a: {image: x, health_path: /ready, liveness_path: /alive,"
        " versions: {v1: {}, v2: {}}}\n"
    )
    exported = export_mesh(mesh)
    deployments = [d for d in all_documents(exported.documents) if d["kind"] == "Deployment"]
    assert len(deployments) == 2
    for d in deployments:
        assert errors(d) == []
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"] == {
            "httpGet": {"path": "/alive", "port": 8080},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        }
    result = back(exported)
    same(result.mesh, canonical(mesh))
    assert result.mesh.services["a"].liveness_path == "/alive"
    assert result.notes == ()


def test_a_ready_timeout_is_the_rollout_s_progress_deadline_and_comes_back() -> None:
    mesh = mesh_of("name: m\nservices:\n  a: {image: x, ready_timeout: 90s}\n  b: {image: y}\n")
    exported = export_mesh(mesh)
    deployments = {
        d["metadata"]["name"]: d
        for d in all_documents(exported.documents)
        if d["kind"] == "Deployment"
    }
    for d in deployments.values():
        assert errors(d) == []
    assert deployments["a"]["spec"]["progressDeadlineSeconds"] == 90
    # Kubernetes' default (600 s) for a service that says nothing.
    assert "progressDeadlineSeconds" not in deployments["b"]["spec"]
    result = back(exported)
    same(result.mesh, canonical(mesh))
    assert result.mesh.services["a"].ready_timeout == 90.0
    assert result.mesh.services["b"].ready_timeout is None
    assert result.notes == ()
