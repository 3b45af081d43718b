"""gRPC's semantics in the proxy, as Envoy has them (source/common/grpc/, the router's
grpc-timeout handling, and the grpc_stats filter).

- ``deadline(req, route_timeout)``: the route timeout, capped by the call's ``grpc-timeout``
  when that is shorter (Envoy's max_grpc_timeout behaviour); 0 keeps "no timeout".
- ``local_reply(status)``: a local answer to a gRPC caller is HTTP 200, trailers-only, with
  the grpc-status Envoy maps the HTTP status to (``httpToGrpcStatus``), except the route
  timeout's 504, which is DEADLINE_EXCEEDED (4).
- ``answer_status``: the call's grpc-status, from its trailers or, for a trailers-only
  answer, its head; an answer without one counts as its HTTP status maps. The forwarding loop
  charges it to the cluster's ``stats.grpc.GrpcStats`` when the answer has ended.
"""

from __future__ import annotations

from typing import Final

from meshdev.sidecar.http import Request

# grpc-timeout's units (gRPC over HTTP/2: "TimeoutValue TimeoutUnit", at most 8 digits).
_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
DEADLINE_EXCEEDED: Final = 4
PERMISSION_DENIED: Final = 7
UNAVAILABLE: Final = 14
# Envoy's Grpc::Utility::httpToGrpcStatus.
_HTTP_TO_GRPC: Final = {
    400: 13,  # INTERNAL
    401: 16,  # UNAUTHENTICATED
    403: PERMISSION_DENIED,
    404: 12,  # UNIMPLEMENTED
    429: UNAVAILABLE,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
}
UNKNOWN: Final = 2


def parse_timeout(value: str) -> float | None:
    """Seconds of a grpc-timeout value, or None when malformed."""
    digits, unit = value[:-1], value[-1:]
    scale = _UNITS.get(unit)
    if scale is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * scale


def deadline(req: Request, route_timeout: float) -> float:
    """The timeout a gRPC call runs under (see the module doc)."""
    value = req.header("grpc-timeout")
    if value is None:
        return route_timeout
    asked = parse_timeout(value)
    if asked is None:
        return route_timeout
    if route_timeout <= 0:
        return asked
    return min(asked, route_timeout)


def http_to_grpc(status: int) -> int:
    return 0 if status == 200 else _HTTP_TO_GRPC.get(status, UNKNOWN)


def local_reply(status: int, body: bytes, grpc_status: int | None = None) -> list[tuple[str, str]]:
    """The head of a trailers-only answer to a gRPC caller for a local reply of `status`."""
    if grpc_status is None:
        grpc_status = DEADLINE_EXCEEDED if status == 504 else http_to_grpc(status)
    headers = [("content-type", "application/grpc"), ("grpc-status", str(grpc_status))]
    if body:
        headers.append(("grpc-message", _percent_encode(body)))
    return headers


def _percent_encode(message: bytes) -> str:
    """grpc-message's encoding (gRPC over HTTP/2): printable ASCII but "%" as is, every
    other byte of the UTF-8 text as %XX."""
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in message)


def answer_status(
    headers: list[tuple[str, str]], trailers: list[tuple[str, str]] | None, http_status: int
) -> int:
    """The call's grpc-status: trailers first, then the head (trailers-only), else mapped."""
    for source in (trailers or (), headers):
        for k, v in source:
            if k == "grpc-status" and v.isdigit():
                return int(v)
    return http_to_grpc(http_status)
