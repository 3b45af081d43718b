"""Reading mesh.yaml safely, keeping where every key and value stands in the file.

PyYAML's constructors throw positions away and accept duplicate keys silently, so we compose
the node graph ourselves and convert it, which also lets us bound what a hostile file can cost
(size, depth, alias expansion) before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from meshdev.config.problems import Path, Pos, Problem

MAX_BYTES = 1024 * 1024
# Far above any real mesh, far below what an alias bomb expands to.
MAX_NODES = 100_000
MAX_DEPTH = 64


@dataclass
class SourceMap:
    """Positions of values and of keys, by their path in the document."""

    values: dict[Path, Pos] = field(default_factory=dict)
    keys: dict[Path, Pos] = field(default_factory=dict)

    def value_pos(self, path: Path) -> Pos:
        """The position of the deepest known part of `path` (a missing key: its mapping)."""
        for n in range(len(path), -1, -1):
            pos = self.values.get(path[:n])
            if pos is not None:
                return pos
        return Pos(1, 1)

    def key_pos(self, path: Path) -> Pos:
        return self.keys.get(path) or self.value_pos(path)


# libyaml composes a 40-service file in a fifth of the pure-Python parser's time (~25 ms of
# every save at that size); positions are the same, its error messages are not.
_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


def _compose(text: str) -> Node | None:
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass  # say it as the pure-Python parser does, which the messages were written for
    return yaml.compose(text, Loader=yaml.SafeLoader)


class YamlProblems(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def read_yaml(raw: bytes, file: str) -> tuple[object, SourceMap]:
    """Decode and parse one YAML document; raises YamlProblems with located reasons."""
    if len(raw) > MAX_BYTES:
        raise YamlProblems(
            [Problem(file, Pos(1, 1), (), f"file is {len(raw)} bytes; the limit is 1 MiB")]
        )
    text = _decode(raw, file)
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        raise YamlProblems(
            [
                Problem(
                    file, Pos(1, 1), (), "file is empty; expected a mapping with name and services"
                )
            ]
        )
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        raise YamlProblems([_syntax_problem(exc, file)]) from None
    except yaml.YAMLError as exc:
        raise YamlProblems([Problem(file, Pos(1, 1), (), f"not valid YAML: {exc}")]) from None
    if node is None:
        raise YamlProblems(
            [
                Problem(
                    file, Pos(1, 1), (), "file is empty; expected a mapping with name and services"
                )
            ]
        )
    builder = _Builder(file)
    value = builder.build(node, (), 0)
    if builder.problems:
        raise YamlProblems(builder.problems)
    return value, builder.source


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise YamlProblems(
            [
                Problem(
                    file,
                    Pos(line, col),
                    (),
                    f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded; "
                    "save the file as UTF-8",
                )
            ]
        ) from None


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    pos = Pos(mark.line + 1, mark.column + 1) if mark else Pos(1, 1)
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem or "\\t" in problem:
        problem = "a tab character; YAML indents with spaces only"
    elif "expected a single document" in str(exc):
        problem = "more than one YAML document (---); put the whole mesh in one"
    else:
        problem = f"invalid YAML: {problem}"
        if exc.context:
            problem += f" ({exc.context})"
    return Problem(file, pos, (), problem)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.source = SourceMap()
        self.problems: list[Problem] = []
        self.nodes = 0
        self._scalars = SafeConstructor()
        self._too_big = False

    def _pos(self, node: Node) -> Pos:
        return Pos(node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: Node, path: Path, depth: int) -> object:
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > MAX_DEPTH:
            if not self._too_big:
                self._too_big = True
                what = "nests too deep" if depth > MAX_DEPTH else "expands to too many values"
                self.problems.append(
                    Problem(
                        self.file,
                        self._pos(node),
                        path,
                        f"document {what} (aliases that multiply, like a 'billion laughs' file?)",
                    )
                )
            return None
        self.source.values.setdefault(path, self._pos(node))
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        return self._scalar(node)

    def _scalar(self, node: ScalarNode) -> object:
        if node.tag == "tag:yaml.org,2002:timestamp":
            # A date-looking value is almost always meant as text in a mesh file.
            return node.value
        if node.tag == "tag:yaml.org,2002:binary":
            return node.value
        return self._scalars.construct_object(node, deep=True)

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[object, object]:
        out: dict[object, object] = {}
        first_seen: dict[object, Pos] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(
                    Problem(
                        self.file,
                        self._pos(key_node),
                        path,
                        "merge keys (<<) are not supported; "
                        "repeat the keys or use an alias as a value",
                    )
                )
                continue
            if not isinstance(key_node, ScalarNode):
                self.problems.append(
                    Problem(self.file, self._pos(key_node), path, "keys must be plain text")
                )
                continue
            key = self._scalar(key_node)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            key_pos = self._pos(key_node)
            if key in first_seen:
                earlier = first_seen[key]
                self.problems.append(
                    Problem(
                        self.file,
                        key_pos,
                        (*path, str(key)),
                        f"duplicate key {key!r} (first at line {earlier.line})",
                    )
                )
                continue
            first_seen[key] = key_pos
            child: Path = (*path, str(key))
            self.source.keys[child] = key_pos
            out[str(key) if not isinstance(key, str) else key] = self.build(
                value_node, child, depth + 1
            )
        return out
