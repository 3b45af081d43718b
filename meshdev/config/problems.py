"""Located problems in a mesh file: `mesh.yaml:14:7 routes.backend[0].timeout: ...`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

Path = tuple[str | int, ...]


class Pos(NamedTuple):
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    pos: Pos
    path: Path
    message: str

    @property
    def dotted(self) -> str:
        return dotted(self.path)

    def __str__(self) -> str:
        where = f"{self.file}:{self.pos.line}:{self.pos.column}"
        return f"{where} {self.dotted}: {self.message}" if self.path else f"{where}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.pos.line,
            "column": self.pos.column,
            "path": self.dotted,
            "message": self.message,
        }


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class MeshInvalid(Exception):
    """Every problem found in a mesh file, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.pos, p.dotted))
        super().__init__("\n".join(str(p) for p in self.problems))
