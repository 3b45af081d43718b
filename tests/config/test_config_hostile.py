"""Hostile mesh files get one clear, located error and nothing worse."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshdev.config import MeshInvalid, load_mesh, parse_mesh


def only_problem(raw: bytes) -> str:
    with pytest.raises(MeshInvalid) as info:
        parse_mesh(raw, "mesh.yaml")
    assert len(info.value.problems) == 1, info.value.problems
    return str(info.value.problems[0])


def test_empty_file() -> None:
    assert only_problem(b"") == (
        "mesh.yaml:1:1: file is empty; expected a mapping with name and services"
    )


def test_only_comments() -> None:
    assert "file is empty" in only_problem(b"# nothing here\n\n# still nothing\n")


def test_top_level_list() -> None:
    assert only_problem(b"- name: demo\n- services: {}\n") == (
        "mesh.yaml:1:1: expected a mapping with name and services, got a list"
    )


def test_top_level_scalar() -> None:
    assert "got a single value" in only_problem(b"hello\n")


def test_tabs() -> None:
    assert only_problem(b"name: demo\nservices:\n\tapi: {command: x}\n") == (
        "mesh.yaml:3:1: a tab character; YAML indents with spaces only"
    )


def test_duplicate_keys() -> None:
    raw = b"name: demo\nservices:\n  api: {command: x}\n  api: {command: y}\n"
    assert only_problem(raw) == (
        "mesh.yaml:4:3 services.api: duplicate key 'api' (first at line 3)"
    )


def test_non_utf8() -> None:
    raw = b'name: demo\nservices:\n  api: {command: "caf\xe9"}\n'
    assert only_problem(raw) == (
        "mesh.yaml:3:22: not UTF-8: byte 0xe9 cannot be decoded; save the file as UTF-8"
    )


def test_over_one_mib(tmp_path: Path) -> None:
    big = tmp_path / "mesh.yaml"
    big.write_bytes(b"name: demo\n" + b"# padding\n" * 110_000)
    with pytest.raises(MeshInvalid) as info:
        load_mesh(big)
    assert "the limit is 1 MiB" in str(info.value)
    # The same limit holds for bytes that never touched the disk (the watcher's path).
    assert "the limit is 1 MiB" in only_problem(big.read_bytes())


def test_billion_laughs() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    raw = ("\n".join(lines) + "\nname: demo\nservices: {api: {command: x}}\n").encode()
    assert "expands to too many values" in only_problem(raw)


def test_recursive_alias() -> None:
    raw = b"name: demo\nservices: &s {api: {command: x}, again: *s}\n"
    problem = only_problem(raw)
    assert "nests too deep" in problem or "expands to too many" in problem or "recursive" in problem


def test_two_documents() -> None:
    raw = b"name: a\nservices: {api: {command: x}}\n---\nname: b\n"
    assert only_problem(raw) == (
        "mesh.yaml:3:1: more than one YAML document (---); put the whole mesh in one"
    )


def test_syntax_error_is_located() -> None:
    raw = b"name: demo\nservices:\n  api: {command: x\n"
    assert only_problem(raw).startswith("mesh.yaml:4:1: invalid YAML:")


def test_merge_keys_refused() -> None:
    raw = b"base: &b {command: x}\nname: d\nservices:\n  api:\n    <<: *b\n"
    assert "merge keys (<<) are not supported" in only_problem(raw)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(MeshInvalid, match="no such file; `meshdev init` writes a starter"):
        load_mesh(tmp_path / "nope.yaml")
    with pytest.raises(MeshInvalid, match="is a folder, not a file"):
        load_mesh(tmp_path)


def test_plain_aliases_still_work() -> None:
    raw = (
        b"name: demo\n"
        b"services:\n"
        b"  a: {command: x, env: &env {A: '1'}}\n"
        b"  b: {command: x, env: *env}\n"
    )
    mesh = parse_mesh(raw, "mesh.yaml")
    assert dict(mesh.services["b"].env) == {"A": "1"}
