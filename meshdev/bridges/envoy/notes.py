"""What a translation could not carry over the same way, each naming its field.

A bridge never drops something silently: a mesh.yaml setting the target cannot say (or says
differently) becomes a `Note` naming where it came from, which the command prints and the
written README repeats. The same note reached from several pods is one note.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Note:
    """`field`: where the setting lives, as the user wrote it (`routes.backend[canary].fault`,
    `policies.backend.lb`, `services.web.volumes`); `message`: what the target does instead."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class Notes:
    """An ordered set of notes: the first time a note is added decides its place."""

    def __init__(self) -> None:
        self._seen: dict[Note, None] = {}

    def add(self, field: str, message: str) -> None:
        self._seen.setdefault(Note(field, message), None)

    def extend(self, notes: Iterable[Note]) -> None:
        for note in notes:
            self._seen.setdefault(note, None)

    def __iter__(self) -> Iterator[Note]:
        return iter(tuple(self._seen))

    def __len__(self) -> int:
        return len(self._seen)

    def as_list(self) -> list[Note]:
        return list(self._seen)
