"""mesh.yaml -> Mesh, or every problem with its place."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from meshdev.config.model import Mesh
from meshdev.config.problems import MeshInvalid, Pos, Problem
from meshdev.config.semantics import semantic_problems
from meshdev.config.typeerrors import problems_from
from meshdev.config.yamlsource import MAX_BYTES, YamlProblems, read_yaml


def load_mesh(path: str | Path) -> Mesh:
    """Read and validate a mesh file; raises MeshInvalid listing every problem."""
    p = Path(path)
    label = str(path)
    try:
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise MeshInvalid(
                [Problem(label, Pos(1, 1), (), f"file is {size} bytes; the limit is 1 MiB")]
            )
        raw = p.read_bytes()
    except FileNotFoundError:
        raise MeshInvalid(
            [Problem(label, Pos(1, 1), (), "no such file; `meshdev init` writes a starter")]
        ) from None
    except IsADirectoryError:
        raise MeshInvalid([Problem(label, Pos(1, 1), (), "is a folder, not a file")]) from None
    except PermissionError:
        raise MeshInvalid(
            [Problem(label, Pos(1, 1), (), "cannot read: permission denied")]
        ) from None
    return parse_mesh(raw, label, p.resolve().parent)


def parse_mesh(raw: bytes, file: str, base_dir: Path | None = None) -> Mesh:
    """Validate mesh.yaml bytes. `base_dir` resolves build folders (None: not checked)."""
    try:
        data, source = read_yaml(raw, file)
    except YamlProblems as exc:
        raise MeshInvalid(exc.problems) from None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({data!r})"
        raise MeshInvalid(
            [Problem(file, Pos(1, 1), (), f"expected a mapping with name and services, got {kind}")]
        )
    try:
        mesh = Mesh.model_validate(data)
    except ValidationError as exc:
        raise MeshInvalid(problems_from(exc, data, file, source)) from None
    problems = semantic_problems(mesh, file, source, base_dir)
    if problems:
        raise MeshInvalid(problems)
    return mesh
