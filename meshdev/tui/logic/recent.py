"""Refusals of the last seconds: what the 403 and TLS explanations are made from.

A view counts one interval, a quarter of a second at the dashboard's pace. At a low rate a
403 or a failed handshake is in one view of several, so an explanation drawn from the view
alone showed for a quarter of a second and was gone until the next one: it flickered, or was
never there when one looked. `RecentFailures` is told of every view the source makes (those
the screen drops too) and keeps, over a sliding window of `WINDOW_S` seconds of the views'
own time, how many of each it counted and when the last one was; the explanations stay
while the window holds one, and say how long ago that was when it is not in the newest view.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from meshdev.telemetry.aggregation.view import MeshView

WINDOW_S = 10.0
# The interval assumed for the first view's rates (the dashboard's pace), and the bounds of
# the one measured between two views (a paused source, a clock that jumped).
FIRST_INTERVAL_S = 0.25
MAX_INTERVAL_S = 5.0


@dataclass(frozen=True, slots=True)
class Seen:
    """Something counted in the window: how many, and how long before the newest view the
    last of them was (0: in the newest view)."""

    count: int
    age_s: float

    @property
    def ago(self) -> str:
        """`0.8 s ago`, `9.5 s ago`: the window is a few seconds, a tenth tells them apart."""
        return f"{self.age_s:.1f} s ago"

    def when(self, window: float = WINDOW_S) -> str:
        """`the last 0.8 s ago, 2 in the last 10 s`: how recent, for a line that says so."""
        return f"the last {self.ago}, {self.count} in the last {window:g} s"


class _Window:
    """Counts by key, each with the time it was counted at, over the last `window` seconds."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, deque[tuple[float, int]]] = {}

    def add(self, key: str, at: float, n: int) -> None:
        if n > 0:
            self._seen.setdefault(key, deque()).append((at, n))

    def expire(self, now: float) -> None:
        start = now - self.window
        for key in list(self._seen):
            counts = self._seen[key]
            while counts and counts[0][0] <= start:
                counts.popleft()
            if not counts:
                del self._seen[key]

    def get(self, key: str, now: float) -> Seen | None:
        counts = self._seen.get(key)
        if not counts:
            return None
        return Seen(sum(n for _, n in counts), max(0.0, now - counts[-1][0]))

    def names(self) -> list[str]:
        return list(self._seen)


class RecentFailures:
    """403s and failed handshakes of the last `window` seconds, from every view."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self._forget()

    def _forget(self) -> None:
        self.now: float | None = None  # the newest view's time
        self._denied = _Window(self.window)  # by edge key (source->destination)
        self._route = _Window(self.window)  # by "<route key> <403|UF>"
        self._edge_tls = _Window(self.window)  # by "<edge key> <kind>"
        self._pod_tls = _Window(self.window)  # by "<pod> <kind>"
        self._rbac = _Window(self.window)  # by destination service: its pods' RBAC denials
        self._edge_ends: dict[str, tuple[str, str]] = {}  # edge key -> (source, destination)
        self._pod_service: dict[str, str] = {}

    def observe(self, view: MeshView, *, security: bool = True) -> None:
        """Count `view`'s refusals. Its security parts (edges, pods) are worked out only when
        a view's are read (deferred_view.py): they are read here when `security` (the tab or
        a route detail shows them) or when a route of the view has a 403 or a connect
        failure, which is where a caller's refusal shows; else only the routes are."""
        at = view.at
        if self.now is not None and at < self.now - MAX_INTERVAL_S:
            # The views' wall clock was set back: what was counted is on another time line.
            self._forget()
        dt = FIRST_INTERVAL_S if self.now is None else min(MAX_INTERVAL_S, at - self.now)
        if dt <= 0:
            return  # not newer: its counts are in already, or belong before the window
        self.now = at
        failing = bool(view.unattributed_flags.get("UF"))
        for r in view.routes:
            denied, failed = r.codes.get("403", 0), r.flags.get("UF", 0)
            if denied or failed:
                failing = True
                self._route.add(f"{r.key} 403", at, denied)
                self._route.add(f"{r.key} UF", at, failed)
        if security or failing:
            self._security(view, at, dt)
        for window in (self._denied, self._route, self._edge_tls, self._pod_tls, self._rbac):
            window.expire(at)

    def _security(self, view: MeshView, at: float, dt: float) -> None:
        for e in view.edges:
            if e.denied_per_s > 0 or e.tls_failures:
                self._edge_ends[e.key] = (e.source, e.destination)
            if e.denied_per_s > 0:
                self._denied.add(e.key, at, max(1, round(e.denied_per_s * dt)))
            for kind, n in e.tls_failures.items():
                self._edge_tls.add(f"{e.key} {kind}", at, n)
        for p in view.pod_security:
            if p.rbac_denied_per_s:
                self._rbac.add(p.service, at, max(1, round(p.rbac_denied_per_s * dt)))
            if p.tls_failures:
                self._pod_service[p.node] = p.service
                for kind, n in p.tls_failures.items():
                    self._pod_tls.add(f"{p.node} {kind}", at, n)

    def _now(self) -> float:
        return self.now if self.now is not None else 0.0

    def denied(self, edge: str) -> Seen | None:
        """403s the callers of this edge (`source->destination`) got in the window."""
        return self._denied.get(edge, self._now())

    def route(self, route: str, what: str) -> Seen | None:
        """A route's (`vhost/route`) 403s (`what` "403") or connect failures ("UF")."""
        return self._route.get(f"{route} {what}", self._now())

    def rbac_denied(self, services: Iterable[str]) -> bool:
        """Whether these services' own RBAC filters denied a request in the window."""
        now = self._now()
        return any(self._rbac.get(s, now) is not None for s in services)

    def refused_callers(self, services: Iterable[str]) -> list[str]:
        """The services whose requests to these got 403s in the window."""
        wanted = set(services)
        return sorted(
            {
                self._edge_ends[key][0]
                for key in self._denied.names()
                if self._edge_ends[key][1] in wanted
            }
        )

    def tls_failures(self, services: Iterable[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Failed handshakes to these services in the window, by Envoy's stat: as their
        callers' clusters count them, and as their own pods' inbound listeners do."""
        wanted = set(services)
        now = self._now()
        upstream: dict[str, int] = {}
        for key in self._edge_tls.names():
            edge, kind = key.rsplit(" ", 1)
            seen = self._edge_tls.get(key, now)
            if seen is not None and self._edge_ends[edge][1] in wanted:
                upstream[kind] = upstream.get(kind, 0) + seen.count
        inbound: dict[str, int] = {}
        for key in self._pod_tls.names():
            pod, kind = key.rsplit(" ", 1)
            seen = self._pod_tls.get(key, now)
            if seen is not None and self._pod_service.get(pod) in wanted:
                inbound[kind] = inbound.get(kind, 0) + seen.count
        return upstream, inbound
