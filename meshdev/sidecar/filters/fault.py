"""Fault injection: a delay, then an abort, each on a percentage of a route's requests.

What decides a route's faults, in order of precedence:
1. route-scoped runtime keys (POST /runtime_modify), e.g.
   `fault.http.<vhost>.<route>.abort.abort_percent`, `.abort.http_status`,
   `.delay.fixed_delay_percent`, `.delay.fixed_duration_ms`. Setting any key of a kind
   switches that kind on for the route even when mesh.yaml configures no fault there, so the
   dashboard can turn a fault on and off without a reload (an empty value removes the key);
2. Envoy's global keys `fault.http.abort.abort_percent`, `fault.http.abort.http_status`,
   `fault.http.delay.fixed_delay_percent`, `fault.http.delay.fixed_duration_ms`: they change
   the numbers of every route where that kind of fault is on, and, as in Envoy (where the
   fault filter is only present when configured), they switch nothing on by themselves;
3. the route's `fault` in the config.
A kind switched on by runtime keys alone defaults to 0 % (abort status 503, delay 0 ms) for
whatever the keys leave unset.

Request headers (Envoy's) tune a fault only on routes where that kind is on:
`x-envoy-fault-abort-request: <status>` replaces the abort status,
`x-envoy-fault-delay-request: <ms>` the delay, and `x-envoy-fault-abort-request-percentage` /
`x-envoy-fault-delay-request-percentage` lower the percentage (capped by the route's, as in
Envoy). Headers never switch a fault on, so a caller cannot fail a route that has none.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from meshdev.common.sidecar_config import Fault
from meshdev.sidecar.router.table import HeaderLookup

ABORT_PERCENT = "abort.abort_percent"
ABORT_STATUS = "abort.http_status"
DELAY_PERCENT = "delay.fixed_delay_percent"
DELAY_MS = "delay.fixed_duration_ms"
SUFFIXES = (ABORT_PERCENT, ABORT_STATUS, DELAY_PERCENT, DELAY_MS)
PREFIX = "fault.http."

ABORT_HEADER = "x-envoy-fault-abort-request"
ABORT_PERCENT_HEADER = "x-envoy-fault-abort-request-percentage"
DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENT_HEADER = "x-envoy-fault-delay-request-percentage"


def route_key(vhost: str, route: str, suffix: str) -> str:
    return f"{PREFIX}{vhost}.{route}.{suffix}"


def global_key(suffix: str) -> str:
    return PREFIX + suffix


def check_runtime_entry(key: str, value: str) -> None:
    """Raise ValueError unless `key` is a fault key and `value` fits it ("" removes a key)."""
    if not key.startswith(PREFIX):
        raise ValueError(
            f"unknown runtime key {key!r}: supported are fault.http.<kind>.<field> and "
            "fault.http.<vhost>.<route>.<kind>.<field>"
        )
    rest = key[len(PREFIX) :]
    suffix = next((s for s in SUFFIXES if rest == s or rest.endswith("." + s)), None)
    if suffix is None or (rest != suffix and rest.count(".") < 3):
        raise ValueError(
            f"unknown runtime key {key!r}: the field must be one of {', '.join(SUFFIXES)}"
        )
    if value == "":
        return
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if suffix in (ABORT_PERCENT, DELAY_PERCENT) and not 0 <= number <= 100:
        raise ValueError(f"{key}: a percentage must be within 0..100, got {value!r}")
    if suffix == ABORT_STATUS and (not number.is_integer() or not 200 <= number <= 599):
        raise ValueError(f"{key}: an HTTP status must be an integer within 200..599")
    if suffix == DELAY_MS and number < 0:
        raise ValueError(f"{key}: a duration must not be negative")


class FaultSpec:
    """A route's effective faults; None-valued kinds are off."""

    __slots__ = (
        "abort_grpc_status",
        "abort_percent",
        "abort_status",
        "delay_percent",
        "delay_seconds",
    )

    def __init__(
        self,
        abort_percent: float | None,
        abort_status: int,
        delay_percent: float | None,
        delay_seconds: float,
        abort_grpc_status: int | None = None,
    ) -> None:
        # The grpc-status a gRPC caller's abort carries (None: mapped from abort_status).
        self.abort_grpc_status = abort_grpc_status
        self.abort_percent = abort_percent
        self.abort_status = abort_status
        self.delay_percent = delay_percent
        self.delay_seconds = delay_seconds


def effective_fault(
    fault: Fault | None, vhost: str, route: str, runtime: Mapping[str, str]
) -> FaultSpec | None:
    """The route's faults once runtime overrides apply; None when neither kind is on."""

    def pick(suffix: str) -> str | None:
        scoped = runtime.get(route_key(vhost, route, suffix))
        return scoped if scoped is not None else runtime.get(global_key(suffix))

    abort_on = (fault is not None and fault.abort is not None) or any(
        route_key(vhost, route, s) in runtime for s in (ABORT_PERCENT, ABORT_STATUS)
    )
    delay_on = (fault is not None and fault.delay is not None) or any(
        route_key(vhost, route, s) in runtime for s in (DELAY_PERCENT, DELAY_MS)
    )
    if not abort_on and not delay_on:
        return None
    abort_cfg = fault.abort if fault is not None else None
    delay_cfg = fault.delay if fault is not None else None

    abort_percent: float | None = None
    abort_status = 503
    if abort_on:
        abort_percent = _number(pick(ABORT_PERCENT), abort_cfg.percent if abort_cfg else 0.0)
        abort_status = int(_number(pick(ABORT_STATUS), abort_cfg.status if abort_cfg else 503))
    delay_percent: float | None = None
    delay_seconds = 0.0
    if delay_on:
        delay_percent = _number(pick(DELAY_PERCENT), delay_cfg.percent if delay_cfg else 0.0)
        delay_ms = _number(pick(DELAY_MS), delay_cfg.fixed * 1000.0 if delay_cfg else 0.0)
        delay_seconds = delay_ms / 1000.0
    grpc_status = abort_cfg.grpc_status if abort_cfg is not None else None
    return FaultSpec(abort_percent, abort_status, delay_percent, delay_seconds, grpc_status)


def _number(raw: str | None, default: float) -> float:
    return float(raw) if raw is not None else default


def _header_number(headers: HeaderLookup, name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw.strip())
    except ValueError:
        return None


def decide_delay(
    spec: FaultSpec, headers: HeaderLookup, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to delay this request (0 for none)."""
    percent = spec.delay_percent
    if percent is None or percent <= 0:
        return 0.0
    # Headers can only lower the percentage, so a draw that misses needs no header look-up.
    draw = rand() * 100.0
    if draw >= percent:
        return 0.0
    seconds = spec.delay_seconds
    ms = _header_number(headers, DELAY_HEADER)
    if ms is not None and ms >= 0:
        seconds = ms / 1000.0
        wanted = _header_number(headers, DELAY_PERCENT_HEADER)
        if wanted is not None and draw >= wanted:
            return 0.0
    return max(seconds, 0.0)


def decide_abort(
    spec: FaultSpec, headers: HeaderLookup, rand: Callable[[], float] = random.random
) -> int | None:
    """The status to abort this request with, or None."""
    percent = spec.abort_percent
    if percent is None or percent <= 0:
        return None
    draw = rand() * 100.0
    if draw >= percent:
        return None
    status = spec.abort_status
    wanted_status = _header_number(headers, ABORT_HEADER)
    if wanted_status is not None and wanted_status.is_integer() and 200 <= wanted_status < 600:
        status = int(wanted_status)
        wanted = _header_number(headers, ABORT_PERCENT_HEADER)
        if wanted is not None and draw >= wanted:
            return None
    return status
