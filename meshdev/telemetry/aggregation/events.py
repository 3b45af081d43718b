"""Events from the difference between two consecutive views: what changed, in a line each.

Breakers are momentary in Envoy (open only while a limit is reached), so a breaker's event
marks the change between quiet and tripping (open now, or overflowing during the interval),
not every sample in between.
"""

from __future__ import annotations

from collections.abc import Iterator

from meshdev.telemetry.aggregation.view import (
    ClusterStats,
    Event,
    HostStats,
    MeshView,
    SidecarStatus,
)

_MAX_NAMES = 3


def diff_views(previous: MeshView | None, current: MeshView) -> tuple[Event, ...]:
    at = current.at
    events: list[Event] = []
    before = previous if previous is not None else MeshView(at=at)
    events += _sidecar_events(before.sidecars, current.sidecars, at)
    events += _breaker_events(before.clusters, current.clusters, at)
    events += _host_events(before.hosts, current.hosts, at)
    return tuple(events)


def _sidecar_events(
    before: tuple[SidecarStatus, ...], now: tuple[SidecarStatus, ...], at: float
) -> Iterator[Event]:
    old = {s.node: s for s in before}
    reloaded: dict[int, list[str]] = {}
    for s in now:
        p = old.get(s.node)
        was_connected = p is not None and p.connected
        if s.connected and not was_connected:
            serving = f", config v{s.config_version}" if s.config_version is not None else ""
            yield Event(at, "sidecar", f"{s.node} connected ({s.mode}{serving})")
        elif was_connected and not s.connected:
            reason = f": {s.error}" if s.error else ""
            yield Event(at, "sidecar", f"{s.node} lost{reason}")
        elif s.connected and p is not None:
            if s.stale and not p.stale:
                yield Event(at, "sidecar", f"{s.node} is silent: its numbers are stale")
            elif p.stale and not s.stale:
                yield Event(at, "sidecar", f"{s.node} is reporting again")
        if (
            p is not None
            and p.config_version is not None
            and s.config_version is not None
            and s.config_version != p.config_version
        ):
            reloaded.setdefault(s.config_version, []).append(s.node)
    for version, nodes in sorted(reloaded.items()):
        names = ", ".join(nodes[:_MAX_NAMES])
        more = f" (+{len(nodes) - _MAX_NAMES} more)" if len(nodes) > _MAX_NAMES else ""
        yield Event(at, "reload", f"config v{version} now served by {names}{more}")


def _tripping(c: ClusterStats) -> bool:
    return c.open_now or c.trips_per_s > 0


def _breaker_events(
    before: tuple[ClusterStats, ...], now: tuple[ClusterStats, ...], at: float
) -> Iterator[Event]:
    old = {c.name: c for c in before}
    for c in now:
        p = old.get(c.name)
        was = p is not None and _tripping(p)
        if _tripping(c) and not was:
            at_limit = [f"{lim.name} {lim.active}/{lim.limit}" for lim in c.limits if lim.open]
            state = "open" if c.open_now else "tripping"
            detail = f": {', '.join(at_limit)}" if at_limit else ""
            yield Event(
                at,
                "breaker",
                f"breaker {c.name} {state}{detail} ({c.trips_per_s:.0f} overflows/s)",
                cluster=c.name,
            )
        elif was and not _tripping(c):
            yield Event(at, "breaker", f"breaker {c.name} closed")


def _host_events(
    before: tuple[HostStats, ...], now: tuple[HostStats, ...], at: float
) -> Iterator[Event]:
    old = {(h.cluster, h.address): h for h in before}
    for h in now:
        p = old.get((h.cluster, h.address))
        name = h.pod or h.address
        was_ejected = p is not None and p.ejected
        # A host that returns while it still fails is ejected again within milliseconds under
        # load, between two views: only its ejection count tells that it happened. (The count
        # is summed over the callers' sidecars, so another caller ejecting it counts too.)
        again = was_ejected and p is not None and h.ejection_count > p.ejection_count
        if h.ejected and (not was_ejected or again):
            length = f" for {h.returns_in_s:.0f}s" if h.returns_in_s > 0 else ""
            count = f" (ejection #{h.ejection_count})" if h.ejection_count else ""
            what = f"ejected from {h.cluster} again" if again else f"ejected from {h.cluster}"
            yield Event(at, "ejection", f"{name} {what}{length}{count}", cluster=h.cluster)
        elif p is not None and p.ejected and not h.ejected:
            yield Event(at, "return", f"{name} returned to {h.cluster}")
