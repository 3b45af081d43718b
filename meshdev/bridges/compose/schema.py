"""The Compose Specification's JSON Schema, and checking a document against it.

compose-spec.json beside this module is `schema/compose-spec.json` of
github.com/compose-spec/compose-spec (commit a08f8d51631b7127ddac3d2c65537db429d0f1d0, the
Apache License 2.0), unchanged: the schema `docker compose config` validates with. Checking
needs jsonschema, which the `export` extra installs (`pip install 'meshdev[export]'`); it is
imported only when a document is checked.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")


class NeedsExtra(RuntimeError):
    """A validator package of the `export` extra is missing."""


@cache
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return schema


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top)"


def schema_problems(document: object) -> list[str]:
    """Every place where `document` breaks the Compose schema, as `path: reason`."""
    try:
        import jsonschema
    except ImportError:
        raise NeedsExtra(
            "checking a Compose file needs jsonschema: pip install 'meshdev[export]'"
        ) from None
    validator = jsonschema.Draft7Validator(compose_schema())
    problems = []
    for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path))):
        problems.append(f"{_path(list(error.absolute_path))}: {error.message}")
    return problems
