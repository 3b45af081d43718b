"""A parsed request (see the package doc) and how its request-target splits."""

from __future__ import annotations

from dataclasses import dataclass

from meshdev.sidecar.http.body import BodyStream


@dataclass(slots=True)
class Request:
    """One request as parsed, its body still streaming (the fields: see the package doc)."""

    method: str
    target: str
    path: str
    query: str
    authority: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    body: BodyStream
    client: tuple[str, int]
    received_at: float
    version: str = "1.1"
    # The protocol an upgrade request asks for and will get if its answer is a 101 (only
    # "websocket", Istio's one upgrade type); None for every other request.
    upgrade: str | None = None
    # A gRPC call (HTTP/2 with content-type application/grpc...), so the proxy applies gRPC's
    # semantics (grpc-status, grpc-timeout) to it alone. A class attribute, not a field: an
    # HTTP/1.1 request (never gRPC) pays nothing for it; the HTTP/2 engine's subclass
    # (http2.server.H2Request) has the slot and sets it.
    grpc = False

    @property
    def origin_form(self) -> str:
        """The target as an upstream wants it: path and query, without scheme and host."""
        if self.target[:1] == "/":
            return self.target
        return f"{self.path}?{self.query}" if self.query else self.path

    def header(self, name: str) -> str | None:
        """First value of header `name` (lower-case), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None


def split_target(target: str, host: str | None) -> tuple[str, str, str]:
    """path, query, authority of an absolute-form (or authority-/asterisk-form) target."""
    scheme_end = target.find("://")
    if scheme_end < 0:
        # authority-form (CONNECT host:port) or asterisk-form (OPTIONS *).
        if target == "*":
            return "*", "", host or ""
        return "", "", target
    rest = target[scheme_end + 3 :]
    cut = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    authority = rest[:cut].rpartition("@")[2]
    path, _, query = rest[cut:].partition("?")
    if not path:
        path = "/"
    return path, query.partition("#")[0], authority
