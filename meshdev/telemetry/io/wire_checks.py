"""Checks on JSON that came over the wire: each returns the value with its type, or raises
`SnapshotError` naming where in the document it went wrong. Input from the network is checked
once, in the readers, so aggregation can trust its types.
"""

from __future__ import annotations

import math
from typing import Any

from meshdev.telemetry.aggregation.sidecar_interval import SnapshotError


def check_dict(obj: object, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SnapshotError(f"{what}: expected an object, got {type(obj).__name__}")
    return obj


def check_int_map(obj: object, what: str) -> dict[str, int]:
    d = check_dict(obj, what)
    # bool is an int subclass that no stat value is; a float is no counter either.
    if not all(type(v) is int for v in d.values()):
        bad = next(k for k, v in d.items() if type(v) is not int)
        raise SnapshotError(f"{what}.{bad}: expected an integer")
    return d


def check_num(obj: object, what: str) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise SnapshotError(f"{what}: expected a number")
    value = float(obj)
    if not math.isfinite(value):
        raise SnapshotError(f"{what}: not finite")
    return value


def check_int(obj: object, what: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise SnapshotError(f"{what}: expected an integer")
    return obj


def check_str(obj: object, what: str) -> str:
    if not isinstance(obj, str):
        raise SnapshotError(f"{what}: expected a string")
    return obj


def opt_int(obj: object) -> int | None:
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else None


def opt_str(obj: object) -> str | None:
    return obj if isinstance(obj, str) else None


def check_list(obj: object, what: str) -> list[Any]:
    if not isinstance(obj, list):
        raise SnapshotError(f"{what}: expected a list")
    return obj
