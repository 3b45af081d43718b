"""What the proxy does to headers, both ways (Envoy's rules).

Hop-by-hop headers (and those named in `Connection`) are dropped both ways; `x-request-id` is
kept or created; `traceparent`/`tracestate` pass through; the client's address is appended to
`x-forwarded-for`. Answers carry this hop's `x-envoy-upstream-service-time`, and its
`x-envoy-attempt-count` when the virtual host asks for it (Envoy's
include_attempt_count_in_response): each replaces the upstream's own, so a caller behind
several hops sees one of each, the outermost hop's, as from Envoy.
"""

from __future__ import annotations

from random import getrandbits
from typing import Final

from meshdev.sidecar.http import Request
from meshdev.sidecar.upstream import UpstreamResponse

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# The writer frames the answer itself, from the body it is given; the service time is ours.
_RESPONSE_DROP: Final = HOP_BY_HOP | {"content-length", "x-envoy-upstream-service-time"}
# Without the flag an upstream's attempt count passes through untouched, as in Envoy.
_RESPONSE_DROP_COUNTED: Final = _RESPONSE_DROP | {"x-envoy-attempt-count"}


class HeaderView:
    """Header look-ups for the matchers; several values of one name are joined with ","."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def get(self, name: str, /) -> str | None:
        found: str | None = None
        for k, v in self.items:
            if k == name:
                found = v if found is None else f"{found},{v}"
        return found


def new_request_id() -> str:
    """A random (version 4, variant 10) UUID, as Envoy generates for x-request-id."""
    # to_bytes().hex() keeps the leading zeros at less than half the time of "%032x" (111 vs
    # 254 ns), on every request that comes without an id.
    h = getrandbits(128).to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def upstream_headers(req: Request) -> tuple[list[tuple[str, str]], str, bool]:
    """The headers to send upstream, the request id, and whether the request is internal
    (`x-envoy-internal: true`, which Envoy's router charges answers by: `internal.` stats)."""
    out: list[tuple[str, str]] = []
    rid: str | None = None
    internal = False
    xff: str | None = None
    named: str | None = None
    proto = False
    hop = HOP_BY_HOP
    for k, v in req.headers:
        if k in hop:
            if k == "connection":
                named = v if named is None else f"{named},{v}"
            continue
        if k == "host":
            continue
        if k[0] == "x":
            if k == "x-request-id":
                if rid is None:
                    rid = v
            elif k == "x-forwarded-for":
                xff = v if xff is None else f"{xff}, {v}"
                continue
            elif k == "x-forwarded-proto":
                proto = True
            elif k == "x-envoy-internal":
                internal = v == "true"
        out.append((k, v))
    if named is not None:
        drop = {t.strip().lower() for t in named.split(",")} - {
            "close",
            "keep-alive",
            "host",
            "x-request-id",
        }
        if drop:
            out = [(k, v) for k, v in out if k not in drop]
    if rid is None:
        rid = new_request_id()
        out.append(("x-request-id", rid))
    # An absolute-form target's authority wins over a Host header (RFC 9112 section 3.2.2).
    if req.authority:
        out.append(("host", req.authority))
    client = req.client[0]
    out.append(("x-forwarded-for", f"{xff}, {client}" if xff else client))
    if not proto:
        out.append(("x-forwarded-proto", "http"))
    return out, rid, internal


def response_headers(
    resp: UpstreamResponse, service_ms: float, attempts: int | None
) -> list[tuple[str, str]]:
    """The upstream answer's headers as they go downstream (without content-length);
    `attempts` is None unless the virtual host includes the attempt count."""
    drop = _RESPONSE_DROP if attempts is None else _RESPONSE_DROP_COUNTED
    out = [(k, v) for k, v in resp.headers if k not in drop]
    out.append(("x-envoy-upstream-service-time", str(int(service_ms))))
    if attempts is not None:
        out.append(("x-envoy-attempt-count", str(attempts)))
    return out


def vetoed(headers: list[tuple[str, str]]) -> bool:
    """Envoy never retries an answer that says the upstream is overloaded or rate limited."""
    return any(k in ("x-envoy-overloaded", "x-envoy-ratelimited") for k, _ in headers)
