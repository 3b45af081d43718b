"""`export compose --proxy envoy`: a docker-compose.yml valid by the Compose Specification's
schema (and by the compose-spec parser), each pod an Envoy sidecar and its app in the
sidecar's network namespace, run as meshdev runs it; and `import compose` of it gives the
mesh's services back. Nothing here runs Docker: the file is validated, not started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from compose_spec import PyCompose
from hypothesis import HealthCheck, given, settings

from meshdev.bridges.compose import layout
from meshdev.bridges.compose.export import ComposeExport, export_compose, write_compose
from meshdev.bridges.compose.import_ import import_compose, parse_checked
from meshdev.bridges.compose.schema import schema_problems
from meshdev.bridges.envoy.export import compose_placement
from meshdev.config import Mesh, load_mesh, parse_mesh
from meshdev.plan import app_env, pods
from tests.bridges.envoy.envoy_protos import parse, violations
from tests.bridges.envoy.strategies import meshes, valid_mesh

EXAMPLE = Path(__file__).parents[3] / "examples" / "flask-app" / "mesh.yaml"
Doc = dict[str, Any]


def export_example(out: Path, **options: Any) -> ComposeExport:
    return export_compose(
        load_mesh(EXAMPLE),
        mesh_dir=EXAMPLE.parent,
        out_dir=out,
        base_image="python:3.12-slim",
        **options,
    )


def test_example_compose_file_is_valid_compose(tmp_path: Path) -> None:
    export = export_example(tmp_path)
    written = write_compose(export, tmp_path, "mesh.yaml")
    text = (tmp_path / "docker-compose.yml").read_text()
    assert schema_problems(yaml.safe_load(text)) == []
    # A second opinion: the compose-spec parser (Rust) reads it too.
    assert PyCompose.from_yaml(text).service_names()[0] == "ingress"
    # Every bootstrap a sidecar mounts is there, and is one Envoy takes.
    for name, svc in export.document["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(f"./{layout.BOOTSTRAP_DIR}/"):
                bootstrap = yaml.safe_load((tmp_path / source).read_text())
                assert violations(parse(bootstrap)) == [], name
    assert len([p for p in written if p.suffix == ".yaml"]) == 7


def test_each_pod_is_an_envoy_and_its_app_in_its_namespace(tmp_path: Path) -> None:
    export = export_example(tmp_path, envoy_image="envoyproxy/envoy:v1.37.0")
    services = export.document["services"]
    sidecar = services["backend-v1-1"]
    assert sidecar["image"] == "envoyproxy/envoy:v1.37.0"
    assert sidecar["command"] == ["-c", "/etc/envoy/envoy.yaml"]
    assert sidecar["volumes"] == ["./envoy/backend-v1-1.yaml:/etc/envoy/envoy.yaml:ro"]
    # Its read-only admin listener, on the host's loopback.
    assert sidecar["ports"] == [f"127.0.0.1:{export.admin_ports['backend-v1-1']}:15090"]
    app = services["backend-v1-1-app"]
    assert app["network_mode"] == "service:backend-v1-1"
    assert app["init"] is True
    env = app["environment"]
    assert env["HTTP_PROXY"] == "http://127.0.0.1:15001"
    assert (env["HOST"], env["PORT"], env["VERSION"], env["POD"]) == (
        "127.0.0.1",
        "8080",
        "v1",
        "backend-v1-1",
    )
    # Built from the example's folder, as the docker runtime builds it.
    context = (tmp_path / app["build"]["context"]).resolve()
    assert context == EXAMPLE.parent.resolve()
    assert app["build"]["args"] == {"BASE_IMAGE": "python:3.12-slim"}
    assert app["command"] == ["sh", "-c", "python app.py"]
    # The gateway's port, published on 127.0.0.1 only.
    assert "127.0.0.1:8000:8000" in services["ingress"]["ports"]
    assert "ingress-app" not in services


def test_admin_ports_are_distinct_and_skip_the_gateways(tmp_path: Path) -> None:
    mesh = parse_mesh(
        b"name: m\nservices: {a: {image: x, replicas: 3}}\n"
        b"ingress: {port: 9902, routes: [{to: a}]}\n",
        "mesh.yaml",
    )
    export = export_compose(mesh, mesh_dir=tmp_path, out_dir=tmp_path, base_image="b")
    assert export.admin_ports == {"ingress": 9901, "a-0": 9903, "a-1": 9904, "a-2": 9905}


def test_readme_says_how_to_run_and_watch_it(tmp_path: Path) -> None:
    export = export_example(tmp_path)
    write_compose(export, tmp_path, "examples/flask-app/mesh.yaml")
    readme = (tmp_path / "README.txt").read_text()
    assert "docker compose up --build" in readme
    assert "http://127.0.0.1:8000/" in readme
    for pod, port in export.admin_ports.items():
        assert f"{pod}=http://127.0.0.1:{port}" in readme
    for note in export.notes:
        assert f"- {note}" in readme
    assert any(n.field == "services.backend.health_path" for n in export.notes)


def test_a_service_with_no_pods_is_kept_and_not_started(tmp_path: Path) -> None:
    mesh = parse_mesh(
        b"name: m\nservices:\n  a: {image: x, replicas: 0}\n"
        b"  b: {build: ., versions: {v1: {replicas: 1}, v2: {replicas: 0, env: {X: '1'}}}}\n",
        "mesh.yaml",
    )
    export = export_compose(mesh, mesh_dir=tmp_path, out_dir=tmp_path, base_image="base")
    services = export.document["services"]
    assert services["a-app"]["deploy"] == {"replicas": 0}
    assert services["b-v2-app"]["deploy"] == {"replicas": 0}
    assert services["b-v2-app"]["environment"] == {"VERSION": "v2", "X": "1"}
    assert list(services) == ["a-app", "b-v1-0", "b-v1-0-app", "b-v2-app"]
    assert schema_problems(export.document) == []


# -- import compose (export compose M) is M ---------------------------------------------------


def _resolved(build: str | None, base: Path) -> Path | None:
    return None if build is None else (base / build).resolve()


def same_services(mesh: Mesh, mesh_dir: Path, back: Mesh, back_dir: Path) -> None:
    """The services of `back` are `mesh`'s: the same ones, with the same ports, protocols,
    health paths and versions, running the same pods with the same effective environment."""
    assert list(back.services) == list(mesh.services)
    for name, svc in mesh.services.items():
        again = back.services[name]
        assert (again.port, again.protocol, again.health_path, again.excluded_ports) == (
            svc.port,
            svc.protocol,
            svc.health_path,
            svc.excluded_ports,
        ), name
        assert list(again.versions) == list(svc.versions), name
        assert again.pod_count() == svc.pod_count(), name
        for v, ver in svc.versions.items():
            assert again.versions[v].replicas == ver.replicas
    want = [p for p in pods(mesh) if not p.is_ingress]
    got = [p for p in pods(back) if not p.is_ingress]
    assert [p.name for p in got] == [p.name for p in want]
    for w, g in zip(want, got, strict=True):
        assert (g.service, g.subset, g.image, g.command) == (
            w.service,
            w.subset,
            w.image,
            w.command,
        )
        assert _resolved(g.build, back_dir) == _resolved(w.build, mesh_dir)
        placement = compose_placement(w)
        assert app_env(g, placement) == app_env(w, placement), w.name
    # And the services with no pod at all, whose environment is their own.
    for name, svc in mesh.services.items():
        for v, ver in svc.versions.items():
            if ver.replicas == 0:
                merged = {**svc.env, **ver.env}
                again = back.services[name]
                got_env = {**again.env, **again.versions[v].env}
                assert {k: x for k, x in got_env.items() if k != "VERSION"} == {
                    k: x for k, x in merged.items() if k != "VERSION"
                }


def round_trip(mesh: Mesh, root: Path) -> Mesh:
    mesh_dir, out, back_dir = root / "mesh", root / "out", root / "back"
    for d in (mesh_dir, back_dir):
        d.mkdir(parents=True, exist_ok=True)
    export = export_compose(mesh, mesh_dir=mesh_dir, out_dir=out, base_image="python:3.12-slim")
    write_compose(export, out, "mesh.yaml")
    assert schema_problems(export.document) == []
    result = import_compose(
        (out / "docker-compose.yml").read_text(), compose_dir=out, mesh_dir=back_dir
    )
    parse_checked(result.mesh, "mesh.yaml")
    back = parse_mesh(yaml.safe_dump(result.mesh, sort_keys=False).encode(), "mesh.yaml")
    same_services(mesh, mesh_dir, back, back_dir)
    return back


def test_example_comes_back(tmp_path: Path) -> None:
    mesh = load_mesh(EXAMPLE)
    export = export_example(tmp_path / "out")
    write_compose(export, tmp_path / "out", "mesh.yaml")
    result = import_compose(
        (tmp_path / "out" / "docker-compose.yml").read_text(),
        compose_dir=tmp_path / "out",
        mesh_dir=tmp_path,
    )
    back = parse_mesh(yaml.safe_dump(result.mesh, sort_keys=False).encode(), "mesh.yaml")
    same_services(mesh, EXAMPLE.parent, back, tmp_path)
    assert back.name == "demo"
    # What the bootstraps hold (routes, policies, the gateway, frontend's calls) is said, not
    # silently lost.
    assert [n.field for n in result.notes] == ["ingress"]
    assert mesh.services["frontend"].calls and not back.services["frontend"].calls
    assert "the gateway (its port and routes)" in result.notes[0].message
    assert "calls" in result.notes[0].message


def test_a_mesh_without_a_gateway_still_says_what_the_bootstraps_keep(tmp_path: Path) -> None:
    # No ingress: nothing was said, though a's calls (and any routes) were gone.
    mesh = parse_mesh(
        b"name: m\nservices:\n  a: {command: python a.py, calls: [b]}\n"
        b"  b: {command: python b.py}\n",
        "mesh.yaml",
    )
    mesh_dir, out = tmp_path / "mesh", tmp_path / "out"
    mesh_dir.mkdir()
    export = export_compose(mesh, mesh_dir=mesh_dir, out_dir=out, base_image="python:3.12-slim")
    write_compose(export, out, "mesh.yaml")
    result = import_compose(
        (out / "docker-compose.yml").read_text(), compose_dir=out, mesh_dir=mesh_dir
    )
    assert [n.field for n in result.notes] == ["routes"]
    assert "calls" in result.notes[0].message


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(meshes())
def test_generated_meshes_come_back(tmp_path: Path, doc: Doc) -> None:
    mesh = valid_mesh(doc)
    root = tmp_path / str(abs(hash(yaml.safe_dump(doc))))
    round_trip(mesh, root)


def test_watch_becomes_develop_watch_and_comes_back(tmp_path: Path) -> None:
    mesh_dir, out = tmp_path / "mesh", tmp_path / "out"
    (mesh_dir / "web").mkdir(parents=True)
    mesh = parse_mesh(
        b"name: m\nservices:\n"
        b"  web: {build: web, replicas: 2, watch: [app.py, 'src/**/*.py']}\n"
        b"  job: {command: python job.py, watch: [job.py]}\n"
        b"  db: {image: redis, protocol: tcp, port: 6379}\n",
        "mesh.yaml",
        mesh_dir,
    )
    export = export_compose(mesh, mesh_dir=mesh_dir, out_dir=out, base_image="python:3.12-slim")
    services = export.document["services"]
    # Compose watches paths: a glob becomes the folder before its first wildcard.
    assert services["web-0-app"]["develop"] == {
        "watch": [
            {"path": "../mesh/web/app.py", "action": "rebuild"},
            {"path": "../mesh/web/src", "action": "rebuild"},
        ]
    }
    assert services["web-1-app"]["develop"] == services["web-0-app"]["develop"]
    # A command in the base image runs the mounted folder: a restart runs the saved code.
    assert services["job-0-app"]["develop"] == {
        "watch": [{"path": "../mesh/job.py", "action": "restart"}]
    }
    assert "develop" not in services["db-0-app"]
    assert schema_problems(export.document) == []
    notes = {n.field: n.message for n in export.notes}
    assert "replaces each container in place" in notes["services.web.watch"]
    assert "src/**/*.py became the folder" in notes["services.web.watch"]
    assert "became the folder" not in notes["services.job.watch"]

    write_compose(export, out, "mesh.yaml")
    result = import_compose(
        (out / "docker-compose.yml").read_text(), compose_dir=out, mesh_dir=mesh_dir
    )
    assert result.mesh["services"]["web"]["watch"] == ["app.py", "src"]
    assert result.mesh["services"]["job"]["watch"] == ["job.py"]
    assert "watch" not in result.mesh["services"]["db"]


def test_a_liveness_path_compose_cannot_act_on_is_noted(tmp_path: Path) -> None:
    # It went unsaid: the Compose file restarts no hung app, where meshdev does.
    mesh = parse_mesh(
        b"name: m\nservices:\n  a: {command: python a.py, liveness_path: /alive}\n", "mesh.yaml"
    )
    (tmp_path / "mesh").mkdir()
    export = export_compose(
        mesh, mesh_dir=tmp_path / "mesh", out_dir=tmp_path / "out", base_image="python:3.12-slim"
    )
    notes = {n.field: n.message for n in export.notes}
    assert "a hung app is not restarted after /alive fails" in notes["services.a.liveness_path"]


def test_a_ready_timeout_compose_cannot_act_on_is_noted(tmp_path: Path) -> None:
    mesh = parse_mesh(
        b"name: m\nservices:\n  a: {command: python a.py, ready_timeout: 3m}\n", "mesh.yaml"
    )
    (tmp_path / "mesh").mkdir()
    export = export_compose(
        mesh, mesh_dir=tmp_path / "mesh", out_dir=tmp_path / "out", base_image="python:3.12-slim"
    )
    notes = {n.field: n.message for n in export.notes}
    assert "is not failed after 3m" in notes["services.a.ready_timeout"], notes
