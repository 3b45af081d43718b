"""What the dashboard shows, as plain immutable data: the seam between telemetry and the TUI.

Telemetry (stream clients + aggregation) produces a `MeshView` a few times a second; the TUI
renders whichever one is newest and drops stale ones. Tests of the TUI build these by hand (or
with a fake source); tests of telemetry assert on them. Rates are per second over the last
interval; latencies are milliseconds; `history` tuples are oldest-first, newest last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from meshdev.common.envoy_names import ServiceProtocol

# Envoy's response flags meshdev produces, in the order the dashboard lists them.
FLAGS = ("UO", "UH", "UF", "URX", "UT", "NR", "FI", "DI", "RL")


@dataclass(frozen=True, slots=True)
class RouteStats:
    """One route of one destination (vhost.<vhost>.route.<route>), summed over sidecars."""

    vhost: str
    route: str
    rps: float
    success_pct: float | None  # None when nothing was served in the interval
    p50: float | None
    p95: float | None
    p99: float | None
    retries_per_s: float
    total: int
    codes: dict[str, int] = field(default_factory=dict)  # interval counts by status code
    flags: dict[str, int] = field(default_factory=dict)  # interval counts by response flag
    # The same flags per second, over the interval as `rps` is (what the routes table shows
    # beside it: a count per 0.25 s read as a quarter of the truth next to a per-second RPS).
    flags_per_s: dict[str, float] = field(default_factory=dict)
    latency_buckets: tuple[tuple[float, float, int], ...] = ()  # [lower_ms, width_ms, count]
    history: tuple[float, ...] = ()  # rps, last N intervals
    # Upgraded (WebSocket) connections: upgrade requests in the interval (refused ones too,
    # as Envoy counts them), and connections open now (or still in their handshake).
    upgrades: int = 0
    upgrades_open: int = 0
    # gRPC calls in the interval by the grpc-status their callers got ("0", "14", ...).
    grpc_codes: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.vhost}/{self.route}"


@dataclass(frozen=True, slots=True)
class BreakerLimit:
    name: str  # max_connections, max_pending_requests, max_requests, max_retries
    active: int
    limit: int
    open: bool  # at the limit now: the next request over it gets 503 UO
    # Every sidecar has its own breaker (as every Envoy does); this is the one nearest its
    # limit, and `open` is true when the limit is reached on any sidecar.
    node: str = ""


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """One upstream cluster (a service or a subset), summed over the sidecars calling it."""

    name: str
    endpoints: int
    healthy: int
    ejected: int
    limits: tuple[BreakerLimit, ...]
    open_now: bool  # any limit open right now on any sidecar
    trips_per_s: float  # overflows (503 UO) per second in the last interval
    trip_history: tuple[float, ...] = ()
    rps: float = 0.0
    success_pct: float | None = None
    flags: dict[str, int] = field(default_factory=dict)  # interval counts by response flag
    # "tcp": a tcp_proxy relays connections to it; it has no requests (rps, success, and the
    # request limits mean nothing), but connections and bytes.
    protocol: ServiceProtocol = "http"
    cx_active: int = 0  # its callers' connections open now
    cx_per_s: float = 0.0  # connections opened
    bytes_per_s: float = 0.0  # relayed, both ways
    connect_fail_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class HostStats:
    """One endpoint of a cluster; `address` is `ip:port`. Summed over the sidecars calling it."""

    cluster: str
    pod: str
    address: str
    rps: float
    success_pct: float | None
    ejected: bool  # ejected by at least one sidecar (each runs its own outlier detection)
    ejection_count: int
    returns_in_s: float  # 0 when not ejected
    rq_active: int
    ejected_by: tuple[str, ...] = ()  # the sidecars that eject it now
    # "tcp": of a tcp cluster; then `rps` is connections per second and `rq_active` its open
    # connections (Envoy counts each relayed connection as a request on its host).
    protocol: ServiceProtocol = "http"

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.address}"


@dataclass(frozen=True, slots=True)
class SidecarStatus:
    node: str
    admin_url: str
    connected: bool
    stale: bool  # no snapshot for a while: its numbers are old
    mode: str  # "stream" or "poll"
    config_version: int | None
    config_hash: str | None
    error: str = ""
    age_s: float | None = None  # seconds since its last snapshot; None before the first
    # What its own app was sent (the inbound listener), over the last interval.
    rps: float = 0.0
    success_pct: float | None = None


# How a caller reaches a destination: "mtls" when its clusters for it have TLS (the caller
# sidecar's config says so), "plaintext" when they have none, "mixed" while its sidecars
# disagree (a reload that adds or removes security is on its way), "unknown" without a config.
EdgeMode = Literal["mtls", "plaintext", "mixed", "unknown"]


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """Traffic from one service to another, as the callers' sidecars count it: the clusters of
    a destination (its subsets' too) summed over the caller service's pods."""

    source: str  # the caller's service ("ingress" for the gateway)
    destination: str
    mode: EdgeMode
    rps: float  # requests (upstream tries) per second; a tcp destination's connections
    denied_per_s: float  # 403s its callers got back (`RBAC: access denied`, or the app's own)
    # Failed handshakes of the callers' TLS to it in the interval, by Envoy's cluster stat
    # (`connection_error`, `fail_verify_error`, `fail_verify_san`).
    tls_failures: dict[str, int] = field(default_factory=dict)
    tcp: bool = False
    # The same since the callers' sidecars started (Envoy's counters): a failure stays in
    # sight once its interval has passed (a quarter of a second at the dashboard's pace).
    tls_failures_total: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.source}->{self.destination}"


@dataclass(frozen=True, slots=True)
class CertStatus:
    """A pod's workload certificate, from its admin API's GET /certs."""

    spiffe_id: str
    expires_in_s: float  # from the view's time; negative once expired
    lifetime_s: float | None  # from valid_from to expiry: the TTL it was issued with


@dataclass(frozen=True, slots=True)
class PodSecurity:
    """One pod's inbound side as its own sidecar counts it, and its certificate."""

    node: str
    service: str
    # Its inbound listener's mode (STRICT, PERMISSIVE, DISABLE) from its config; None when
    # unknown (no config read, or a gateway, which has no inbound listener).
    mtls: str | None = None
    # Envoy's RBAC filter (`http.inbound.rbac.allowed` / `.denied`), per second; None where
    # the listener has no policies (Envoy makes the stats only there).
    rbac_allowed_per_s: float | None = None
    rbac_denied_per_s: float | None = None
    # TLS on the inbound listener (`listener.<address>_15006.ssl.handshake`); None before its
    # first TLS connection (Envoy makes the stats then).
    handshakes_per_s: float | None = None
    # Refused connections in the interval by Envoy's listener stat: `connection_error`,
    # `fail_verify_error`, `fail_verify_san`, `fail_verify_no_cert`, and
    # `no_filter_chain_match` (plaintext refused by a STRICT listener).
    tls_failures: dict[str, int] = field(default_factory=dict)
    # The same since its sidecar started: what `p` (a plaintext probe) made it refuse is still
    # there when one looks, after the probe's interval has passed.
    tls_failures_total: dict[str, int] = field(default_factory=dict)
    # The identity its config names (it should have a certificate); None: no TLS here.
    spiffe_id: str | None = None
    cert: CertStatus | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth a line in the events panel."""

    at: float
    kind: str  # reload, rejected, breaker, ejection, return, exit, sidecar, load, info
    text: str
    # The upstream cluster a failure event is about (a breaker tripping, a host ejected): the
    # Traces view finds a failed trace through it.
    cluster: str = ""


@dataclass(frozen=True, slots=True)
class MeshView:
    at: float
    sidecars: tuple[SidecarStatus, ...] = ()
    routes: tuple[RouteStats, ...] = ()
    clusters: tuple[ClusterStats, ...] = ()
    hosts: tuple[HostStats, ...] = ()
    events: tuple[Event, ...] = ()  # new since the previous view
    # Interval counts of response flags that belong to no one route: NR (nothing matched),
    # and FI/DI/RL/U* counted per listener or cluster where the route table cannot tell whose.
    unattributed_flags: dict[str, int] = field(default_factory=dict)
    # Who calls whom, and how (security.py): the edges seen in traffic, and each pod's
    # inbound authorization, TLS and certificate.
    edges: tuple[EdgeStats, ...] = ()
    pod_security: tuple[PodSecurity, ...] = ()
