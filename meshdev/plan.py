"""Desired state, computed purely: the pods a mesh wants and each sidecar's rendered config.

Nothing here does I/O: the runtime says where pods are (`Placement`), the caller hands in the
template's defaults, and `render` returns the exact config each sidecar must serve. Service
discovery is just this: endpoints are rendered from the placements the control plane passes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from meshdev.common import envoy_defaults as envoy
from meshdev.common import sidecar_config as sc
from meshdev.common import workload_certs as wc
from meshdev.common.envoy_names import HTTP2_PROTOCOLS, ServiceProtocol
from meshdev.config.model import (
    INGRESS_IDENTITY,
    Authorization,
    AuthzOperation,
    AuthzSource,
    Match,
    Mesh,
    Policy,
    Route,
    Service,
    env_prefix,
)

INGRESS_POD = "ingress"
# A captured pod's hosts file, which Docker shares among the pod's containers.
HOSTS_FILE = "/etc/hosts"


@dataclass(frozen=True, slots=True)
class PodSpec:
    """One pod the mesh wants: what to run and how it is known."""

    name: str
    service: str  # "" for the ingress gateway
    subset: str | None
    index: int
    port: int  # the app's port; for the gateway, its published listener port
    env: Mapping[str, str] = field(default_factory=dict)
    build: str | None = None
    image: str | None = None
    command: str | tuple[str, ...] | None = None
    health_path: str | None = None
    protocol: ServiceProtocol = "http"
    # The tcp services this pod's app reaches through its sidecar, as (name, port): every tcp
    # service but its own (whose port its app holds). Part of the spec because the app learns
    # them from its environment, which only a restart changes.
    tcp_services: tuple[tuple[str, int], ...] = ()
    # Ports the Docker runtime's traffic capture leaves alone (mesh.yaml's excluded_ports).
    excluded_ports: tuple[int, ...] = ()
    # Asked while the pod runs; failing 3 times in a row restarts it (control.py).
    liveness_path: str | None = None

    @property
    def is_ingress(self) -> bool:
        return self.name == INGRESS_POD


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a pod's sidecar is, as the runtime reports it."""

    pod: str
    address: str  # how other pods reach its inbound listener
    listen: str  # where its mesh-facing listeners and admin bind (0.0.0.0 in a container)
    local: str  # the address its app and outbound listener share inside the pod
    public: str = "127.0.0.1"  # the gateway's listener (published on the host's loopback)
    # The pod's TCP is captured (Docker): its app reaches services at their virtual addresses
    # and needs no HTTP_PROXY.
    captured: bool = False
    # The host as the pod reaches it, where the pod's loopback is not the host's (Docker: the
    # mesh network's gateway); None where it is (the process runtime).
    host_address: str | None = None


# Where services' virtual addresses (Kubernetes' ClusterIPs) come from: RFC 2544's benchmarking
# range, which no real network routes, so an address never hides a real destination.
VIRTUAL_NETWORK = ipaddress.IPv4Network("198.18.0.0/16")


def virtual_addresses(names: Iterable[str]) -> dict[str, str]:
    """A stable virtual address per service: from a hash of its name, so adding or removing a
    service moves no other (but on a collision, which the next free address settles in name
    order)."""
    size = VIRTUAL_NETWORK.num_addresses - 2  # neither the network nor the broadcast address
    taken: set[int] = set()
    out: dict[str, str] = {}
    for name in sorted(names):
        offset = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") % size
        while offset in taken:
            offset = (offset + 1) % size
        taken.add(offset)
        out[name] = str(VIRTUAL_NETWORK.network_address + 1 + offset)
    return out


def service_hosts(mesh: Mesh) -> dict[str, str]:
    """The names a captured pod resolves (each service, also as <service>.<mesh>) and their
    virtual addresses."""
    out: dict[str, str] = {}
    for name, address in virtual_addresses(mesh.services).items():
        out[name] = address
        out[f"{name}.{mesh.name}"] = address
    return out


def pods(mesh: Mesh) -> list[PodSpec]:
    out: list[PodSpec] = []
    if mesh.ingress is not None:
        out.append(PodSpec(INGRESS_POD, "", None, 0, mesh.ingress.port))
    for name, svc in mesh.services.items():
        out += _service_pods(name, svc, tcp_destinations(mesh, name))
    return out


def tcp_destinations(mesh: Mesh, service: str) -> tuple[tuple[str, int], ...]:
    """The tcp services a pod of `service` reaches, with their ports (see PodSpec): those
    in its `calls:` when it has one."""
    calls = mesh.services[service].calls
    return tuple(
        (name, svc.port)
        for name, svc in mesh.services.items()
        if svc.protocol == "tcp" and name != service and (calls is None or name in calls)
    )


def _service_pods(name: str, svc: Service, tcp: tuple[tuple[str, int], ...]) -> list[PodSpec]:
    base = dict(svc.env)
    if not svc.versions:
        return [
            PodSpec(
                f"{name}-{i}",
                name,
                None,
                i,
                svc.port,
                base,
                svc.build,
                svc.image,
                svc.command,
                svc.health_path,
                svc.protocol,
                tcp,
                svc.excluded_ports,
                svc.liveness_path,
            )
            for i in range(svc.pod_count())
        ]
    out = []
    for vname, ver in svc.versions.items():
        env = {**base, "VERSION": vname, **dict(ver.env)}
        for i in range(ver.replicas):
            out.append(
                PodSpec(
                    f"{name}-{vname}-{i}",
                    name,
                    vname,
                    i,
                    svc.port,
                    env,
                    ver.build or (None if ver.image else svc.build),
                    ver.image or (None if ver.build else svc.image),
                    ver.command or svc.command,
                    svc.health_path,
                    svc.protocol,
                    tcp,
                    svc.excluded_ports,
                    svc.liveness_path,
                )
            )
    return out


def app_env(pod: PodSpec, placement: Placement) -> dict[str, str]:
    """The app's environment: where to listen (the contract of `command`) and who it is; where
    its traffic is not captured, also its sidecar's outbound listener as HTTP proxy, so
    `http://backend/...` goes through the mesh.

    Each tcp service is where the app reaches it (Kubernetes' service variables,
    `REDIS_SERVICE_HOST` / `REDIS_SERVICE_PORT`): by name where traffic is captured, else where
    its sidecar relays it; as in Kubernetes the service's own env may override them."""
    env = {"SERVICE": pod.service, "POD": pod.name}
    if pod.subset:
        env["VERSION"] = pod.subset
    for name, port in pod.tcp_services:
        env[f"{env_prefix(name)}_SERVICE_HOST"] = name if placement.captured else placement.local
        env[f"{env_prefix(name)}_SERVICE_PORT"] = str(port)
    env.update(pod.env)
    env.update({"HOST": placement.local, "PORT": str(pod.port)})
    if not placement.captured:
        proxy = f"http://{placement.local}:{sc.OUTBOUND_PORT}"
        env.update(
            {
                "HTTP_PROXY": proxy,
                "http_proxy": proxy,
                "NO_PROXY": f"localhost,127.0.0.1,{placement.local}",
                "no_proxy": f"localhost,127.0.0.1,{placement.local}",
            }
        )
    return env


def cert_ttl(mesh: Mesh) -> float | None:
    """How long the CA makes each workload certificate live, in seconds (renewed at half of
    it); None: the mesh uses no TLS, so no pod gets one."""
    return None if mesh.security is None else mesh.security.cert_ttl


def mtls_mode(mesh: Mesh, service: str) -> sc.MtlsMode:
    """`service`'s inbound mode (Istio's PeerAuthentication): its policy's, else the mesh's;
    DISABLE without a security section."""
    return mesh.mtls_mode(service)


def spiffe_id(mesh: Mesh, pod: PodSpec) -> str | None:
    """The identity `pod`'s certificate names (the gateway's service account is `ingress`);
    None: the mesh uses no TLS."""
    if mesh.security is None:
        return None
    return wc.spiffe_id(mesh.name, pod.service or INGRESS_IDENTITY)


def render(
    mesh: Mesh,
    pod: PodSpec,
    placement: Placement,
    endpoints: Sequence[tuple[PodSpec, Placement]],
    *,
    version: int,
    defaults: Mapping[str, Any],
) -> sc.SidecarConfig:
    """The config `pod`'s sidecar serves. `endpoints`: the pods that may receive traffic now
    (the control plane leaves out pods still starting and pods being drained). To render
    many pods' configs at once, use one `Renderer`."""
    return Renderer(mesh, endpoints, version=version, defaults=defaults).render(pod, placement)


def scope(mesh: Mesh, service: str) -> frozenset[str] | None:
    """The services a sidecar of `service` routes to (Istio's Sidecar egress hosts): those
    its `calls:` names, and those their routes send to (whose clusters its routes need);
    None: every service (no `calls:`, or the gateway, `service` "")."""
    svc = mesh.services.get(service)
    if svc is None or svc.calls is None:
        return None
    out = set(svc.calls)
    for dest in svc.calls:
        for route in mesh.routes.get(dest, ()):
            out.update(t.partition(".")[0] for t, _ in _targets(dest, route.to))
    return frozenset(out)


class Renderer:
    """Renders the configs of one push: what sidecars share (a destination's virtual host, a
    service's clusters) is built and validated once, not once per sidecar, which at 40 pods
    was most of a save's time."""

    def __init__(
        self,
        mesh: Mesh,
        endpoints: Sequence[tuple[PodSpec, Placement]],
        *,
        version: int,
        defaults: Mapping[str, Any],
    ) -> None:
        self.mesh = mesh
        self.version = version
        self.defaults = defaults
        self._members: dict[str, list[tuple[PodSpec, Placement]]] = {}
        # By pod name, not in the order pods happened to start: a config lists the same
        # endpoints the same way, so its content hash says whether it changed (control.py).
        for spec, where in sorted(endpoints, key=lambda e: e[0].name):
            self._members.setdefault(spec.service, []).append((spec, where))
        self._vhosts: dict[str, sc.VirtualHost] = {}
        self._clusters: dict[str, list[sc.Cluster]] = {}
        self._hosts: dict[str, str] | None = None

    def vhost(self, service: str) -> sc.VirtualHost:
        found = self._vhosts.get(service)
        if found is None:
            found = self._vhosts[service] = _virtual_host(self.mesh, service)
        return found

    def clusters(self, service: str) -> list[sc.Cluster]:
        """The service's cluster and one per version (subset)."""
        found = self._clusters.get(service)
        if found is None:
            found = self._clusters[service] = _service_clusters(
                self.mesh, service, self._members.get(service, [])
            )
        return found

    def service_hosts(self) -> dict[str, str]:
        if self._hosts is None:
            self._hosts = service_hosts(self.mesh)
        return self._hosts

    def render(self, pod: PodSpec, placement: Placement) -> sc.SidecarConfig:
        """The config `pod`'s sidecar serves."""
        mesh = self.mesh
        visible = scope(mesh, pod.service)
        listeners: list[sc.Listener] = []
        extra: dict[str, Any] = {}
        clusters = [
            c
            for name in mesh.services
            if visible is None or name in visible
            for c in self.clusters(name)
        ]
        if pod.is_ingress:
            assert mesh.ingress is not None
            listeners.append(
                sc.Listener(
                    name="ingress",
                    kind="ingress",
                    address=placement.public,
                    port=mesh.ingress.port,
                    routes=tuple(
                        sc.IngressRoute(
                            name=r.name or f"r{i}", match=_match(r.match), virtual_host=r.to
                        )
                        for i, r in enumerate(mesh.ingress.routes)
                    ),
                )
            )
        else:
            listeners += self._pod_listeners(pod, placement, clusters)
            if placement.captured:
                extra["service_addresses"] = self.service_hosts()
                extra["hosts_file"] = HOSTS_FILE
        # Not mesh.services[...]: a save that removes a service still pushes the new
        # endpoints to its pods while they drain, and their service is no longer in `mesh`.
        service = mesh.services.get(pod.service) if pod.service else None
        calls = service.calls if service is not None else None
        if calls is not None:
            extra["egress"] = sc.Egress(
                service=pod.service,
                calls=calls,
                hidden=tuple(name for name in mesh.services if name not in calls),
            )
        return sc.SidecarConfig.model_validate(
            {
                **self.defaults,
                "version": self.version,
                "mesh": mesh.name,
                "node": pod.name,
                "service": pod.service or None,
                "subset": pod.subset,
                "spiffe_id": spiffe_id(mesh, pod),
                "admin": sc.Admin(address=placement.listen, port=sc.ADMIN_PORT),
                "listeners": tuple(listeners),
                "virtual_hosts": tuple(
                    self.vhost(name)
                    for name, svc in mesh.services.items()
                    if svc.protocol != "tcp" and (calls is None or name in calls)
                ),
                "clusters": tuple(clusters),
                "tracing": tracing(mesh, placement),
                **extra,
            }
        )

    def _pod_listeners(
        self,
        pod: PodSpec,
        placement: Placement,
        clusters: list[sc.Cluster],
    ) -> list[sc.Listener]:
        """An app's pod: its inbound listener (and cluster, added to `clusters`), its outbound
        listener, one per tcp service it reaches, and where captured, the HTTP ports."""
        mesh = self.mesh
        inbound = f"inbound|{pod.port}"
        clusters.append(
            sc.Cluster(
                name=inbound,
                endpoints=(sc.Endpoint(address=placement.local, port=pod.port, pod=pod.name),),
                # The service's own policy holds on its inbound hop too, or an idle timeout
                # longer than the default would still end its WebSockets here.
                stream_idle_timeout=_stream_idle_timeout(mesh.policies.get(pod.service)),
                # The app speaks HTTP/2 (gRPC): the inbound hop calls it so too.
                http2=pod.protocol in HTTP2_PROTOCOLS,
            )
        )
        # One app port per pod, so the inbound listener speaks the service's protocol.
        own_tcp = None
        if pod.protocol == "tcp":
            own_tcp = sc.TcpProxy(
                stat_prefix=inbound,
                clusters=(sc.WeightedCluster(cluster=inbound, weight=1),),
                idle_timeout=_idle_timeout(mesh, pod.service),
            )
        listeners = [
            sc.Listener(
                name="inbound",
                kind="inbound",
                address=placement.listen,
                port=sc.INBOUND_PORT,
                cluster=inbound,
                tcp_proxy=own_tcp,
                mtls=mtls_mode(mesh, pod.service),
                authorization=_authorization(mesh, pod.service),
            ),
            sc.Listener(
                name="outbound",
                kind="outbound",
                address=placement.local,
                port=sc.OUTBOUND_PORT,
                use_original_dst=placement.captured,
            ),
        ]
        hosts = self.service_hosts() if placement.captured else {}
        listeners += [
            _tcp_outbound(mesh, dest, port, placement, hosts.get(dest))
            for dest, port in pod.tcp_services
        ]
        if placement.captured:
            listeners += _captured_http(mesh)
        return listeners


def tracing(mesh: Mesh, placement: Placement | None = None) -> sc.Tracing:
    """Every sidecar's tracing, the gateway's included: the mesh's, whose spans name the pod's
    service (the gateway's: `ingress`). A collector on the host's loopback (the URL a user
    writes for a Jaeger or Zipkin on their machine) is reached from a container through the
    host's address on the mesh network instead: there, 127.0.0.1 is the pod itself."""
    t = mesh.tracing
    host = placement.host_address if placement is not None else None
    return sc.Tracing(
        sampling=t.sampling, zipkin=_on_host(t.zipkin, host), otlp=_on_host(t.otlp, host)
    )


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _on_host(url: str | None, host: str | None) -> str | None:
    if url is None or host is None:
        return url
    parts = urlsplit(url)
    if parts.hostname not in _LOOPBACK_HOSTS:
        return url
    # The mesh file's URLs have no user part (config/semantics.py refuses one).
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _authorization(mesh: Mesh, service: str) -> tuple[sc.AuthzPolicy, ...]:
    return tuple(_authz_policy(mesh.name, a) for a in mesh.authorization.get(service, ()))


def _authz_policy(mesh: str, a: Authorization) -> sc.AuthzPolicy:
    """One mesh-file policy is one rule: `from` and `to` must both match, as in Istio's rule;
    one with neither matches every request (Istio's `rules: [{}]`)."""
    src = a.from_ or AuthzSource()
    op = a.to or AuthzOperation()
    # `services` is shorthand for its workloads' principals, one list with `principals`.
    rule = sc.AuthzRule(
        principals=(*(wc.principal(mesh, s) for s in src.services), *src.principals),
        not_principals=(
            *(wc.principal(mesh, s) for s in src.not_services),
            *src.not_principals,
        ),
        methods=op.methods,
        not_methods=op.not_methods,
        paths=op.paths,
        not_paths=op.not_paths,
    )
    return sc.AuthzPolicy(name=a.name, action=a.action, rules=(rule,))


def _captured_http(mesh: Mesh) -> list[sc.Listener]:
    """Where a captured pod's HTTP calls land: one listener per port that HTTP services are
    called on (80, and each one's own port), for every service address at once (Istio's
    0.0.0.0_<port>); the Host then picks the service, as through HTTP_PROXY. Also the ports
    of services outside the pod's `calls:`, so that a call to one is answered 404 NR saying
    why, not relayed as passthrough to an address that leads nowhere."""
    ports = {80} | {svc.port for svc in mesh.services.values() if svc.protocol != "tcp"}
    return [
        sc.Listener(
            name=f"0.0.0.0_{port}",
            kind="outbound",
            address="0.0.0.0",
            port=port,
            bind_to_port=False,
        )
        for port in sorted(ports)
    ]


def _tcp_outbound(
    mesh: Mesh, service: str, port: int, placement: Placement, captured_at: str | None
) -> sc.Listener:
    """The caller's side of a tcp service: where `<NAME>_SERVICE_HOST:PORT` points its app, a
    port of the pod's loopback; captured, the service's virtual address, with no socket (the
    outbound listener hands it the connections made there). Its one route (if given) only
    splits connections among subsets."""
    routes = mesh.routes.get(service)
    targets = _targets(service, routes[0].to if routes else None)
    return sc.Listener(
        name=f"outbound|{port}|{service}",
        kind="outbound",
        address=captured_at or placement.local,
        port=port,
        bind_to_port=captured_at is None,
        tcp_proxy=sc.TcpProxy(
            stat_prefix=service,
            clusters=tuple(sc.WeightedCluster(cluster=c, weight=w) for c, w in targets),
            idle_timeout=_idle_timeout(mesh, service),
        ),
    )


def _idle_timeout(mesh: Mesh, service: str) -> float:
    policy = mesh.policies.get(service)
    if policy is None or policy.idle_timeout is None:
        return envoy.TCP_IDLE_TIMEOUT
    return policy.idle_timeout


def _stream_idle_timeout(policy: Policy | None) -> float:
    """An http destination's `idle_timeout`: Envoy's stream_idle_timeout (its default 300 s
    where the tcp_proxy's is 1 h), what closes its quiet upgraded (WebSocket) connections."""
    if policy is None or policy.idle_timeout is None:
        return envoy.STREAM_IDLE_TIMEOUT
    return policy.idle_timeout


def _virtual_host(mesh: Mesh, service: str) -> sc.VirtualHost:
    routes = mesh.routes.get(service)
    converted: tuple[sc.Route, ...]
    if routes is None:
        # No routes given: everything goes to every pod of the service (Istio's default).
        converted = (
            sc.Route(name="default", clusters=(sc.WeightedCluster(cluster=service, weight=1),)),
        )
    else:
        converted = tuple(_route(service, i, r) for i, r in enumerate(routes))
    names = (service, f"{service}.{mesh.name}")
    # Called on port 80 (through HTTP_PROXY, or captured), or captured on the app's own port.
    ports = dict.fromkeys((80, mesh.services[service].port))
    domains = tuple(d for n in names for d in (n, *(f"{n}:{p}" for p in ports)))
    policy = mesh.policies.get(service)
    return sc.VirtualHost(
        name=service,
        domains=domains,
        routes=converted,
        include_attempt_count_in_response=policy is not None and policy.include_attempt_count,
    )


def _targets(service: str, to: str | Mapping[str, int] | None) -> Iterable[tuple[str, int]]:
    """A route's `to` as (cluster, weight): by default the destination service itself."""
    if to is None:
        return [(service, 1)]
    if isinstance(to, str):
        return [(to, 1)]
    return to.items()


def _route(service: str, index: int, r: Route) -> sc.Route:
    targets = _targets(service, r.to)
    retries = None
    if r.retries is not None:
        retries = sc.RetryPolicy(
            attempts=r.retries.attempts,
            retry_on=r.retries.retry_on,
            retriable_status_codes=r.retries.retriable_status_codes,
            per_try_timeout=r.retries.per_try_timeout,
        )
    fault = None
    if r.fault is not None:
        fault = sc.Fault(
            abort=sc.FaultAbort(
                status=r.fault.abort.status or 503,
                percent=r.fault.abort.percent,
                grpc_status=r.fault.abort.grpc_status,
            )
            if r.fault.abort
            else None,
            delay=sc.FaultDelay(fixed=r.fault.delay.fixed, percent=r.fault.delay.percent)
            if r.fault.delay
            else None,
        )
    rate = None
    if r.rate_limit is not None:
        rps = r.rate_limit.requests_per_second
        burst = r.rate_limit.burst or max(1, math.ceil(rps))
        rate = sc.RateLimit(requests_per_second=rps, burst=burst)
    return sc.Route(
        name=r.name or f"r{index}",
        match=_match(r.match),
        clusters=tuple(sc.WeightedCluster(cluster=c, weight=w) for c, w in targets),
        timeout=r.timeout,
        retries=retries,
        fault=fault,
        rate_limit=rate,
    )


def _match(m: Match) -> sc.RouteMatch:
    methods = (m.method,) if isinstance(m.method, str) else (m.method or ())
    return sc.RouteMatch(
        prefix=m.prefix,
        path=m.path,
        regex=m.regex,
        methods=tuple(methods),
        headers=tuple(
            sc.HeaderMatch(
                name=name, exact=h.exact, prefix=h.prefix, regex=h.regex, present=h.present
            )
            for name, h in m.headers.items()
        ),
    )


def _service_clusters(
    mesh: Mesh, name: str, members: Sequence[tuple[PodSpec, Placement]]
) -> list[sc.Cluster]:
    """`name`'s cluster and one per version (subset); `members`: its routable pods."""
    svc = mesh.services[name]
    policy = mesh.policies.get(name) or Policy()
    h2 = svc.protocol in HTTP2_PROTOCOLS
    # Istio's auto mTLS: a destination that takes mTLS (STRICT or PERMISSIVE) is called
    # with it, and only its own workloads' certificates are accepted.
    tls = None
    if mtls_mode(mesh, name) != "DISABLE":
        tls = sc.UpstreamTls(spiffe_ids=(wc.spiffe_id(mesh.name, name),))
    out = [_cluster(name, policy, members, h2, tls)]
    for vname in svc.versions:
        subset = [(s, p) for s, p in members if s.subset == vname]
        out.append(_cluster(f"{name}.{vname}", policy, subset, h2, tls))
    return out


def _cluster(
    name: str,
    policy: Policy,
    members: Sequence[tuple[PodSpec, Placement]],
    http2: bool,
    tls: sc.UpstreamTls | None,
) -> sc.Cluster:
    od = policy.outlier_detection
    cb = policy.circuit_breaker
    return sc.Cluster(
        name=name,
        endpoints=tuple(
            sc.Endpoint(address=p.address, port=sc.INBOUND_PORT, pod=p.pod) for _, p in members
        ),
        lb=policy.lb,
        hash_header=policy.hash_header,
        connect_timeout=policy.connect_timeout,
        stream_idle_timeout=_stream_idle_timeout(policy),
        http2=http2,
        tls=tls,
        circuit_breaker=sc.CircuitBreaker(
            max_connections=cb.max_connections,
            max_pending_requests=cb.max_pending_requests,
            max_requests=cb.max_requests,
            max_retries=cb.max_retries,
        ),
        outlier_detection=sc.OutlierDetection(
            consecutive_5xx=od.consecutive_5xx,
            interval=od.interval,
            base_ejection_time=od.base_ejection_time,
            max_ejection_percent=od.max_ejection_percent,
        )
        if od
        else None,
    )
