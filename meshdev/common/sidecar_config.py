"""The per-sidecar config: what the control plane renders and a sidecar serves.

This is the contract between `meshdev.plan` (which renders it from mesh.yaml through
`templates/sidecar.yaml`) and the data plane. It is plain JSON on the wire (POST /config),
durations are float seconds, and every reference between its parts is checked at once so a
rejected config answers with every reason, not the first.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meshdev.common import envoy_defaults as envoy
from meshdev.common.envoy_names import LbPolicy, RetryOn

ListenerKind = Literal["inbound", "outbound", "ingress"]
# Istio's PeerAuthentication modes: an inbound listener takes mutual TLS only, both, or none.
MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
AuthzAction = Literal["ALLOW", "DENY"]

# Ports inside each pod, as Istio numbers them, so what users learn here carries over.
ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HeaderMatch(_Model):
    """One header condition; exactly one of exact, prefix, regex or present is set."""

    name: str = Field(min_length=1)
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None
    present: bool | None = None
    invert: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> HeaderMatch:
        kinds = [k for k in ("exact", "prefix", "regex", "present") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"header {self.name!r}: give exactly one of exact, prefix, regex, present"
            )
        if self.regex is not None:
            re.compile(self.regex)
        return self


class RouteMatch(_Model):
    """Path match (at most one of prefix, path, regex; none means every path) and conditions."""

    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()

    @model_validator(mode="after")
    def _one_path_kind(self) -> RouteMatch:
        given = [k for k in ("prefix", "path", "regex") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give at most one of prefix, path, regex")
        if self.regex is not None:
            re.compile(self.regex)
        return self


class WeightedCluster(_Model):
    cluster: str
    weight: int = Field(ge=0)


class RetryPolicy(_Model):
    """Envoy's retry policy. `attempts` is Envoy's num_retries: retries after the first try."""

    attempts: int = Field(ge=0)
    retry_on: tuple[RetryOn, ...] = ("5xx",)
    retriable_status_codes: tuple[int, ...] = ()
    per_try_timeout: float | None = Field(default=None, gt=0)
    # "Full jitter" over [0, min(max, base * 2^n)), as Envoy's RetryBackOff.
    base_interval: float = Field(default=envoy.RETRY_BASE_INTERVAL, gt=0)
    max_interval: float = Field(default=envoy.RETRY_MAX_INTERVAL, gt=0)


class FaultAbort(_Model):
    # The HTTP status; with grpc_status, the one a caller that is no gRPC client gets.
    status: int = Field(ge=200, le=599)
    percent: float = Field(ge=0, le=100)
    # Envoy's grpc_status abort: a gRPC caller gets HTTP 200 with this grpc-status.
    grpc_status: int | None = Field(default=None, ge=0, le=16)


class FaultDelay(_Model):
    fixed: float = Field(ge=0)
    percent: float = Field(ge=0, le=100)


class Fault(_Model):
    abort: FaultAbort | None = None
    delay: FaultDelay | None = None


class RateLimit(_Model):
    """Local token bucket: `burst` tokens, refilled at `requests_per_second`."""

    requests_per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class Route(_Model):
    name: str = Field(min_length=1)
    match: RouteMatch = RouteMatch()
    clusters: tuple[WeightedCluster, ...] = Field(min_length=1)
    # 0 disables it; it covers every try.
    timeout: float = Field(default=envoy.ROUTE_TIMEOUT, ge=0)
    retries: RetryPolicy | None = None
    fault: Fault | None = None
    rate_limit: RateLimit | None = None

    @model_validator(mode="after")
    def _weights(self) -> Route:
        if sum(c.weight for c in self.clusters) <= 0:
            raise ValueError(f"route {self.name!r}: cluster weights sum to 0")
        return self


class VirtualHost(_Model):
    """The routes of one destination service, chosen by the request's Host."""

    name: str = Field(min_length=1)
    domains: tuple[str, ...] = Field(min_length=1)
    routes: tuple[Route, ...] = ()
    # Envoy's field of the same name: answers to this host's requests, local ones included,
    # carry `x-envoy-attempt-count` (the tries this hop made), replacing an upstream's.
    include_attempt_count_in_response: bool = False


class CircuitBreaker(_Model):
    """Envoy's per-cluster thresholds (defaults are Envoy's)."""

    max_connections: int = Field(default=envoy.MAX_CONNECTIONS, ge=1)
    max_pending_requests: int = Field(default=envoy.MAX_PENDING_REQUESTS, ge=0)
    max_requests: int = Field(default=envoy.MAX_REQUESTS, ge=1)
    max_retries: int = Field(default=envoy.MAX_RETRIES, ge=0)


class OutlierDetection(_Model):
    """Envoy's consecutive-5xx outlier detection (defaults are Envoy's)."""

    consecutive_5xx: int = Field(default=envoy.CONSECUTIVE_5XX, ge=1)
    interval: float = Field(default=envoy.OUTLIER_INTERVAL, gt=0)
    base_ejection_time: float = Field(default=envoy.BASE_EJECTION_TIME, gt=0)
    max_ejection_percent: float = Field(default=envoy.MAX_EJECTION_PERCENT, ge=0, le=100)


class UpstreamTls(_Model):
    """Mutual TLS to a cluster's endpoints: the sidecar presents its workload certificate and
    accepts an endpoint only if its chain leads to the mesh's CA and its URI SAN is one of
    `spiffe_ids` (Envoy's match_typed_subject_alt_names), e.g.
    spiffe://cluster.local/ns/<mesh>/sa/<service>. The certificate and key are not here: they
    reach the sidecar on the admin API (POST /certs), never in a config or config_dump."""

    spiffe_ids: tuple[str, ...] = Field(min_length=1)


class AuthzRule(_Model):
    """One rule of an authorization policy (Istio's AuthorizationPolicy rule): every given
    field must match; a rule with no field matches every request. Principals are SPIFFE IDs
    without the scheme, as Istio writes them (cluster.local/ns/<mesh>/sa/<service>); a request
    with no verified peer certificate has no principal. Values of principals and paths are
    Istio's patterns: exact, `prefix*`, `*suffix`, or `*` (anything, but for principals only
    a present one); methods are exact."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


class AuthzPolicy(_Model):
    """Istio's AuthorizationPolicy for the listener's service, evaluated as Istio does: any
    matching DENY policy denies; with no ALLOW policy the request is allowed; otherwise it
    must match an ALLOW policy. A policy matches when any of its rules does (so an ALLOW
    policy with no rules matches nothing: Istio's allow-nothing)."""

    name: str = Field(min_length=1)
    action: AuthzAction
    rules: tuple[AuthzRule, ...] = ()


class Endpoint(_Model):
    address: str
    port: int = Field(ge=1, le=65535)
    pod: str = ""


class Cluster(_Model):
    name: str = Field(min_length=1)
    endpoints: tuple[Endpoint, ...] = ()
    lb: LbPolicy = "round_robin"
    # ring_hash hashes this request header (Istio's consistentHash.httpHeaderName).
    hash_header: str | None = None
    connect_timeout: float = Field(default=envoy.CONNECT_TIMEOUT, gt=0)
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    outlier_detection: OutlierDetection | None = None
    # Envoy's stream_idle_timeout for streams to this cluster: an upgraded (WebSocket) stream
    # with no bytes either way for this long is closed; 0 disables it.
    stream_idle_timeout: float = Field(default=envoy.STREAM_IDLE_TIMEOUT, ge=0)
    # Envoy's http2_protocol_options (Istio sets them for grpc/http2 ports): requests go to
    # the endpoints as streams over h2c with prior knowledge.
    http2: bool = False
    # Set: connections to the endpoints are mutual TLS (Istio's ISTIO_MUTUAL), see UpstreamTls.
    tls: UpstreamTls | None = None


class IngressRoute(_Model):
    """The gateway's own path routing: picks the destination service (a virtual host)."""

    name: str = Field(min_length=1)
    match: RouteMatch = RouteMatch()
    virtual_host: str


class TcpProxy(_Model):
    """Envoy's tcp_proxy network filter (envoy.extensions.filters.network.tcp_proxy.v3): the
    listener relays bytes instead of parsing HTTP. Its stats are `tcp.<stat_prefix>.*`."""

    stat_prefix: str = Field(min_length=1)
    # One cluster, or Envoy's weighted_clusters: picked per connection.
    clusters: tuple[WeightedCluster, ...] = Field(min_length=1)
    # No bytes either way for this long closes both sides; 0 disables it.
    idle_timeout: float = Field(default=envoy.TCP_IDLE_TIMEOUT, ge=0)

    @model_validator(mode="after")
    def _weights(self) -> TcpProxy:
        if sum(c.weight for c in self.clusters) <= 0:
            raise ValueError(f"tcp_proxy {self.stat_prefix!r}: cluster weights sum to 0")
        return self


class Listener(_Model):
    name: str = Field(min_length=1)
    kind: ListenerKind
    address: str
    port: int = Field(ge=1, le=65535)
    # inbound: the cluster holding the local app.
    cluster: str | None = None
    # ingress: path routes onto virtual hosts.
    routes: tuple[IngressRoute, ...] = ()
    # Set: the listener is a tcp_proxy (its network filter, as in Envoy's filter chain) rather
    # than the HTTP connection manager; an inbound one relays to `cluster`.
    tcp_proxy: TcpProxy | None = None
    # Envoy's bind_to_port: false: no socket of its own; a use_original_dst listener hands it
    # the captured connections whose original destination is its address and port (0.0.0.0:
    # any address on that port), as Istio's per-service outbound listeners behind 15001.
    bind_to_port: bool = True
    # inbound: Istio's PeerAuthentication mode. STRICT refuses plaintext, PERMISSIVE takes
    # both (TLS told by the first bytes, as Envoy's tls_inspector), DISABLE plaintext only.
    mtls: MtlsMode = "DISABLE"
    # inbound: the service's authorization policies (Envoy's RBAC filter); a denied request
    # gets 403 `RBAC: access denied`.
    authorization: tuple[AuthzPolicy, ...] = ()
    # Envoy's use_original_dst (the original_dst listener filter): connections redirected here
    # by the pod's iptables go to the listener of their original destination (SO_ORIGINAL_DST),
    # or are relayed there unchanged when no listener has it (Istio's PassthroughCluster).
    use_original_dst: bool = False


class Egress(_Model):
    """Istio's Sidecar resource, egress hosts: this sidecar routes only to the services its
    app calls (mesh.yaml's `calls:`). A request for one of `hidden` (the mesh's services it
    does not call) is answered 404 NR, as for any unknown host, but saying why."""

    service: str = Field(min_length=1)
    calls: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


class Admin(_Model):
    address: str = "127.0.0.1"
    port: int = Field(default=ADMIN_PORT, ge=1, le=65535)


class Limits(_Model):
    """Connection hardening; defaults follow Envoy's where it has one."""

    header_timeout: float = Field(default=10.0, gt=0)
    idle_timeout: float = Field(default=60.0, gt=0)
    max_headers: int = Field(default=envoy.MAX_HEADERS, ge=1)
    max_header_bytes: int = Field(default=envoy.MAX_HEADER_BYTES, ge=1024)
    max_header_line: int = Field(default=8 * 1024, ge=256)
    max_admin_body: int = Field(default=1024 * 1024, ge=1024)
    # A TLS handshake not done in this long is abandoned (Envoy's
    # transport_socket_connect_timeout; counted as ssl.connection_error).
    tls_handshake_timeout: float = Field(default=10.0, gt=0)


def collector_problem(url: str) -> str | None:
    """Why `url` cannot be a trace collector's address, or None: a sidecar posts spans over
    plain HTTP/1.1 to a host and port it connects to itself (no TLS to collectors: they run
    beside the mesh, on loopback or the mesh's network)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "expected a URL like http://127.0.0.1:9411/api/v2/spans (its port is wrong)"
    if parts.scheme != "http":
        why = "https collectors are not supported; " if parts.scheme == "https" else ""
        return f"{why}expected an http:// URL like http://127.0.0.1:9411/api/v2/spans"
    if not parts.hostname or parts.username is not None or port == 0:
        return "expected a host and an optional port after http://"
    return None


def collector_address(url: str) -> tuple[str, int, str]:
    """Host, port and request target of a collector URL that `collector_problem` accepts."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return parts.hostname or "", parts.port or 80, target


class Tracing(_Model):
    """Distributed tracing (docs/tracing.md): spans as Envoy's Zipkin tracer makes them, kept
    in the sidecar's ring (GET /spans) and exported to the collectors given. `sampling` is the
    percent of new traces sampled at their first hop (a caller's decision is honoured); 0
    turns tracing off in this sidecar, so the request path does no tracing work at all."""

    sampling: float = Field(default=0.0, ge=0, le=100)
    # Zipkin v2 JSON (POST, usually .../api/v2/spans) and OTLP/HTTP JSON (.../v1/traces).
    zipkin: str | None = None
    otlp: str | None = None

    @model_validator(mode="after")
    def _urls(self) -> Tracing:
        for key in ("zipkin", "otlp"):
            url = getattr(self, key)
            problem = None if url is None else collector_problem(url)
            if problem is not None:
                raise ValueError(f"tracing.{key}: {problem}")
        return self


class SidecarConfig(_Model):
    version: int = Field(ge=0)
    mesh: str
    node: str
    service: str | None = None
    subset: str | None = None
    # The pod's workload identity (spiffe://cluster.local/ns/<mesh>/sa/<service>): what its
    # certificate must name. None: the mesh uses no TLS.
    spiffe_id: str | None = None
    admin: Admin = Admin()
    listeners: tuple[Listener, ...] = ()
    virtual_hosts: tuple[VirtualHost, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    limits: Limits = Limits()
    # "stdout", "off", or a file path.
    access_log: str = "stdout"
    # Traffic capture (Docker): each service's virtual address (a ClusterIP), written into
    # `hosts_file` (the pod's /etc/hosts, shared by its containers) on every config so that
    # every service name resolves in the pod, services added by a reload included.
    service_addresses: dict[str, str] = Field(default_factory=dict)
    hosts_file: str | None = None
    # Set: the pod's service declares `calls:` and this config holds only those services'
    # routes; None: every service of the mesh is routed.
    egress: Egress | None = None
    # Off unless the control plane says (mesh.yaml's `tracing:` is on by default; plan.py).
    tracing: Tracing = Tracing()

    @model_validator(mode="after")
    def _references(self) -> SidecarConfig:
        problems = reference_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def content_hash(self) -> str:
        """Hash of everything but the version, so an unchanged config keeps its hash.

        Of pydantic's own JSON, whose order is the fields' (and the renderer's for the one
        mapping): a third of the time of a sorted `json.dumps`, which counted at 40 pods."""
        raw = self.model_dump_json(exclude={"version"}).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    def cluster(self, name: str) -> Cluster | None:
        for c in self.clusters:
            if c.name == name:
                return c
        return None


def reference_problems(cfg: SidecarConfig) -> list[str]:
    clusters = {c.name for c in cfg.clusters}
    vhosts = {v.name for v in cfg.virtual_hosts}
    problems: list[str] = []
    for name, count in _dupes([c.name for c in cfg.clusters]):
        problems.append(f"cluster {name!r} defined {count} times")
    for name, count in _dupes([v.name for v in cfg.virtual_hosts]):
        problems.append(f"virtual host {name!r} defined {count} times")
    for name, count in _dupes([(lst.address, lst.port) for lst in cfg.listeners]):
        problems.append(f"listener address {name[0]}:{name[1]} used {count} times")
    for v in cfg.virtual_hosts:
        for r in v.routes:
            for wc in r.clusters:
                if wc.cluster not in clusters:
                    problems.append(
                        f"virtual_hosts.{v.name}.routes.{r.name}: unknown cluster {wc.cluster!r}"
                    )
    for lst in cfg.listeners:
        if lst.kind == "inbound" and (lst.cluster is None or lst.cluster not in clusters):
            problems.append(f"listeners.{lst.name}: inbound needs a known cluster")
        tcp = lst.tcp_proxy
        if tcp is not None:
            if lst.kind == "ingress":
                problems.append(f"listeners.{lst.name}: the ingress routes HTTP, not tcp_proxy")
            for wc in tcp.clusters:
                if wc.cluster not in clusters:
                    problems.append(
                        f"listeners.{lst.name}.tcp_proxy: unknown cluster {wc.cluster!r}"
                    )
            if lst.kind == "inbound" and [wc.cluster for wc in tcp.clusters] != [lst.cluster]:
                problems.append(
                    f"listeners.{lst.name}.tcp_proxy: an inbound relays to its own cluster only"
                )
        if lst.use_original_dst and (not lst.bind_to_port or lst.tcp_proxy is not None):
            problems.append(f"listeners.{lst.name}: use_original_dst needs a bound HTTP listener")
        if lst.kind != "inbound" and (lst.mtls != "DISABLE" or lst.authorization):
            problems.append(f"listeners.{lst.name}: mtls and authorization are inbound only")
        if not lst.bind_to_port and lst.kind != "outbound":
            problems.append(f"listeners.{lst.name}: only outbound listeners may skip binding")
        for ir in lst.routes:
            if ir.virtual_host not in vhosts:
                problems.append(
                    f"listeners.{lst.name}.routes.{ir.name}: "
                    f"unknown virtual host {ir.virtual_host!r}"
                )
    for c in cfg.clusters:
        if c.lb == "ring_hash" and not c.hash_header:
            problems.append(f"clusters.{c.name}: ring_hash needs hash_header")
    return problems


def _dupes(items: list[Any]) -> list[tuple[Any, int]]:
    seen: dict[Any, int] = {}
    for it in items:
        seen[it] = seen.get(it, 0) + 1
    return [(k, n) for k, n in seen.items() if n > 1]


def parse_config(data: object) -> SidecarConfig:
    """Validate a decoded JSON document; raises ConfigRejected listing every reason."""
    try:
        return SidecarConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigRejected(
            [
                f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
        ) from None


def parse_config_json(body: bytes) -> SidecarConfig:
    """`parse_config` of a JSON body, decoded by pydantic itself (faster than json.loads and
    a validation of the objects); raises ConfigRejected listing every reason, a body that is
    no JSON included."""
    try:
        return SidecarConfig.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise ConfigRejected([f"body is not JSON: {errors[0]['msg']}"]) from None
        raise ConfigRejected(
            [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in errors]
        ) from None


class ConfigRejected(ValueError):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
