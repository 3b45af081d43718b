"""The mesh model: mesh.yaml, typed and immutable.

Field docs name the Envoy/Istio concept each field borrows and its default; `meshdev schema`
publishes them to editors. Cross-field rules (unknown services, weights, regexes, ports) live
in `semantics.py`, so this file stays a plain description of the shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WrapSerializer

from meshdev.common import envoy_defaults as envoy
from meshdev.common.envoy_names import LbPolicy, RetryOn, ServiceProtocol
from meshdev.common.sidecar_config import AuthzAction, MtlsMode
from meshdev.config.durations import Duration

# Names become DNS names, container names and stat-name segments, so keep them to DNS labels.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
# A request path (and query) as it goes on the request line.
URL_PATH_PATTERN = r"^/\S*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

V = TypeVar("V")

# The ingress gateway's service account: its SPIFFE ID is .../sa/ingress, so authorization
# names it among the services (`from: {services: [ingress]}`).
INGRESS_IDENTITY = "ingress"
# Istio's defaults: workload certificates live 24h (rotated at half their life).
CERT_TTL = 24 * 3600.0
# A certificate shorter-lived than this would be rotated every few seconds; longer than a
# year, a leaked key would stay good for longer than anyone remembers it.
MIN_CERT_TTL = 10.0
MAX_CERT_TTL = 365 * 24 * 3600.0


def _freeze(value: Mapping[str, V]) -> Mapping[str, V]:
    return MappingProxyType(dict(value))


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


def _number_to_text(value: object) -> object:
    # `VERSION: 2` or `exact: 1` in YAML are numbers; as env values and header values they
    # can only mean text, so accept them as such (booleans stay an error: yes/on surprise).
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_number_to_text)]

# A mapping validated as a dict and then made read-only.
FrozenMap = Annotated[
    Mapping[str, V], AfterValidator(_freeze), WrapSerializer(lambda v, nxt: nxt(dict(v)))
]
# The same, keyed by names that become DNS names (services, versions).
NamedMap = Annotated[
    Mapping[Name, V], AfterValidator(_freeze), WrapSerializer(lambda v, nxt: nxt(dict(v)))
]


def env_prefix(service: str) -> str:
    """Kubernetes' service environment variables' prefix: `my-db` -> `MY_DB` (as in
    `MY_DB_SERVICE_HOST`), how apps find a tcp service."""
    return service.upper().replace("-", "_")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HeaderMatch(_Model):
    """One header condition (Istio's StringMatch); give exactly one kind."""

    exact: Text | None = Field(default=None, description="The value equals this.")
    prefix: Text | None = Field(default=None, description="The value starts with this.")
    regex: str | None = Field(default=None, description="The whole value matches (RE2-like).")
    present: bool | None = Field(default=None, description="The header is (not) sent at all.")


class Match(_Model):
    """Which requests a route takes (Envoy's RouteMatch). Empty matches every request."""

    prefix: str | None = Field(
        default=None, description="Path starts with this (the query string included, as Envoy's)."
    )
    path: str | None = Field(
        default=None, description="Path equals this exactly (without the query string)."
    )
    regex: str | None = Field(
        default=None, description="The whole path (without the query string) matches this regex."
    )
    method: str | tuple[str, ...] | None = Field(
        default=None, description="One HTTP method or a list of them."
    )
    headers: FrozenMap[HeaderMatch] = Field(
        default_factory=_empty, description="Header name -> condition; all must hold."
    )


class Retries(_Model):
    """Envoy's retry policy. The route's timeout covers every try."""

    attempts: int = Field(
        default=envoy.NUM_RETRIES,
        ge=0,
        description="Retries after the first try (Envoy's num_retries, default 1).",
    )
    retry_on: tuple[RetryOn, ...] = Field(
        default=("5xx", "reset", "connect-failure"),
        description="Envoy's retry_on conditions. Envoy has no default; meshdev's is "
        "5xx, reset, connect-failure.",
    )
    retriable_status_codes: tuple[Annotated[int, Field(ge=100, le=599)], ...] = Field(
        default=(), description="Codes retried when retry_on has retriable-status-codes."
    )
    per_try_timeout: Duration | None = Field(
        default=None, description="Timeout of each try (Envoy: none, the route timeout applies)."
    )


class Abort(_Model):
    percent: float = Field(ge=0, le=100, description="Share of requests aborted, 0-100.")
    status: int | None = Field(
        default=None,
        ge=200,
        le=599,
        description="HTTP status answered instead (503 when only grpc_status is given).",
    )
    grpc_status: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description="gRPC status a gRPC caller gets instead (HTTP 200, trailers-only), as "
        "Envoy's grpc_status abort; e.g. 14 UNAVAILABLE.",
    )


class Delay(_Model):
    percent: float = Field(ge=0, le=100, description="Share of requests delayed, 0-100.")
    fixed: Duration = Field(description="Delay added before the request is forwarded.")


class Fault(_Model):
    """Envoy's HTTP fault filter: abort and/or delay a share of requests."""

    abort: Abort | None = None
    delay: Delay | None = None


class RateLimit(_Model):
    """Envoy's local rate limit: a token bucket; over the limit -> 429."""

    requests_per_second: float = Field(gt=0, description="Refill rate of the bucket.")
    burst: int | None = Field(
        default=None, ge=1, description="Bucket size (default: requests_per_second, at least 1)."
    )


class Route(_Model):
    """One route of a destination (an Istio VirtualService http route). First match wins."""

    name: Name | None = Field(
        default=None, description="Stat name segment (vhost.<svc>.route.<name>); default r<N>."
    )
    match: Match = Field(default_factory=Match)
    to: str | FrozenMap[Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="A service, a subset (backend.v1), or weights "
        "{backend.v1: 90, backend.v2: 10}; default: the destination service itself.",
    )
    timeout: Duration = Field(
        default=envoy.ROUTE_TIMEOUT, description="Covers all tries; Envoy default 15s."
    )
    retries: Retries | None = None
    fault: Fault | None = None
    rate_limit: RateLimit | None = None


class CircuitBreaker(_Model):
    """Envoy's circuit-breaker thresholds (defaults are Envoy's)."""

    max_connections: int = Field(default=envoy.MAX_CONNECTIONS, ge=1)
    max_pending_requests: int = Field(default=envoy.MAX_PENDING_REQUESTS, ge=0)
    max_requests: int = Field(default=envoy.MAX_REQUESTS, ge=1)
    max_retries: int = Field(default=envoy.MAX_RETRIES, ge=0)


class OutlierDetection(_Model):
    """Envoy's outlier detection on consecutive 5xx (defaults are Envoy's)."""

    consecutive_5xx: int = Field(default=envoy.CONSECUTIVE_5XX, ge=1)
    interval: Duration = Field(default=envoy.OUTLIER_INTERVAL, gt=0)
    base_ejection_time: Duration = Field(
        default=envoy.BASE_EJECTION_TIME,
        gt=0,
        description="Multiplied by how often the host was ejected.",
    )
    max_ejection_percent: float = Field(
        default=envoy.MAX_EJECTION_PERCENT,
        ge=0,
        le=100,
        description="At least one host may always be ejected.",
    )


class Policy(_Model):
    """Traffic policy of a destination (an Istio DestinationRule)."""

    lb: LbPolicy = Field(default="round_robin", description="Envoy default: round_robin.")
    hash_header: str | None = Field(default=None, description="ring_hash hashes this header.")
    connect_timeout: Duration = Field(
        default=envoy.CONNECT_TIMEOUT, gt=0, description="Envoy default 5s."
    )
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    outlier_detection: OutlierDetection | None = None
    idle_timeout: Duration | None = Field(
        default=None,
        ge=0,
        description="A connection with no bytes either way for this long is closed; 0s "
        "disables it. For a tcp service Envoy's tcp_proxy idle_timeout (Istio's "
        "connectionPool.tcp.idleTimeout; default 1h); for an http service its upgraded "
        "(WebSocket) connections, Envoy's stream_idle_timeout (default 300s), on the callers' "
        "sidecars and its own.",
    )
    mtls: MtlsMode | None = Field(
        default=None,
        description="Mutual TLS on this service's inbound hop (Istio's PeerAuthentication for "
        "its workloads): STRICT takes mTLS only, PERMISSIVE mTLS and plaintext, DISABLE "
        "plaintext only. Default: security.mtls. Callers send mTLS to a STRICT or PERMISSIVE "
        "service (Istio's auto mTLS). Needs a security section.",
    )
    include_attempt_count: bool = Field(
        default=False,
        description="Answers from this service carry x-envoy-attempt-count: the tries the "
        "sidecar (or gateway) calling it made, retries included, as Envoy's virtual host "
        "include_attempt_count_in_response. Default false, as in Envoy.",
    )


class Version(_Model):
    """A subset of a service (Istio: a DestinationRule subset), with its own pods."""

    replicas: int = Field(default=1, ge=0)
    env: FrozenMap[Text] = Field(default_factory=_empty)
    build: str | None = Field(default=None, description="Overrides the service's build folder.")
    image: str | None = Field(default=None, description="Overrides the service's image.")
    command: str | tuple[str, ...] | None = Field(default=None, description="Overrides command.")


class Service(_Model):
    build: str | None = Field(
        default=None, description="A folder with a Dockerfile, relative to mesh.yaml."
    )
    image: str | None = Field(default=None, description="An image to run instead of a build.")
    command: str | tuple[str, ...] | None = Field(
        default=None,
        description="Runs in the build folder with PORT and HOST set to where to listen.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="The app's port in its pod.")
    protocol: ServiceProtocol = Field(
        default="http",
        description="What the app speaks (Istio's port protocol): http, http2 and grpc are "
        "routed per request (http2 and grpc reach the app over h2c, with gRPC's semantics for "
        "grpc-status, retries and timeouts); tcp is relayed per connection (Envoy's "
        "tcp_proxy), and other pods reach it at $<NAME>_SERVICE_HOST:$<NAME>_SERVICE_PORT.",
    )
    replicas: int | None = Field(
        default=None, ge=0, description="Pods (default 1; with versions, their sum)."
    )
    env: FrozenMap[Text] = Field(default_factory=_empty)
    health_path: str | None = Field(
        default=None, description="HTTP path answering 2xx when ready; none = port accepts."
    )
    liveness_path: str | None = Field(
        default=None,
        description="HTTP path asked every 2 s while the pod runs (a Kubernetes liveness "
        "probe): 3 failures in a row restart the pod.",
    )
    ready_timeout: Duration | None = Field(
        default=None,
        gt=0,
        description="How long each of its pods may take to get ready (its app answering, "
        "health_path 2xx) before `up` or the save starting it fails, naming the pod: a slow "
        "starter's (a JVM's) warm-up. Default 60s.",
    )
    versions: NamedMap[Version] = Field(
        default_factory=_empty, description="Subsets (e.g. v1, v2) with their own replicas and env."
    )
    calls: tuple[str, ...] | None = Field(
        default=None,
        description="The services this service's app calls (the hosts of Istio's Sidecar "
        "resource, egress): its sidecar gets only their routes and clusters, so a save "
        "touching another service pushes nothing to it, and a call to a service not listed "
        "gets 404 with response flag NR and a log line saying why. Default: every service.",
    )
    watch: tuple[str, ...] = Field(
        default=(),
        description="Paths or globs of the app's code, relative to the service's folder (its "
        "build folder, else the mesh file's): a save that changes one rolls the service, one "
        "pod at a time (a build service's image is rebuilt first). `*.py` is that folder's, "
        "`**/*.py` every folder's below it, a folder everything in it. As compose's "
        "develop.watch and Tilt; meshdev only.",
    )
    excluded_ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = Field(
        default=(),
        description="Ports the Docker runtime's traffic capture leaves alone, both ways (Istio's "
        "excludeInboundPorts/excludeOutboundPorts): the app's connections to them, and "
        "connections to them arriving at the pod, bypass the sidecar.",
    )

    def pod_count(self) -> int:
        if self.versions:
            return sum(v.replicas for v in self.versions.values())
        return 1 if self.replicas is None else self.replicas


class IngressRoute(_Model):
    name: Name | None = None
    match: Match = Field(default_factory=Match)
    to: str = Field(description="The service this path goes to; its routes and policies apply.")


class PrometheusSettings(_Model):
    """A real Prometheus next to the mesh, scraping every sidecar (docs/observability.md)."""

    port: int = Field(default=9090, ge=1, le=65535, description="Served on 127.0.0.1 only.")
    scrape_interval: Duration = Field(
        default=5.0, ge=1, le=300, description="How often each sidecar is scraped."
    )
    image: str = Field(
        default="prom/prometheus:v2.53.0",
        description="The Docker runtime's Prometheus image (a mirror's copy behind a proxy); "
        "the process runtime runs the `prometheus` binary on PATH.",
    )


class Tracing(_Model):
    """Distributed tracing (docs/tracing.md): every sidecar and the gateway make spans as
    Envoy's Zipkin tracer does and keep the recent ones for `meshdev traces`; a collector is
    optional. On by default (sampling 100, no collector); `tracing: {sampling: 0}` turns it
    off."""

    sampling: float = Field(
        default=100.0,
        ge=0,
        le=100,
        description="Percent of new traces sampled at their first hop, 0-100 (a caller's "
        "sampled flag is honoured); 0 turns tracing off. Default 100: a dev environment "
        "wants every request.",
    )
    zipkin: str | None = Field(
        default=None,
        description="Zipkin v2 JSON collector to POST spans to, e.g. "
        "http://127.0.0.1:9411/api/v2/spans (Zipkin, Jaeger, otel-tui accept it).",
    )
    otlp: str | None = Field(
        default=None,
        description="OTLP/HTTP JSON collector to POST spans to, e.g. "
        "http://127.0.0.1:4318/v1/traces (an OpenTelemetry Collector, Jaeger, otel-tui).",
    )


class Ingress(_Model):
    port: int = Field(default=8000, ge=1, le=65535, description="Published on 127.0.0.1 only.")
    routes: tuple[IngressRoute, ...] = Field(min_length=1)
    load_path: str | None = Field(
        default=None,
        pattern=URL_PATH_PATTERN,
        description="Where the dashboard's load (l) and breaker trip (b) send their GETs "
        "through the gateway, e.g. /items. Default: the path of the first route a plain GET "
        "can take (gRPC services and header matches skipped), else /.",
    )


class Security(_Model):
    """The mesh's CA, workload identities and mutual TLS between sidecars (Istio's mesh-wide
    PeerAuthentication). Without this section the mesh uses no TLS at all; `security: {}`
    takes Istio's defaults."""

    mtls: MtlsMode = Field(
        default="PERMISSIVE",
        description="Mesh-wide mode of every service's inbound hop: STRICT (mTLS only), "
        "PERMISSIVE (mTLS and plaintext; Istio's default), DISABLE (plaintext only); "
        "policies.<service>.mtls overrides it.",
    )
    cert_ttl: Duration = Field(
        default=CERT_TTL,
        description="Life of each workload certificate, renewed at half of it (Istio: 24h, "
        "grace 0.5); from 10s to 8760h (a year).",
    )


class AuthzSource(_Model):
    """Who calls (Istio's AuthorizationPolicy `from.source`); every given field must match.
    `services` is shorthand for the principals of those services' workloads, and the two
    lists are one: a caller matches either."""

    services: tuple[str, ...] = Field(
        default=(), description="Calling services (`ingress`: the ingress gateway)."
    )
    not_services: tuple[str, ...] = Field(default=(), description="Any caller but these.")
    principals: tuple[str, ...] = Field(
        default=(),
        description="SPIFFE IDs without the scheme, cluster.local/ns/<mesh>/sa/<service>; "
        "exact, prefix*, *suffix or * (any verified caller).",
    )
    not_principals: tuple[str, ...] = Field(default=(), description="Any principal but these.")


class AuthzOperation(_Model):
    """What is asked (Istio's AuthorizationPolicy `to.operation`); every given field must
    match."""

    methods: tuple[str, ...] = Field(default=(), description="HTTP methods, exact (GET).")
    not_methods: tuple[str, ...] = Field(default=(), description="Any method but these.")
    paths: tuple[str, ...] = Field(
        default=(),
        description="Paths: exact (/items), prefix (/items*), suffix (*.png) or *; matched "
        "without the query string.",
    )
    not_paths: tuple[str, ...] = Field(default=(), description="Any path but these.")


class Authorization(_Model):
    """One authorization policy of a destination service (an Istio AuthorizationPolicy with
    one rule): it matches a request when both `from` and `to` do (a missing one matches every
    request). Any matching DENY denies; with no ALLOW policy the request is allowed, else it
    must match one; a denied request gets 403 `RBAC: access denied`."""

    # `from` is Python's keyword: the field is from_, the file and the schema say `from`.
    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True)

    name: Name = Field(
        description="Unique per service; a request a DENY policy refuses is logged as "
        "rbac_access_denied_matched_policy[<name>] (Envoy's response code details)."
    )
    action: AuthzAction = Field(default="ALLOW", description="ALLOW or DENY; Istio: ALLOW.")
    from_: AuthzSource | None = Field(default=None, alias="from")
    to: AuthzOperation | None = None


class Mesh(_Model):
    """A whole mesh.yaml."""

    name: Name = Field(description="Labels every container, network and process of the mesh.")
    base_image: str | None = Field(
        default=None,
        description="Base image of every image meshdev builds (default python:3.12-slim; "
        "env MESHDEV_BASE_IMAGE and --base-image override).",
    )
    services: NamedMap[Service] = Field(min_length=1)
    ingress: Ingress | None = None
    prometheus: PrometheusSettings | None = Field(
        default=None, description="Start a real Prometheus beside the mesh, scraping it."
    )
    tracing: Tracing = Field(
        default_factory=Tracing,
        description="Spans from every hop (W3C and B3 propagation), kept for `meshdev traces` "
        "and sent to Zipkin / OTLP collectors; on by default ({sampling: 0}: off).",
    )
    routes: FrozenMap[tuple[Route, ...]] = Field(
        default_factory=_empty, description="Per destination service, like an Istio VirtualService."
    )
    policies: FrozenMap[Policy] = Field(
        default_factory=_empty,
        description="Per destination service, like an Istio DestinationRule.",
    )
    security: Security | None = Field(
        default=None,
        description="Mutual TLS and workload identities; none: no TLS ({}: Istio's defaults).",
    )
    authorization: FrozenMap[tuple[Authorization, ...]] = Field(
        default_factory=_empty,
        description="Per destination service, like Istio's AuthorizationPolicy.",
    )

    def pod_count(self) -> int:
        return sum(s.pod_count() for s in self.services.values()) + (1 if self.ingress else 0)

    def mtls_mode(self, service: str) -> MtlsMode:
        """The mode of `service`'s inbound hop: its policy's, else the mesh's; DISABLE without
        a security section, where there is no CA and so no certificate to present."""
        if self.security is None:
            return "DISABLE"
        policy = self.policies.get(service)
        if policy is not None and policy.mtls is not None:
            return policy.mtls
        return self.security.mtls

    def route_count(self) -> int:
        own = sum(len(rs) for rs in self.routes.values())
        return own + (len(self.ingress.routes) if self.ingress else 0)
