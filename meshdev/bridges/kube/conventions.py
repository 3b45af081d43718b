"""What the exporter writes and the importer reads the same way: names, labels, annotations,
ports, hosts, durations and status names, as Kubernetes and Istio spell them."""

from __future__ import annotations

import math
import re
from typing import Final

from meshdev.common.envoy_names import ServiceProtocol

# Istio's labels for a workload's service and subset (its telemetry and DestinationRule
# subsets read them), and the namespace label that asks Istio to inject sidecars.
APP: Final = "app"
VERSION: Final = "version"
INJECTION: Final = {"istio-injection": "enabled"}
# Kubernetes' recommended labels: who made an object and which application it belongs to.
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
PART_OF: Final = "app.kubernetes.io/part-of"

# What Kubernetes and Istio have no field for but a round trip must keep: the mesh's own
# name, build folders and meshdev-only knobs. Annotations, so a cluster ignores them.
ANNOTATION_PREFIX: Final = "meshdev.dev/"
MESH_ANNOTATION: Final = "meshdev.dev/mesh"
BASE_IMAGE_ANNOTATION: Final = "meshdev.dev/base-image"
BUILD_ANNOTATION: Final = "meshdev.dev/build"
INGRESS_PORT_ANNOTATION: Final = "meshdev.dev/ingress-port"
INGRESS_ROUTES_ANNOTATION: Final = "meshdev.dev/ingress-routes"
# Where the dashboard's load goes (ingress.load_path): a meshdev-only knob, kept for the trip.
LOAD_PATH_ANNOTATION: Final = "meshdev.dev/load-path"
CERT_TTL_ANNOTATION: Final = "meshdev.dev/cert-ttl"
# The collectors as the mesh file wrote them: the Telemetry names only a provider of the mesh
# config, where Istio keeps their addresses.
TRACING_ANNOTATION: Final = "meshdev.dev/tracing"

# How meshdev's control plane asks a liveness_path (control.py): every 2 s, 2 s to answer,
# restarting the pod after 3 failures in a row; Kubernetes' own defaults are 10 s, 1 s, 3.
LIVENESS_PERIOD_SECONDS: Final = 2
LIVENESS_TIMEOUT_SECONDS: Final = 2
LIVENESS_FAILURES: Final = 3

# meshdev's 429 says why as Envoy's global rate limit does; Envoy's local rate limit adds
# the header only when its config asks for it.
RATE_LIMITED_HEADERS: Final = (
    {
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        "header": {"key": "x-envoy-ratelimited", "value": "true"},
    },
)

# Istio's per-pod capture exclusions (istio-init reads them): meshdev's excluded_ports.
EXCLUDE_INBOUND: Final = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUTBOUND: Final = "traffic.sidecar.istio.io/excludeOutboundPorts"

# Istio's default ingress gateway (istioctl's `default` profile): its pods' label, its
# namespace, its identity, and the port its container listens on behind Service port 80.
GATEWAY_SELECTOR: Final = {"istio": "ingressgateway"}
GATEWAY_NAMESPACE: Final = "istio-system"
GATEWAY_SERVICE: Final = "istio-ingressgateway"
GATEWAY_PRINCIPAL: Final = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
GATEWAY_PORT: Final = 8080
# The Gateway and its VirtualService; a service of this name would collide with the latter.
INGRESS_NAME: Final = "ingress"
# Namespace-wide PeerAuthentication, as Istio's docs name it.
MESH_WIDE_PEER_AUTHENTICATION: Final = "default"
RATE_LIMIT_FILTER: Final = "envoy.filters.http.local_ratelimit"
RATE_LIMIT_TYPE: Final = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
RATE_LIMIT_NAME: Final = "local-ratelimit"

# A Sidecar's egress host that matches nothing: `~` is Istio's namespace of no service.
NO_HOSTS: Final = "~/*"

TRUST_DOMAIN: Final = "cluster.local"
# meshdev's apps call a service on port 80 (http://backend), or on its own port where
# traffic is captured: its Kubernetes Service offers both.
CALL_PORT: Final = 80
# Where meshdev's apps listen in their pod, as the Docker runtime's HOST.
LISTEN_HOST: Final = "0.0.0.0"
DEFAULT_BASE_IMAGE: Final = "python:3.12-slim"


# The codes Go's net/http names: Istio takes a status code in retryOn only if it is one.
KNOWN_STATUS_CODES: Final = frozenset(
    (
        *(100, 101, 102, 103, *range(200, 209), 226, *range(300, 309), *range(400, 419)),
        *(421, 422, 423, 424, 425, 426, 428, 429, 431, 451, *range(500, 509), 510, 511),
    )
)


def principal(namespace: str, account: str) -> str:
    """Istio's principal of a service account's workloads (a SPIFFE ID without its scheme)."""
    return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{account}"


def deployment_name(service: str, subset: str | None) -> str:
    return service if subset is None else f"{service}-{subset}"


def image_name(prefix: str, mesh: str, service: str, subset: str | None) -> str:
    """A built image's name: the Docker runtime's tag without its `meshdev-` (a registry's
    repository names the project), the subset's own only when it has its own build."""
    who = service if subset is None else f"{service}-{subset}"
    return f"{prefix}{mesh}-{who}:latest"


def port_name(protocol: ServiceProtocol, port: int) -> str:
    """Istio picks a port's protocol from its name's prefix (`<protocol>[-<suffix>]`)."""
    return f"{protocol}-{port}"


_PROTOCOLS: Final[dict[str, ServiceProtocol]] = {
    "http": "http",
    "http2": "http2",
    "grpc": "grpc",
    "tcp": "tcp",
    # Kubernetes' appProtocol for HTTP/2 over cleartext.
    "kubernetes.io/h2c": "http2",
}
# Istio's other protocols: relayed as bytes, as Istio does with TLS it does not terminate.
_RELAYED: Final = frozenset({"https", "tls", "mongo", "redis", "mysql"})


def port_protocol(name: str | None, app_protocol: str | None) -> tuple[ServiceProtocol, str]:
    """A Service port's protocol as Istio selects it (appProtocol, else the name up to its
    first `-`), and what meshdev could not keep of it ("" when nothing)."""
    word = (app_protocol or (name or "").split("-", 1)[0]).lower()
    if word in _PROTOCOLS:
        return _PROTOCOLS[word], ""
    if word in _RELAYED:
        return "tcp", f"Istio's protocol {word!r} is relayed as tcp"
    # Istio sniffs a port it cannot name; meshdev's apps speak HTTP.
    return "http", f"{word!r} names no protocol: Istio sniffs it; taken as http"


def service_of_host(host: str, namespace: str) -> str | None:
    """The short name of a host in `namespace` (`reviews`, `reviews.ns`, `reviews.ns.svc`,
    `reviews.ns.svc.cluster.local`), or None for a host elsewhere."""
    parts = host.split(".")
    if len(parts) == 1:
        return host
    tail = ".".join(parts[1:])
    suffixes = (namespace, f"{namespace}.svc", f"{namespace}.svc.{TRUST_DOMAIN}")
    return parts[0] if tail in suffixes else None


def fqdn(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.svc.{TRUST_DOMAIN}"


# -- durations ---------------------------------------------------------------------------

# Go's time.ParseDuration, which Istio's durations follow (`1h30m`, `1.5s`, `250ms`).
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_istio_duration(text: str) -> float | None:
    """Seconds from an Istio duration, or None if it is not one."""
    if text == "0":
        return 0.0
    if not _GO_DURATION.match(text):
        return None
    return sum(float(n) * _GO_UNITS[u] for n, u in _GO_PART.findall(text))


def whole_ms(seconds: float) -> int:
    # Half a millisecond up, as people round (round() would take 2.5 to 2).
    return math.floor(seconds * 1000 + 0.5)


def istio_duration(seconds: float) -> str:
    """Istio's spelling of a duration, to the millisecond (the precision Istio accepts): the
    largest unit that divides it, as people write them (`2s`, `300ms`, `1h`)."""
    ms = whole_ms(seconds)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def ms_exact(seconds: float) -> bool:
    """Whether a duration survives Istio's millisecond precision unchanged."""
    return abs(seconds * 1000 - whole_ms(seconds)) < 1e-6
