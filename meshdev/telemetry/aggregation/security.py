"""Who calls whom, and how: the edges between services, and each pod's inbound security.

An edge is what a caller's sidecar counts on its clusters of one destination (a service and
its subsets: `backend`, `backend.v1`), summed over the caller service's pods:
- it exists once any of those clusters took a request (or, for a tcp one, a connection), or
  failed a TLS handshake, in the sidecar's life, so a quiet edge stays listed;
- its mode is the caller's config: a cluster with `tls` is called with mutual TLS (Istio's auto
  mTLS gives every cluster of a STRICT or PERMISSIVE destination one);
- requests per second are the clusters' `upstream_rq_total` (tries, retries included), and
  denials their `upstream_rq_403`: a request the destination's RBAC filter refuses comes back
  as 403 `RBAC: access denied`;
- TLS failures are the clusters' `ssl.connection_error`, `ssl.fail_verify_error` and
  `ssl.fail_verify_san` (the names of sidecar/tls/stats.py, which are Envoy's).

A pod's own side is its inbound listener's: Envoy's RBAC filter's `http.<listener>.rbac.allowed`
/ `.denied` (made only where the listener has policies, so absent means none), the TLS
transport's `listener.<address>_<port>.ssl.*` (made at the first TLS connection), and
`no_filter_chain_match`, a plaintext connection a STRICT listener refused. Its certificate comes
from GET /certs (certs.py), which telemetry/io asks for now and then, not per interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshdev.common.sidecar_config import INBOUND_PORT
from meshdev.telemetry.aggregation.certs import CertInfo
from meshdev.telemetry.aggregation.sidecar_interval import SidecarInterval
from meshdev.telemetry.aggregation.tally import bump
from meshdev.telemetry.aggregation.topology import Topology
from meshdev.telemetry.aggregation.view import CertStatus, EdgeMode, EdgeStats, PodSecurity

CLUSTER_TLS_FAILURES = ("connection_error", "fail_verify_error", "fail_verify_san")
LISTENER_TLS_FAILURES = (*CLUSTER_TLS_FAILURES, "fail_verify_no_cert")
NO_FILTER_CHAIN_MATCH = "no_filter_chain_match"
# The inbound listener's name (its `http.<name>.` stats) where no config says otherwise.
DEFAULT_INBOUND = "inbound"
# Name caches are per cluster and listener of the configs seen: bounded, but reloads add up.
_MAX_CACHED = 4096


@dataclass(frozen=True, slots=True)
class _ClusterNames:
    rq_total: str
    rq_403: str
    cx_total: str
    handshake: str
    failures: tuple[tuple[str, str], ...]  # (kind, stat)


@dataclass(frozen=True, slots=True)
class _ListenerNames:
    handshake: str
    failures: tuple[tuple[str, str], ...]  # (kind, stat), no_filter_chain_match included


# How a sidecar calls a destination, in bits: an edge's callers may disagree.
_MTLS, _PLAINTEXT, _UNKNOWN = 1, 2, 4


@dataclass(frozen=True, slots=True)
class _Call:
    """One cluster a sidecar calls, as a view reads it: where its numbers are and what edge
    they go to."""

    destination: str
    total: str  # requests, or a tcp cluster's connections
    rq_403: str
    failures: tuple[tuple[str, str], ...]
    mode: int
    tcp: bool
    # The failures' stat names alone: most calls a big mesh's sidecar knows it never makes,
    # and each view asks all of them whether it did.
    failure_stats: tuple[str, ...] = ()


class SecurityNames:
    """The stat names a view reads per cluster and per inbound listener, made once each (a
    view reads them for every sidecar, four times a second), and each sidecar's calls, made
    again only when its config or its set of stat names changes."""

    def __init__(self) -> None:
        self._clusters: dict[str, _ClusterNames] = {}
        self._listeners: dict[str, _ListenerNames] = {}
        # node -> (topology, clusters, calls): valid while both are the very same objects
        # (the aggregator's stat index keeps its tuple of clusters until names change).
        self._calls: dict[str, tuple[Topology | None, tuple[str, ...], tuple[_Call, ...]]] = {}
        # A sidecar whose config we could not read (a real Envoy): where its inbound
        # listener's TLS stats are, found by name, per set of names (node, count).
        self._found: dict[str, tuple[int, str | None]] = {}

    def cluster(self, name: str) -> _ClusterNames:
        names = self._clusters.get(name)
        if names is None:
            if len(self._clusters) > _MAX_CACHED:
                self._clusters.clear()
            p = f"cluster.{name}."
            names = self._clusters[name] = _ClusterNames(
                p + "upstream_rq_total",
                p + "upstream_rq_403",
                p + "upstream_cx_total",
                p + "ssl.handshake",
                tuple((k, f"{p}ssl.{k}") for k in CLUSTER_TLS_FAILURES),
            )
        return names

    def listener(self, prefix: str) -> _ListenerNames:
        names = self._listeners.get(prefix)
        if names is None:
            if len(self._listeners) > _MAX_CACHED:
                self._listeners.clear()
            names = self._listeners[prefix] = _ListenerNames(
                prefix + "ssl.handshake",
                (
                    *((k, f"{prefix}ssl.{k}") for k in LISTENER_TLS_FAILURES),
                    (NO_FILTER_CHAIN_MATCH, prefix + NO_FILTER_CHAIN_MATCH),
                ),
            )
        return names

    def calls(
        self,
        node: str,
        topology: Topology | None,
        clusters: tuple[str, ...],
        counters: Mapping[str, int],
    ) -> tuple[_Call, ...]:
        cached = self._calls.get(node)
        if cached is not None and cached[0] is topology and cached[1] is clusters:
            return cached[2]
        calls = []
        for cluster in clusters:
            if topology is not None and cluster not in topology.clusters:
                continue  # Istio's PassthroughCluster, say: no service of the mesh
            n = self.cluster(cluster)
            if topology is not None:
                tcp = cluster in topology.tcp_clusters
                mode = _MTLS if cluster in topology.tls_clusters else _PLAINTEXT
            else:
                tcp = n.rq_total not in counters and n.cx_total in counters
                # A real Envoy's TLS stats say what its config (not read) would.
                mode = _MTLS if n.handshake in counters else _UNKNOWN
            # Made with the cluster's first TLS connection (and the calls anew, as the set of
            # names changed): a plaintext cluster has none to read.
            failures = n.failures if n.handshake in counters else ()
            calls.append(
                _Call(
                    # Service names are DNS labels: a subset's cluster is `<service>.<subset>`.
                    cluster.split(".", 1)[0],
                    n.cx_total if tcp else n.rq_total,
                    n.rq_403,
                    failures,
                    mode,
                    tcp,
                    tuple(stat for _, stat in failures),
                )
            )
        if len(self._calls) > _MAX_CACHED:
            self._calls.clear()
        self._calls[node] = (topology, clusters, tuple(calls))
        return self._calls[node][2]

    def inbound_prefix(self, node: str, counters: Mapping[str, int]) -> str | None:
        """The `listener.<address>_15006.` whose TLS stats this sidecar has, if any."""
        found = self._found.get(node)
        if found is not None and found[0] == len(counters):
            return found[1]
        prefix = None
        for tail in ("ssl.handshake", NO_FILTER_CHAIN_MATCH):
            end = f"_{INBOUND_PORT}.{tail}"
            prefix = next(
                (
                    n[: -len(tail)]
                    for n in counters
                    if n.startswith("listener.") and n.endswith(end)
                ),
                None,
            )
            if prefix is not None:
                break
        self._found[node] = (len(counters), prefix)
        return prefix


class _Edge:
    __slots__ = ("denied", "failures", "modes", "rps", "tcp", "totals")

    def __init__(self) -> None:
        self.rps = 0.0
        self.denied = 0.0
        self.failures: dict[str, int] = {}
        self.totals: dict[str, int] = {}
        self.modes = 0
        self.tcp = False

    def mode(self) -> EdgeMode:
        known = self.modes & (_MTLS | _PLAINTEXT)
        if known == _MTLS:
            return "mtls"
        if known == _PLAINTEXT:
            return "plaintext"
        return "mixed" if known else "unknown"


class SecurityTally:
    """One view's edges and pods, filled sidecar by sidecar."""

    def __init__(self, names: SecurityNames) -> None:
        self._names = names
        self._edges: dict[tuple[str, str], _Edge] = {}
        self._pods: list[PodSecurity] = []

    def add(
        self,
        node: str,
        topology: Topology | None,
        snap: SidecarInterval | None,
        clusters: tuple[str, ...],
        cert: CertInfo | None,
        at: float,
    ) -> None:
        """One sidecar. `snap`: its interval, None when it has none to count (stale, or none
        yet); `clusters`: the clusters it calls (its own app's left out); `at`: the view's
        wall-clock time, which dates the certificate."""
        service = topology.service if topology is not None and topology.service else node
        inbound = topology.inbound if topology is not None else None
        pod = PodSecurity(
            node=node,
            service=service,
            mtls=inbound.mtls if inbound is not None else None,
            spiffe_id=topology.spiffe_id if topology is not None else None,
            cert=_cert_status(cert, at),
        )
        if snap is not None:
            inv = 1.0 / snap.interval_s if snap.interval_s > 0 else 0.0
            calls = self._names.calls(node, topology, clusters, snap.counters)
            self._add_edges(service, calls, snap, inv)
            pod = self._inbound(pod, topology, snap, inv)
        self._pods.append(pod)

    def _add_edges(
        self, source: str, calls: tuple[_Call, ...], snap: SidecarInterval, inv: float
    ) -> None:
        counters, deltas = snap.counters, snap.deltas
        edges = self._edges
        for call in calls:
            if counters.get(call.total, 0) <= 0 and not any(map(counters.get, call.failure_stats)):
                continue  # never called by this pod (a failed handshake was a call)
            key = (source, call.destination)
            edge = edges.get(key)
            if edge is None:
                edge = edges[key] = _Edge()
            edge.tcp = edge.tcp or call.tcp
            edge.modes |= call.mode
            for kind, stat in call.failures:
                total = counters.get(stat, 0)
                if total > 0:
                    bump(edge.totals, kind, total)
            if deltas:
                edge.rps += deltas.get(call.total, 0) * inv
                edge.denied += deltas.get(call.rq_403, 0) * inv
                for kind, stat in call.failures:
                    d = deltas.get(stat, 0)
                    if d > 0:
                        bump(edge.failures, kind, d)

    def _inbound(
        self, pod: PodSecurity, topology: Topology | None, snap: SidecarInterval, inv: float
    ) -> PodSecurity:
        counters, deltas = snap.counters, snap.deltas
        inbound = topology.inbound if topology is not None else None
        if topology is not None and inbound is None:
            return pod  # a gateway: no inbound listener, no policies of its own
        http = f"http.{inbound.name if inbound is not None else DEFAULT_INBOUND}.rbac."
        allowed, denied = http + "allowed", http + "denied"
        prefix: str | None = None
        if inbound is not None:
            prefix = next(
                (p for p in inbound.stat_prefixes if p + "ssl.handshake" in counters),
                inbound.stat_prefixes[0],
            )
        else:
            prefix = self._names.inbound_prefix(pod.node, counters)
        handshakes: float | None = None
        failures: dict[str, int] = {}
        totals: dict[str, int] = {}
        if prefix is not None:
            names = self._names.listener(prefix)
            if names.handshake in counters:
                handshakes = deltas.get(names.handshake, 0) * inv
            for kind, stat in names.failures:
                d = deltas.get(stat, 0)
                if d > 0:
                    failures[kind] = d
                total = counters.get(stat, 0)
                if total > 0:
                    totals[kind] = total
            _once(failures)
            _once(totals)
        return PodSecurity(
            node=pod.node,
            service=pod.service,
            mtls=pod.mtls,
            rbac_allowed_per_s=deltas.get(allowed, 0) * inv if allowed in counters else None,
            rbac_denied_per_s=deltas.get(denied, 0) * inv if denied in counters else None,
            handshakes_per_s=handshakes,
            tls_failures=failures,
            tls_failures_total=totals,
            spiffe_id=pod.spiffe_id,
            cert=pod.cert,
        )

    def edges(self) -> tuple[EdgeStats, ...]:
        return tuple(
            EdgeStats(
                source=source,
                destination=destination,
                mode=e.mode(),
                rps=e.rps,
                denied_per_s=e.denied,
                tls_failures=e.failures,
                tls_failures_total=e.totals,
                tcp=e.tcp,
            )
            for (source, destination), e in sorted(self._edges.items())
        )

    def pods(self) -> tuple[PodSecurity, ...]:
        return tuple(self._pods)


def _once(failures: dict[str, int]) -> None:
    """meshdev's STRICT listener counts a plaintext connection it refuses as both Envoy's
    TLS-only listener (connection_error) and Istio's (no filter chain matched) would: one
    refusal, shown once, as what it is."""
    plaintext = failures.get(NO_FILTER_CHAIN_MATCH, 0)
    if plaintext and "connection_error" in failures:
        left = failures["connection_error"] - plaintext
        if left > 0:
            failures["connection_error"] = left
        else:
            del failures["connection_error"]


def _cert_status(cert: CertInfo | None, at: float) -> CertStatus | None:
    if cert is None:
        return None
    lifetime = cert.expires_at - cert.valid_from if cert.valid_from is not None else None
    return CertStatus(
        spiffe_id=cert.spiffe_id,
        expires_in_s=cert.expires_at - at,
        lifetime_s=lifetime if lifetime is not None and lifetime > 0 else None,
    )
