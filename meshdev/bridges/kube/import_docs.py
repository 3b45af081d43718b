"""Imported documents, each remembering which of its fields were read: whatever no reader
took is listed at the end as a field mesh.yaml cannot say, so nothing is dropped unseen."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from meshdev.bridges.kube.report import Note

Path = tuple[str | int, ...]

# Kept by a cluster, or mere bookkeeping: never worth a note.
_IGNORED: tuple[Path, ...] = (
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("metadata", "creationTimestamp"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "generation"),
    ("metadata", "managedFields"),
    ("metadata", "selfLink"),
    ("status",),
)


def whole(value: object, low: int = 0, high: int | None = None) -> bool:
    """An integer in [low, high] (YAML's true is none, though Python's bool is an int)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return value >= low and (high is None or value <= high)


def is_port(value: object) -> bool:
    return whole(value, 1, 65535)


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass
class Source:
    """One document of an imported file."""

    file: str
    index: int
    data: dict[str, Any]
    taken: set[Path] = field(default_factory=lambda: set(_IGNORED))
    notes: list[Note] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.data.get("metadata")
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str | None:
        meta = self.data.get("metadata")
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return ns if isinstance(ns, str) else None

    def label(self) -> str:
        return f"{self.file}#{self.index + 1} {self.kind}/{self.name}"

    def annotations(self) -> dict[str, str]:
        meta = self.data.get("metadata")
        found = meta.get("annotations") if isinstance(meta, dict) else None
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def get(self, *path: str | int) -> Any:
        node: Any = self.data
        for part in path:
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    return None
            elif not isinstance(node, dict):
                return None
            node = node[part] if isinstance(part, int) else node.get(part)
        return node

    def mapping(self, *path: str | int) -> dict[str, Any]:
        """The mapping at `path`, or an empty one where there is something else."""
        value = self.get(*path)
        return value if isinstance(value, dict) else {}

    def sequence(self, *path: str | int) -> list[Any]:
        value = self.get(*path)
        return value if isinstance(value, list) else []

    def take(self, *path: str | int) -> Any:
        """The value at `path`, now read (with all below it)."""
        self.taken.add(path)
        return self.get(*path)

    def note(self, path: Path, message: str) -> None:
        """`path` is read, and what it says is not what mesh.yaml says: `message` tells why."""
        self.taken.add(path)
        self.notes.append(Note(self.label(), dotted(path), message))

    def say(self, path: Path, message: str) -> None:
        """A note on `path` that leaves it unread (its fields may still be read, or listed)."""
        self.notes.append(Note(self.label(), dotted(path), message))

    def items(self, *path: str | int) -> Iterator[tuple[int, Any]]:
        value = self.get(*path)
        if isinstance(value, list):
            yield from enumerate(value)

    def _read(self, path: Path) -> bool:
        return any(path[: len(t)] == t for t in self.taken)

    def _below(self, path: Path) -> bool:
        return any(len(t) > len(path) and t[: len(path)] == path for t in self.taken)

    def leftovers(self) -> list[Note]:
        """Every field no reader took, at its highest unread level."""
        out: list[Note] = []

        def walk(path: Path, node: Any) -> None:
            if self._read(path):
                return
            if path and not self._below(path):
                out.append(Note(self.label(), dotted(path), "mesh.yaml has no such field"))
                return
            if isinstance(node, dict):
                for key, value in node.items():
                    walk((*path, str(key)), value)
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    walk((*path, i), value)

        walk((), self.data)
        return out

    def report(self) -> list[Note]:
        return [*self.notes, *self.leftovers()]
