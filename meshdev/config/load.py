"""mesh.yaml -> Mesh, or every problem with its place."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from meshdev.config.model import Mesh
from meshdev.config.problems import MeshInvalid, Pos, Problem
from meshdev.config.problems import Path as DataPath
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
        problems = problems_from(exc, data, file, source)
        raise MeshInvalid(
            problems + _rule_problems(data, problems, file, source, base_dir)
        ) from None
    problems = semantic_problems(mesh, file, source, base_dir)
    if problems:
        raise MeshInvalid(problems)
    return mesh


def _rule_problems(
    data: dict[str, Any], typed: list[Problem], file: str, source: Any, base_dir: Path | None
) -> list[Problem]:
    """The rules' problems (an unknown service, a weight sum, ...) of a file that also has
    type problems, so that one `validate` says every error: checked on the file with each
    value a type problem names taken out, its default standing in. A required value taken out
    (a policy's name) has a stand-in of its own where one can be made up; else the top-level
    section that needs it is left out and its rules go unchecked. None where even that cannot
    be done (the mesh's name or services): the type problems alone are said then."""
    pruned = copy.deepcopy(data)
    for problem in typed:
        if not _take_out(pruned, problem.path):
            return []
    said = {p.path for p in typed}
    # Each round gives a stand-in or leaves a section out: bounded by the file's sections.
    for _ in range(len(pruned) + len(typed) + 1):
        try:
            mesh = Mesh.model_validate(pruned)
        except ValidationError as exc:
            if not _stand_in(pruned, exc, said):
                return []
            continue
        return [
            p
            for p in semantic_problems(mesh, file, source, base_dir)
            # What a default stood in for is no problem of the file's, nor is what holds it
            # (`from: {service: x}` left as `from: {}` would be "give services, ...").
            if not any(_nested(p.path, bad) for bad in said)
        ]
    return []


# Sections whose absence makes no other section's rules fail, so they can be left out when a
# required value in them cannot be stood in for: without `security` every identity rule would
# fail, without `ingress` every mention of the gateway (and the mesh's name and services are
# needed by all).
_OPTIONAL_SECTIONS = frozenset({"routes", "policies", "authorization"})


def _stand_in(pruned: dict[str, Any], exc: ValidationError, said: set[DataPath]) -> bool:
    """Make `pruned` validate further after `exc`: a made-up valid name for a policy whose own
    was refused (unique: it holds its index), else leave out the section of each error;
    `said` gets the sections left out, whose rules' problems are not the file's. False when
    nothing could be done."""
    done = False
    for error in exc.errors():
        loc = error["loc"]
        if (
            error["type"] == "missing"
            and len(loc) == 4
            and loc[0] == "authorization"
            and isinstance(loc[2], int)
            and loc[3] == "name"
        ):
            pruned["authorization"][loc[1]][loc[2]]["name"] = f"invalid-name-{loc[2]}"
            done = True
        elif loc and loc[0] in _OPTIONAL_SECTIONS and loc[0] in pruned:
            del pruned[loc[0]]
            said.add((str(loc[0]),))
            done = True
    return done


def _nested(a: DataPath, b: DataPath) -> bool:
    """One path is the other or holds it."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _take_out(data: Any, path: DataPath) -> bool:
    """Delete the mapping key at `path` (already gone: fine); False when it is not a key of a
    mapping in `data`."""
    if not path:
        return False
    parent = data
    for key in path[:-1]:
        try:
            parent = parent[key]  # a mapping's key or a list's index
        except (KeyError, IndexError, TypeError):
            return False
    if not isinstance(parent, dict):
        return False
    parent.pop(path[-1], None)
    return True
