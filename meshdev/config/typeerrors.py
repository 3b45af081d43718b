"""Turning pydantic's validation errors into located, human problems.

Pydantic reports union branches and internal validator names inside an error's location; we
walk each location against the document itself to recover the user's path, fold the branches
of one union into one message, and word each error as what was expected.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from meshdev.config.model import NAME_PATTERN, URL_PATH_PATTERN, Mesh
from meshdev.config.problems import Path, Problem
from meshdev.config.yamlsource import SourceMap

_UNION_WORDS: dict[str, str] = {
    "to": "expected a service, a subset like backend.v1, "
    "or weights like {backend.v1: 90, backend.v2: 10}",
    "method": "expected an HTTP method or a list of them",
    "command": "expected a command line or a list of arguments",
}


def problems_from(
    exc: ValidationError, data: object, file: str, source: SourceMap
) -> list[Problem]:
    located: list[tuple[Path, Path | None, ErrorDetails]] = []
    for err in exc.errors(include_url=False):
        path, union_at = _user_path(err, data)
        if "[key]" in err["loc"]:
            # pydantic validated the key, not its value
            located.append((path, None, {**err, "type": "key"}))
        else:
            located.append((path, union_at, err))
    deeper_unions = {
        union_at
        for path, union_at, _ in located
        if union_at is not None and len(path) > len(union_at)
    }
    errored = [path for path, _, _ in located]
    merged: dict[Path, list[str]] = {}
    kinds: dict[Path, str] = {}
    for path, union_at, err in located:
        if union_at is not None and path == union_at and union_at in deeper_unions:
            continue  # a branch the value clearly wasn't meant for
        if err["type"] == "too_short" and any(
            len(p) > len(path) and p[: len(path)] == path for p in errored
        ):
            continue  # pydantic also calls a list short when its only item failed
        if union_at is not None and path == union_at:
            field = next((p for p in reversed(path) if isinstance(p, str)), "")
            msg = _UNION_WORDS.get(field) or _wording(err, path)
        else:
            msg = _wording(err, path)
        bucket = merged.setdefault(path, [])
        if msg not in bucket:
            bucket.append(msg)
        kinds[path] = err["type"]
    out: list[Problem] = []
    for path, msgs in merged.items():
        at_key = kinds[path] in ("extra_forbidden", "key")
        pos = source.key_pos(path) if at_key else source.value_pos(path)
        out.append(Problem(file, pos, path, " or ".join(msgs) if len(msgs) > 1 else msgs[0]))
    return out


def _user_path(err: ErrorDetails, data: object) -> tuple[Path, Path | None]:
    """The error's location as keys of the document; and where a union branched, if it did."""
    loc = list(err["loc"])
    path: list[str | int] = []
    union_at: Path | None = None
    node: object = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if _has(node, part):
            path.append(part)
            node = node[part]  # type: ignore[index]
        elif last and err["type"] == "missing":
            path.append(part)
        elif isinstance(part, str) and ("[" in part or part in _BRANCH_NAMES):
            if union_at is None:
                union_at = tuple(path)
        else:
            path.append(part)
            node = None
    return tuple(path), union_at


def _has(node: object, part: str | int) -> bool:
    if isinstance(node, Mapping):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


_BRANCH_NAMES = {"str", "int", "float", "bool", "none", "tuple", "dict", "list"}


def _wording(err: ErrorDetails, path: Path) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind == "key":
        return "expected a name of lower-case letters, digits and '-' (a DNS label, at most 40)"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == URL_PATH_PATTERN:
        return "expected a path that starts with '/' and has no spaces, e.g. /items"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key(path)
    if kind in ("string_type",):
        return "expected text"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return "expected a whole number"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return "expected a number"
    if kind in ("bool_type", "bool_parsing"):
        return "expected true or false"
    if kind in ("dict_type", "model_type", "mapping_type", "model_attributes_type"):
        return "expected a mapping of keys to values"
    if kind in ("list_type", "tuple_type", "iterable_type"):
        return "expected a list"
    if kind == "literal_error":
        choices = _literal_choices(str(ctx.get("expected", "")))
        given = err.get("input")
        # Istio's enums are upper case (STRICT, ALLOW) where meshdev's are lower: a wrong case
        # is the likeliest slip, and difflib scores it as far.
        same = [c for c in choices if c.lower() == str(given).lower()]
        close = same or difflib.get_close_matches(str(given), choices, n=1, cutoff=0.6)
        if close:
            return f"unknown value {given!r}; did you mean {close[0]!r}?"
        return f"expected one of: {', '.join(choices)}"
    bounds = {
        "greater_than_equal": ("ge", "must be at least"),
        "greater_than": ("gt", "must be greater than"),
        "less_than_equal": ("le", "must be at most"),
        "less_than": ("lt", "must be less than"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return f"{words} {_num(ctx[key])}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == NAME_PATTERN:
        return "expected a name of lower-case letters, digits and '-' (a DNS label, at most 40)"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"]).rstrip(".")


def _literal_choices(expected: str) -> list[str]:
    return [c.strip() for c in expected.replace("'", "").replace(" or ", ", ").split(",")]


def _num(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unknown_key(path: Path) -> str:
    key = str(path[-1])
    allowed = _keys_at(path[:-1])
    if not allowed:
        return f"unknown key {key!r}"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; expected one of: {', '.join(sorted(allowed))}"


def _keys_at(path: Path) -> list[str]:
    """The keys the model accepts at a path, by walking the model's annotations."""
    tp: Any = Mesh
    for part in path:
        tp = _model_of(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = _file_keys(tp).get(str(part))
            if field is None:
                return []
            tp = field.annotation
            continue
        tp = _element_of(tp)
        if tp is None:
            return []
    tp = _model_of(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(_file_keys(tp))
    return []


def _file_keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A model's fields by the key the file writes: its alias where it has one (`from`)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _model_of(tp: Any) -> Any:
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            inner = _strip(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return tp


def _element_of(tp: Any) -> Any:
    tp = _strip(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Mapping, dict) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return args[1]
    if origin in (tuple, list):
        return args[0]
    return None
