"""`meshdev export kubernetes` and `meshdev import istio` on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from meshdev.bridges.kube.canonical import canonical
from meshdev.cli.main import main
from meshdev.config import load_mesh
from meshdev.config.model import Mesh

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flask-app" / "mesh.yaml"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "istio"


def test_export_writes_a_folder_and_warns_by_field(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = CliRunner().invoke(
        main,
        ["export", "kubernetes", str(EXAMPLE), "-o", str(out), "--image-prefix", "reg.io/demo/"],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "00-namespace.yaml",
        "README.txt",
        "ingress.yaml",
        "ratelimit.yaml",
        "service-backend.yaml",
        "service-frontend.yaml",
        "service-greeter.yaml",
    ]
    assert "warning: ingress.port: meshdev publishes the gateway" in result.stderr
    assert f"wrote 7 files to {out} (namespace demo)" in result.stdout
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert f"kubectl apply -f {out}" in readme
    assert "-t reg.io/demo/demo-backend:latest" in readme
    assert f"cd {EXAMPLE.parent}" in readme
    assert "image: reg.io/demo/demo-frontend:latest" in (out / "service-frontend.yaml").read_text()


def test_export_replaces_its_own_folder_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    runner = CliRunner()
    first = runner.invoke(main, ["export", "kubernetes", str(EXAMPLE), "-o", str(out)])
    assert first.exit_code == 0
    # A service the mesh no longer has must not stay behind for `kubectl apply -f`.
    (out / "service-gone.yaml").write_text("kind: Service\n")
    again = runner.invoke(main, ["export", "kubernetes", str(EXAMPLE), "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert not (out / "service-gone.yaml").exists()
    (out / "notes.md").write_text("mine")
    refused = runner.invoke(main, ["export", "kubernetes", str(EXAMPLE), "-o", str(out)])
    assert refused.exit_code == 1
    assert "holds files no earlier export wrote (notes.md)" in refused.output
    assert (out / "notes.md").read_text() == "mine"


def test_export_refuses_a_bad_namespace_and_a_bad_mesh(tmp_path: Path) -> None:
    runner = CliRunner()
    bad_ns = runner.invoke(
        main,
        ["export", "kubernetes", str(EXAMPLE), "-o", str(tmp_path / "o"), "--namespace", "Prod"],
    )
    assert bad_ns.exit_code == 2
    assert "lower case letters" in bad_ns.output
    broken = tmp_path / "mesh.yaml"
    broken.write_text("name: x\nservices: {a: {port: 0, image: i}}\n")
    result = runner.invoke(main, ["export", "kubernetes", str(broken), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "services.a.port" in result.stderr
    assert not (tmp_path / "o").exists()


def test_export_then_import_gives_the_mesh_back(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["export", "kubernetes", str(EXAMPLE), "-o", str(out)]).exit_code == 0
    )
    written = tmp_path / "back.yaml"
    result = runner.invoke(main, ["import", "istio", str(out), "-o", str(written)])
    assert result.exit_code == 0, result.output
    assert f"wrote {written}: mesh demo, 3 services" in result.stdout
    assert result.stderr == ""
    back: Mesh = load_mesh(written)
    assert back == canonical(load_mesh(EXAMPLE))


def test_tracing_off_survives_export_then_import(tmp_path: Path) -> None:
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("name: quiet\nservices: {web: {image: nginx}}\ntracing: {sampling: 0}\n")
    out, written = tmp_path / "k8s", tmp_path / "back.yaml"
    runner = CliRunner()
    exported = runner.invoke(main, ["export", "kubernetes", str(mesh_file), "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    assert "randomSamplingPercentage: 0" in (out / "00-namespace.yaml").read_text()
    result = runner.invoke(main, ["import", "istio", str(out), "-o", str(written)])
    assert result.exit_code == 0, result.output
    assert load_mesh(written).tracing.sampling == 0


def test_import_lists_what_it_leaves_out_and_keeps_an_existing_file(tmp_path: Path) -> None:
    written = tmp_path / "mesh.yaml"
    args = [
        "import",
        "istio",
        str(FIXTURES / "bookinfo.yaml"),
        str(FIXTURES / "virtual-service-ratings-test-delay.yaml"),
        str(FIXTURES / "destination-rule-all.yaml"),
        "-o",
        str(written),
        "--name",
        "bookinfo",
    ]
    runner = CliRunner()
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "not carried over: " in result.stderr
    assert "Deployment/reviews-v1 spec.template.spec.volumes" in result.stderr
    assert load_mesh(written).routes["ratings"][0].fault is not None
    again = runner.invoke(main, args)
    assert again.exit_code == 1
    assert "exists; --force overwrites it" in again.output
    assert runner.invoke(main, [*args, "--force"]).exit_code == 0


def test_import_of_nothing_runnable_fails_plainly(tmp_path: Path) -> None:
    lone = tmp_path / "gw.yaml"
    lone.write_text((FIXTURES / "bookinfo-gateway.yaml").read_text())
    result = CliRunner().invoke(
        main, ["import", "istio", str(lone), "-o", str(tmp_path / "m.yaml")]
    )
    assert result.exit_code == 1
    assert "no workload" in result.output


def test_import_stops_at_a_file_that_is_not_yaml(tmp_path: Path) -> None:
    # A typo in one of the files: importing the others alone would write a mesh without
    # whatever that file held (and PyYAML's message, several lines long, broke the comment
    # header of the mesh.yaml written, which then did not load).
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a\n  bad\n", "utf-8")
    out = tmp_path / "mesh.yaml"
    for files in ([broken], [broken, FIXTURES / "bookinfo.yaml"]):
        result = CliRunner().invoke(
            main, ["import", "istio", *map(str, files), "-o", str(out), "--force"]
        )
        assert result.exit_code == 1, result.output
        assert f"Error: {broken}:5:1: not YAML: did not find expected ',' or '}}'" in (
            result.stderr
        )
        assert not out.exists()


def test_readme_builds_from_the_mesh_folder_when_the_file_is_given_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `meshdev export kubernetes mesh.yaml -o DIR` from the mesh's folder: README.txt, read
    # from DIR, said `cd .` before its `docker build`.
    monkeypatch.chdir(EXAMPLE.parent)
    out = tmp_path / "k8s"
    result = CliRunner().invoke(main, ["export", "kubernetes", EXAMPLE.name, "-o", str(out)])
    assert result.exit_code == 0, result.output
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert f"     cd {EXAMPLE.parent.resolve()}\n" in readme


def test_import_of_another_namespace_or_an_empty_folder_says_why_nothing_runs(
    tmp_path: Path,
) -> None:
    # Both said "these files have no Deployment meshdev can run": the first has three.
    exported = tmp_path / "k8s"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["export", "kubernetes", str(EXAMPLE), "-o", str(exported)]).exit_code
        == 0
    )
    out = tmp_path / "m.yaml"
    wrong = runner.invoke(
        main, ["import", "istio", str(exported), "-o", str(out), "--namespace", "prod"]
    )
    assert wrong.exit_code == 1
    assert (
        "Error: no workload in namespace prod: these files' Deployments are in demo "
        "(--namespace picks one)" in wrong.stderr
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    none = runner.invoke(main, ["import", "istio", str(empty), "-o", str(out)])
    assert none.exit_code == 1
    assert "no file to read (a folder is read for *.yaml, *.yml and *.json)" in none.stderr
