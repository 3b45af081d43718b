"""What to send: the target, the rate, the path mix, and the request bytes built from them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import accumulate
from urllib.parse import urlsplit

# RFC 9110 token: what a method or a header name may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Methods whose request may be sent again when a reused keep-alive connection turns out to
# have been closed by the server before it read the request (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
USER_AGENT = "meshdev-load"
MIN_CONCURRENCY = 64
# The default cap assumes responses within this many seconds at the full rate.
EXPECTED_LATENCY_S = 0.5


class LoadSpecError(ValueError):
    """A load spec that cannot be run; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One load run. `duration=None` runs until `LoadGenerator.stop()`.

    `paths` replaces the URL's path (and query) with a weighted random choice per request;
    `headers` are sent on every request (a `Host` among them replaces the URL's).
    `retry_stale`: an idempotent request whose reused keep-alive connection is closed or reset
    before any byte of the answer is sent once more on a fresh connection, as browsers and Go's
    client do (the server's idle close raced it); counted in `LoadResult.retried`. Turn it off
    to count every such request as failed.
    """

    url: str
    rps: float
    duration: float | None = None
    concurrency: int | None = None
    paths: tuple[tuple[str, float], ...] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    timeout: float = 10.0
    connect_timeout: float = 5.0
    seed: int | None = None
    retry_stale: bool = True

    def __post_init__(self) -> None:
        check_rate(self.rps)
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise LoadSpecError(f"duration must be positive, not {self.duration}")
        if self.concurrency is not None and self.concurrency < 1:
            raise LoadSpecError(f"concurrency must be at least 1, not {self.concurrency}")
        if not _TOKEN.match(self.method):
            raise LoadSpecError(f"method {self.method!r} is not an HTTP token")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise LoadSpecError("timeouts must be positive")
        for name, value in self.headers:
            if not _TOKEN.match(name):
                raise LoadSpecError(f"header name {name!r} is not an HTTP token")
            if "\r" in value or "\n" in value:
                raise LoadSpecError(f"header {name} has a line break in its value")
        if self.paths is not None:
            if not self.paths:
                raise LoadSpecError("the path mix is empty")
            for path, weight in self.paths:
                _check_path(path)
                if not (math.isfinite(weight) and weight > 0):
                    raise LoadSpecError(f"weight of {path} must be positive, not {weight}")
        LoadTarget.parse(self.url)

    def cap(self) -> int:
        """The concurrency cap: as given, or enough for the rate at EXPECTED_LATENCY_S."""
        if self.concurrency is not None:
            return self.concurrency
        return max(MIN_CONCURRENCY, math.ceil(self.rps * EXPECTED_LATENCY_S))


def check_rate(rps: float) -> None:
    if not (math.isfinite(rps) and rps > 0):
        raise LoadSpecError(f"rate must be a positive number of requests per second, not {rps}")


def _check_path(path: str) -> None:
    if not path.startswith("/") or any(c in path for c in " \r\n\t"):
        raise LoadSpecError(f"path {path!r} must start with / and contain no whitespace")


@dataclass(frozen=True, slots=True)
class LoadTarget:
    """Where the load goes: the URL's host, port and path, checked once."""

    host: str
    port: int
    path: str  # path and query of the URL, "/" when it has none

    @classmethod
    def parse(cls, url: str) -> LoadTarget:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise LoadSpecError(f"{url}: only http:// URLs are supported")
        try:
            port = parts.port or 80
        except ValueError as exc:
            raise LoadSpecError(f"{url}: {exc}") from None
        if not parts.hostname:
            raise LoadSpecError(f"{url}: no host")
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        _check_path(path)
        return cls(parts.hostname, port, path)

    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Plan:
    """The spec compiled for the hot path: one ready request per path, cumulative weights."""

    target: LoadTarget
    paths: tuple[str, ...]
    requests: tuple[bytes, ...]
    cumulative: tuple[float, ...] = field(default=())
    retry_stale: bool = True

    @classmethod
    def compile(cls, spec: LoadSpec) -> Plan:
        target = LoadTarget.parse(spec.url)
        mix = spec.paths or ((target.path, 1.0),)
        paths = tuple(p for p, _ in mix)
        weights = [w for _, w in mix]
        total = sum(weights)
        cumulative = tuple(c / total for c in accumulate(weights))
        head = [(n, v) for n, v in spec.headers]
        names = {n.lower() for n, _ in head}
        if "host" not in names:
            head.insert(0, ("Host", target.authority()))
        if "user-agent" not in names:
            head.append(("User-Agent", USER_AGENT))
        if spec.method in {"POST", "PUT", "PATCH"} and "content-length" not in names:
            head.append(("Content-Length", "0"))
        lines = "".join(f"{n}: {v}\r\n" for n, v in head)
        requests = tuple(
            f"{spec.method} {p} HTTP/1.1\r\n{lines}\r\n".encode("latin-1") for p in paths
        )
        retry = spec.retry_stale and spec.method in IDEMPOTENT
        return cls(target, paths, requests, cumulative, retry)


def parse_path_mix(text: str) -> tuple[tuple[str, float], ...]:
    """`/items=9,/=1` -> (("/items", 9.0), ("/", 1.0)); a path without `=N` weighs 1."""
    out: list[tuple[str, float]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        path, eq, weight_text = item.rpartition("=")
        if not eq or not weight_text.replace(".", "", 1).isdigit():
            path, weight = item, 1.0
        else:
            weight = float(weight_text)
        _check_path(path)
        if weight <= 0:
            raise LoadSpecError(f"weight of {path} must be positive")
        out.append((path, weight))
    if not out:
        raise LoadSpecError("the path mix is empty")
    return tuple(out)


def parse_header(text: str) -> tuple[str, str]:
    """`name: value` as curl's -H takes it."""
    name, colon, value = text.partition(":")
    if not colon or not _TOKEN.match(name.strip()):
        raise LoadSpecError(f"header {text!r} is not `name: value`")
    return name.strip(), value.strip()
