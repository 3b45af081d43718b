"""What a translation could not carry over, said by where it was: never dropped silently."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Gap:
    """A mesh-file field Kubernetes + Istio cannot say (or say only approximately)."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, order=True)
class Note:
    """A field of an imported document that mesh.yaml cannot say. `document` names the file,
    the document's place in it and its kind/name; `path` the field inside (dotted)."""

    document: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.document} {self.path}" if self.path else self.document
        return f"{where}: {self.message}"


@dataclass
class Gaps:
    """Collects gaps once each, in the order found."""

    items: list[Gap] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        gap = Gap(where, message)
        if gap not in self.items:
            self.items.append(gap)
