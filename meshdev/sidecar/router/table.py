"""Compiled match tables: a virtual host by authority, then the first route that matches.

Everything here is built once per config apply; a request costs a dict look-up for its
virtual host and a few string comparisons per route. Semantics follow Envoy's route table:

- virtual hosts: exact domain, then the longest `*.suffix` wildcard, then the longest
  `prefix.*` wildcard, then `*`; the authority is tried as given and then without its port,
  so `backend`, `backend:80` and `backend:15001` all reach the domain `backend`.
- path: `prefix` is compared with the whole `:path` (query included, as Envoy does), `path`
  and `regex` with the path once the query string is removed; `regex` must match the whole
  path (Envoy's safe_regex is a full match).
- headers: several values of one header are joined with "," before matching; a missing
  header fails exact/prefix/regex whether inverted or not, and `present` honours `invert`.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from meshdev.common.sidecar_config import HeaderMatch, RouteMatch, WeightedCluster

T = TypeVar("T")


class HeaderLookup(Protocol):
    """What the matchers need of a request's headers: one (joined) value by lower-case name."""

    def get(self, name: str, /) -> str | None: ...


class _HeaderMatcher:
    __slots__ = ("exact", "invert", "name", "prefix", "present", "regex")

    def __init__(self, m: HeaderMatch) -> None:
        self.name = m.name.lower()
        self.exact = m.exact
        self.prefix = m.prefix
        self.regex = re.compile(m.regex) if m.regex is not None else None
        self.present = m.present
        self.invert = m.invert

    def matches(self, headers: HeaderLookup) -> bool:
        value = headers.get(self.name)
        if value is None:
            if self.present is None:
                return False
            return self.present == self.invert
        if self.exact is not None:
            # Envoy: an empty exact value matches any value.
            hit = not self.exact or value == self.exact
        elif self.prefix is not None:
            hit = value.startswith(self.prefix)
        elif self.regex is not None:
            hit = self.regex.fullmatch(value) is not None
        else:
            hit = bool(self.present)
        return hit != self.invert


class Matcher:
    """One compiled `RouteMatch`."""

    __slots__ = ("exact", "headers", "methods", "prefix", "regex")

    def __init__(self, m: RouteMatch) -> None:
        self.prefix = m.prefix
        self.exact = m.path
        self.regex = re.compile(m.regex) if m.regex is not None else None
        self.methods = frozenset(x.upper() for x in m.methods)
        self.headers = tuple(_HeaderMatcher(h) for h in m.headers)

    def matches(self, method: str, path: str, headers: HeaderLookup) -> bool:
        if self.prefix is not None:
            if not path.startswith(self.prefix):
                return False
        elif self.exact is not None:
            if strip_query(path) != self.exact:
                return False
        elif self.regex is not None and self.regex.fullmatch(strip_query(path)) is None:
            return False
        if self.methods and method not in self.methods:
            return False
        # Most routes have no header conditions: skip building the generator for them.
        return not self.headers or all(h.matches(headers) for h in self.headers)


def strip_query(path: str) -> str:
    q = path.find("?")
    return path if q < 0 else path[:q]


class RouteTable(Generic[T]):
    """An ordered list of (matcher, payload); the first match wins."""

    __slots__ = ("_entries",)

    def __init__(self, entries: Sequence[tuple[Matcher, T]]) -> None:
        self._entries = tuple(entries)

    def match(self, method: str, path: str, headers: HeaderLookup) -> T | None:
        for matcher, payload in self._entries:
            if matcher.matches(method, path, headers):
                return payload
        return None

    def __len__(self) -> int:
        return len(self._entries)


class HostIndex(Generic[T]):
    """Virtual host by authority, with Envoy's precedence of exact, suffix, prefix and `*`."""

    __slots__ = ("_any", "_exact", "_prefixes", "_suffixes")

    def __init__(self, items: Sequence[tuple[Sequence[str], T]]) -> None:
        self._exact: dict[str, T] = {}
        suffixes: list[tuple[str, T]] = []
        prefixes: list[tuple[str, T]] = []
        self._any: T | None = None
        for domains, payload in items:
            for raw in domains:
                d = raw.lower()
                if d == "*":
                    if self._any is None:
                        self._any = payload
                elif d.startswith("*"):
                    suffixes.append((d[1:], payload))
                elif d.endswith("*"):
                    prefixes.append((d[:-1], payload))
                else:
                    self._exact.setdefault(d, payload)
        # Longest wildcard first, as Envoy's most specific match wins.
        self._suffixes = tuple(sorted(suffixes, key=lambda x: -len(x[0])))
        self._prefixes = tuple(sorted(prefixes, key=lambda x: -len(x[0])))

    def lookup(self, authority: str) -> T | None:
        host = authority.lower()
        hit = self._exact.get(host)
        if hit is not None:
            return hit
        bare = strip_port(host)
        if bare is not host:
            hit = self._exact.get(bare)
            if hit is not None:
                return hit
        for cand in (host, bare) if bare is not host else (host,):
            for suffix, payload in self._suffixes:
                if cand.endswith(suffix) and len(cand) > len(suffix):
                    return payload
            for prefix, payload in self._prefixes:
                if cand.startswith(prefix) and len(cand) > len(prefix):
                    return payload
        return self._any


def strip_port(host: str) -> str:
    """`backend:8080` -> `backend`; `[::1]:80` -> `[::1]`; otherwise the same object."""
    colon = host.rfind(":")
    if colon < 0:
        return host
    bracket = host.rfind("]")
    if bracket > colon:
        return host
    if host[colon + 1 :].isdigit():
        return host[:colon]
    return host


class WeightedPick(Generic[T]):
    """Envoy's weighted_clusters: a uniform draw over the weight total picks a destination."""

    __slots__ = ("_cumulative", "_items", "_rand", "_total")

    def __init__(
        self, items: Sequence[tuple[T, int]], rand: Callable[[], float] = random.random
    ) -> None:
        kept = [(item, w) for item, w in items if w > 0]
        if not kept:
            raise ValueError("weights sum to 0")
        self._items = tuple(item for item, _ in kept)
        acc = 0
        cumulative: list[int] = []
        for _, w in kept:
            acc += w
            cumulative.append(acc)
        self._cumulative = tuple(cumulative)
        self._total = acc
        self._rand = rand

    def pick(self) -> T:
        items = self._items
        if len(items) == 1:
            return items[0]
        point = int(self._rand() * self._total)
        return items[bisect.bisect_right(self._cumulative, point)]


def weighted_clusters(clusters: Sequence[WeightedCluster]) -> list[tuple[str, int]]:
    return [(c.cluster, c.weight) for c in clusters]
