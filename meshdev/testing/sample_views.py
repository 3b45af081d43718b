"""Deterministic synthetic views: for snapshot tests, the CPU benchmark, and demos.

`sample_view(tick)` is a pure function of the tick, so a snapshot test's screen is the same on
every run; `SampleSource` plays ticks at a fixed rate through the `ViewSource` protocol
(meshdev.telemetry.io.source). `sample_view(tick, secured=True)` is the same mesh with mutual
TLS, authorization and certificates, as `secured_mesh` makes the mesh file say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Sequence

from meshdev.config.model import Authorization, Mesh, Security
from meshdev.telemetry.aggregation.view import (
    BreakerLimit,
    CertStatus,
    ClusterStats,
    EdgeMode,
    EdgeStats,
    Event,
    HostStats,
    MeshView,
    PodSecurity,
    RouteStats,
    SidecarStatus,
)
from meshdev.telemetry.io.source import OnView, ProxyTarget

EPOCH = 1_700_000_000.0  # a fixed wall-clock time, so snapshots show the same clock
HISTORY = 12
INTERVAL = 0.25  # seconds a view's counts cover (the telemetry source's default)
_SERVICES = ("backend", "frontend", "payments", "users", "search")
_ROUTE_NAMES = ("items", "canary", "default", "checkout", "profile", "lookup", "list", "admin")
_PODS = {
    "backend": ("backend-v1-0", "backend-v1-1", "backend-v2-0"),
    "backend.v1": ("backend-v1-0", "backend-v1-1"),
    "backend.v2": ("backend-v2-0",),
    "frontend": ("frontend-0",),
}


def _wave(tick: int, phase: int, low: float, high: float) -> float:
    return low + (high - low) * (0.5 + 0.5 * math.sin((tick + phase) / 3.0))


def _route(tick: int, i: int) -> RouteStats:
    vhost = _SERVICES[i % len(_SERVICES)]
    name = _ROUTE_NAMES[(i // len(_SERVICES)) % len(_ROUTE_NAMES)]
    if i >= len(_SERVICES) * len(_ROUTE_NAMES):
        name = f"r{i}"
    rps = round(_wave(tick, i, 5.0, 120.0), 2)
    failing = i == 0 and tick % 8 >= 4  # the first route's breaker overflows half the time
    flags = {"UO": 6 + tick % 3} if failing else {}
    if i == 1:
        flags["FI"] = 2
    errors = sum(flags.values())
    total = max(1, round(rps / 4))
    success = round(100.0 * (total - min(errors, total)) / total, 1)
    p50 = round(_wave(tick, i * 2, 1.0, 6.0), 1)
    history = tuple(round(_wave(tick - k, i, 5.0, 120.0), 1) for k in range(HISTORY - 1, -1, -1))
    return RouteStats(
        vhost=vhost,
        route=name,
        rps=rps,
        success_pct=success,
        p50=p50,
        p95=round(p50 * 3, 1),
        p99=round(p50 * 7, 1),
        retries_per_s=round(0.5 * (i % 3), 2),
        total=1000 * (i + 1) + tick * total,
        codes={"200": total - min(errors, total), **({"503": errors} if errors else {})},
        flags=flags,
        flags_per_s={f: n / INTERVAL for f, n in flags.items()},
        latency_buckets=((0.5, 0.5, 40), (1.0, 1.0, 120), (2.0, 2.0, 60), (5.0, 5.0, 12)),
        history=history,
    )


def _clusters(tick: int) -> tuple[ClusterStats, ...]:
    open_now = tick % 8 >= 4
    trips = tuple(
        float(6 + (tick - k) % 3) if (tick - k) % 8 >= 4 else 0.0 for k in range(11, -1, -1)
    )
    backend_limits = (
        BreakerLimit("max_connections", 12, 50, False),
        BreakerLimit("max_pending_requests", 5 if open_now else 1, 5, open_now),
        BreakerLimit("max_requests", 20 if open_now else 7, 20, open_now),
        BreakerLimit("max_retries", 0, 3, False),
    )
    quiet_limits = (
        BreakerLimit("max_connections", 2, 100, False),
        BreakerLimit("max_requests", 1, 100, False),
    )
    ejected = 1 if tick % 16 >= 8 else 0
    return (
        ClusterStats(
            "backend",
            3,
            3 - ejected,
            ejected,
            backend_limits,
            open_now,
            trips[-1],
            trips,
            rps=90.0,
            success_pct=93.3 if open_now else 100.0,
        ),
        ClusterStats(
            "backend.v1", 2, 2 - ejected, ejected, backend_limits, False, 0.0, (), 81.0, 100.0
        ),
        ClusterStats("backend.v2", 1, 1, 0, backend_limits, False, 0.0, (), 9.0, 100.0),
        ClusterStats("frontend", 1, 1, 0, quiet_limits, False, 0.0, (), 40.0, 100.0),
    )


def _hosts(tick: int) -> tuple[HostStats, ...]:
    ejected_pod = "backend-v1-1" if tick % 16 >= 8 else None
    out = []
    for cluster, pods in _PODS.items():
        for n, pod in enumerate(pods):
            out_now = pod == ejected_pod
            out.append(
                HostStats(
                    cluster=cluster,
                    pod=pod,
                    address=f"127.0.99.{n + 2 + (3 if 'v2' in pod else 0)}:15006",
                    rps=0.0 if out_now else round(_wave(tick, n, 10, 40), 1),
                    success_pct=None if out_now else 100.0,
                    ejected=out_now,
                    ejection_count=1 if out_now else 0,
                    returns_in_s=float(16 - tick % 16) if out_now else 0.0,
                    rq_active=n,
                    ejected_by=("frontend-0",) if out_now else (),
                )
            )
    return tuple(out)


DAY = 86400.0
_IDENTITY = "spiffe://cluster.local/ns/demo/sa/{}"


def secured_mesh(mesh: Mesh) -> Mesh:
    """`mesh` (the demo's: frontend and backend) with docs/security.md's example: STRICT
    mesh-wide, frontend PERMISSIVE, backend readable by frontend alone and never on /admin."""
    frontend = mesh.policies["frontend"].model_copy(update={"mtls": "PERMISSIVE"})
    return mesh.model_copy(
        update={
            "security": Security(mtls="STRICT", cert_ttl="24h"),
            "policies": {**mesh.policies, "frontend": frontend},
            "authorization": {
                "backend": tuple(
                    Authorization.model_validate(policy)
                    for policy in (
                        {
                            "name": "frontend-reads",
                            "action": "ALLOW",
                            "from": {"services": ["frontend"]},
                            "to": {"methods": ["GET"], "paths": ["/items*"]},
                        },
                        {"name": "no-admin", "action": "DENY", "to": {"paths": ["/admin*"]}},
                    )
                )
            },
        }
    )


def _edges(tick: int, secured: bool) -> tuple[EdgeStats, ...]:
    mode: EdgeMode = "mtls" if secured else "plaintext"
    return (
        EdgeStats("frontend", "backend", mode, 90.0, 2.5 if secured else 0.0),
        EdgeStats("ingress", "frontend", mode, round(_wave(tick, 0, 30.0, 50.0), 1), 0.0),
    )


def _pod_security(tick: int, secured: bool) -> tuple[PodSecurity, ...]:
    if not secured:
        return tuple(PodSecurity(node, service) for node, service in _SERVICE_OF.items())
    elapsed = tick / 4

    def cert(service: str, left: float) -> CertStatus:
        return CertStatus(_IDENTITY.format(service), left - elapsed, DAY)

    out = []
    for node, service in _SERVICE_OF.items():
        backend = service == "backend"
        left = {"ingress": 20 * 3600 + 180.0, "backend-v2-0": 3600 + 52 * 60.0}.get(
            node, 23 * 3600 + 41 * 60.0
        )
        out.append(
            PodSecurity(
                node,
                service,
                mtls=None if service == "ingress" else "STRICT" if backend else "PERMISSIVE",
                rbac_allowed_per_s={"backend-v2-0": 9.0}.get(node, 40.0) if backend else None,
                rbac_denied_per_s={"backend-v1-0": 1.5, "backend-v1-1": 1.0}.get(node, 0.0)
                if backend
                else None,
                handshakes_per_s=None if service == "ingress" else 1.0,
                tls_failures={"no_filter_chain_match": 3} if node == "backend-v1-1" else {},
                spiffe_id=_IDENTITY.format(service),
                cert=cert(service, left),
            )
        )
    return tuple(out)


_SERVICE_OF = {
    "ingress": "ingress",
    "frontend-0": "frontend",
    "backend-v1-0": "backend",
    "backend-v1-1": "backend",
    "backend-v2-0": "backend",
}


def sample_view(tick: int, routes: int = 6, *, secured: bool = False) -> MeshView:
    sidecars = tuple(
        SidecarStatus(
            node=pod,
            admin_url=f"http://127.0.99.{i + 2}:15000",
            connected=True,
            stale=False,
            mode="stream",
            config_version=1,
            config_hash="3f9a1c2d4e5b",
        )
        for i, pod in enumerate(("ingress", "frontend-0", *_PODS["backend"]))
    )
    events: tuple[Event, ...] = ()
    if tick % 8 == 4:
        events = (Event(EPOCH + tick / 4, "breaker", "backend: max_pending_requests 5/5 reached"),)
    elif tick % 16 == 8:
        events = (Event(EPOCH + tick / 4, "ejection", "backend-v1-1 ejected (5 consecutive 5xx)"),)
    sample_routes = tuple(_route(tick, i) for i in range(routes))
    if secured and sample_routes:
        # backend's RBAC refuses some of items' requests: its callers see 403s.
        items = sample_routes[0]
        sample_routes = (
            dataclasses.replace(items, codes={**items.codes, "403": 5}),
            *sample_routes[1:],
        )
    return MeshView(
        at=EPOCH + tick / 4,
        sidecars=sidecars,
        routes=sample_routes,
        clusters=_clusters(tick),
        hosts=_hosts(tick),
        events=events,
        edges=_edges(tick, secured),
        pod_security=_pod_security(tick, secured),
    )


class SampleSource:
    """Plays `sample_view` ticks at `hz` until cancelled."""

    def __init__(self, hz: float = 4.0, routes: int = 20) -> None:
        self.hz = hz
        self.routes = routes
        self.targets: list[ProxyTarget] = []
        self.tick = 0

    @property
    def interval(self) -> float:
        return 1.0 / self.hz

    @interval.setter
    def interval(self, seconds: float) -> None:
        # The protocol lets a source's cadence change; here it is the same as changing `hz`.
        self.hz = 1.0 / seconds

    def set_targets(self, targets: Sequence[ProxyTarget]) -> None:
        self.targets = list(targets)

    async def run(self, on_view: OnView) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            on_view(sample_view(self.tick, self.routes))
            self.tick += 1
            # Paced from the start, so a slow consumer does not slow the source down.
            await asyncio.sleep(max(0.0, start + self.tick / self.hz - loop.time()))
