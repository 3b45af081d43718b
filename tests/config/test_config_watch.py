"""`services.<name>.watch`: the app's code a save of which rolls the service (issue 11 part 2):
paths and globs inside the service's folder, located errors for the rest."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshdev.config import MeshInvalid, parse_mesh
from meshdev.config.schema import mesh_json_schema


def problems(text: str, base: Path | None = None) -> list[str]:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(textwrap.dedent(text).encode(), "mesh.yaml", base)
    return [str(p) for p in info.value.problems]


def test_a_list_of_paths_and_globs() -> None:
    mesh = parse_mesh(
        b"name: m\nservices:\n  web: {command: x, watch: ['*.py', src/, 'templates/**']}\n", "m"
    )
    assert mesh.services["web"].watch == ("*.py", "src/", "templates/**")


def test_none_by_default() -> None:
    mesh = parse_mesh(b"name: m\nservices:\n  web: {command: x}\n", "m")
    assert mesh.services["web"].watch == ()


def test_a_glob_matching_nothing_yet_is_fine(tmp_path: Path) -> None:
    # The file may be created later; its creation then rolls the service.
    (tmp_path / "app").mkdir()
    text = "name: m\nservices:\n  web: {build: app, watch: ['not-yet/*.py']}\n"
    mesh = parse_mesh(text.encode(), "m", tmp_path)
    assert mesh.services["web"].watch == ("not-yet/*.py",)


@pytest.mark.parametrize(
    ("watch", "expected"),
    [
        (
            "['/etc/passwd']",
            "mesh.yaml:3:29 services.web.watch[0]: must be relative to the service's folder "
            "(its build folder, else the mesh file's)",
        ),
        (
            "['*.py', '../other/*.py']",
            "mesh.yaml:3:37 services.web.watch[1]: must stay inside the service's folder (no ..)",
        ),
        (
            "['']",
            "mesh.yaml:3:29 services.web.watch[0]: give a path or a glob, e.g. '*.py' or 'src/'",
        ),
        (
            "['~/app.py']",
            "mesh.yaml:3:29 services.web.watch[0]: must be relative to the service's folder "
            "(its build folder, else the mesh file's)",
        ),
        (
            "'*.py'",
            "mesh.yaml:3:28 services.web.watch: expected a list",
        ),
    ],
)
def test_located_errors(watch: str, expected: str) -> None:
    assert problems(f"name: m\nservices:\n  web: {{command: x, watch: {watch}}}\n") == [expected]


def test_an_image_only_service_has_no_code_here() -> None:
    assert problems("name: m\nservices:\n  web: {image: nginx, watch: ['*.py']}\n") == [
        "mesh.yaml:3:30 services.web.watch: this service runs an image only: no code of it is "
        "here to watch; give it build: or command:"
    ]


def test_a_version_with_its_own_command_has_code() -> None:
    text = """\
    name: m
    services:
      web:
        image: nginx
        watch: ['*.py']
        versions: {v1: {command: python app.py}}
    """
    mesh = parse_mesh(textwrap.dedent(text).encode(), "m")
    assert mesh.services["web"].watch == ("*.py",)


def test_the_schema_tells_editors_what_it_does() -> None:
    field = mesh_json_schema()["$defs"]["Service"]["properties"]["watch"]
    assert field["type"] == "array"
    assert "rolls the service" in field["description"]
