"""Durations as mesh.yaml writes them (`250ms`, `2s`, `1m`), held as float seconds."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

# Sub-second units divide rather than multiply, so "59ms" is exactly the float 59/1000.
_DIVISORS = {"us": 1_000_000, "µs": 1_000_000, "ms": 1000}
_FACTORS = {"s": 1, "m": 60, "h": 3600}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h)\s*$")
PATTERN_TEXT = r"^\d+(\.\d+)?(us|µs|ms|s|m|h)$"
EXPECTED = "expected a duration like 250ms or 2s"


def parse_duration(value: object) -> float:
    """Seconds from `250ms`/`2s`/`1m`/`1h`/`500us`.

    A bare number is refused on purpose: `timeout: 2` could mean seconds or milliseconds, and
    Envoy and Istio users carry both habits.
    """
    if isinstance(value, str):
        m = _PATTERN.match(value)
        if m:
            number, unit = float(m.group(1)), m.group(2)
            if unit in _DIVISORS:
                return number / _DIVISORS[unit]
            return number * _FACTORS[unit]
    raise PydanticCustomError("duration", EXPECTED)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, so a dumped model loads back to the same value."""
    us = round(seconds * 1_000_000)
    if abs(seconds * 1_000_000 - us) > 1e-6 * max(1.0, abs(us)):
        return f"{seconds * 1000!r}ms"  # finer than a microsecond: keep every digit
    for unit, size in (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1000)):
        if us and us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us" if us else "0s"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": PATTERN_TEXT, "examples": ["250ms", "2s", "1m"]}),
]
