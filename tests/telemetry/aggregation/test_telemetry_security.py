"""Who calls whom: edges between services, their modes and rates, each pod's RBAC and TLS
figures, and certificates' expiry, from synthetic sidecars' real stream documents."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from meshdev.sidecar.stats.store import Store
from meshdev.sidecar.tls.stats import ClusterTlsStats, ListenerTlsStats
from meshdev.telemetry.aggregation.certs import CertInfo, from_envoy_certs
from meshdev.telemetry.aggregation.deferred_view import DeferredSecurityView
from meshdev.telemetry.aggregation.mesh import Aggregator, SidecarInput
from meshdev.telemetry.aggregation.statnames import STREAM_FILTER
from meshdev.telemetry.aggregation.topology import (
    InboundListener,
    Topology,
    from_config_dump,
)
from meshdev.telemetry.aggregation.view import EdgeStats, MeshView, PodSecurity
from meshdev.telemetry.io.stream_reader import StreamReader
from meshdev.testing.fake_source import FakeSource
from meshdev.testing.synthetic_sidecar import (
    SyntheticSidecar,
    certs_answer,
    sidecar_config,
    synthetic_spiffe_id,
)
from tests.telemetry.support import Clock

DT = 0.5
ROUTES = {
    "backend": {"items": {"backend.v1": 90, "backend.v2": 10}},
    "payments": {"charge": {"payments": 1}},
}
BACKEND = ("backend.v1", "backend.v2")
EPOCH = 1_700_000_000.0
DAY_S = 86400.0


@dataclass
class Pod:
    service: str
    tls: Iterable[str] = ()
    inbound: str | None = None
    mtls: str = "DISABLE"
    cert: CertInfo | None = None


@dataclass
class Mesh:
    """Synthetic sidecars on one clock, filtered as the dashboard's client asks the stream."""

    pods: dict[str, Pod]
    clock: Clock = field(default_factory=Clock)
    aggregator: Aggregator = field(default_factory=Aggregator)
    sidecars: dict[str, SyntheticSidecar] = field(default_factory=dict)
    readers: dict[str, StreamReader] = field(default_factory=dict)
    topologies: dict[str, Topology | None] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for node, pod in self.pods.items():
            self.configure(node, pod)
            self.readers[node] = StreamReader()
        self.tick(0.0)  # the stream's first document covers nothing

    def configure(self, node: str, pod: Pod) -> None:
        self.pods[node] = pod
        cfg = sidecar_config(
            node,
            ROUTES,
            service=pod.service,
            spiffe_id=synthetic_spiffe_id(pod.service) if pod.cert or pod.tls else None,
            tls=pod.tls,
            inbound=pod.inbound,
            inbound_mtls=pod.mtls,
        )
        if node in self.sidecars:
            self.sidecars[node].apply(cfg)
        else:
            self.sidecars[node] = SyntheticSidecar(cfg, clock=self.clock, name_filter=STREAM_FILTER)
        self.topologies[node] = from_config_dump(
            {"version": 1, "config": cfg.model_dump(mode="json")}
        )

    def __getitem__(self, node: str) -> SyntheticSidecar:
        return self.sidecars[node]

    def tick(self, seconds: float = DT, at: float = EPOCH) -> MeshView:
        self.clock.advance(seconds)
        inputs = [
            SidecarInput(
                node=node,
                admin_url=f"http://{node}:15000",
                latest=self.readers[node].parse(
                    json.loads(json.dumps(sc.snapshot())), self.clock()
                ),
                topology=self.topologies[node],
                stale=node in self.stale,
                cert=self.pods[node].cert,
            )
            for node, sc in self.sidecars.items()
        ]
        return self.aggregator.build(inputs, at=at)


def edge(view: MeshView, key: str) -> EdgeStats:
    return next(e for e in view.edges if e.key == key)


def pod(view: MeshView, node: str) -> PodSecurity:
    return next(p for p in view.pod_security if p.node == node)


def secured() -> Mesh:
    return Mesh(
        {
            "frontend-0": Pod("frontend", tls=BACKEND, inbound="127.0.1.2", mtls="STRICT"),
            "frontend-1": Pod("frontend", tls=BACKEND, inbound="127.0.1.3", mtls="STRICT"),
            "batch-0": Pod("batch"),
            "backend-v1-0": Pod("backend", inbound="127.0.1.4", mtls="STRICT"),
        }
    )


# -- edges ------------------------------------------------------------------------------------


def test_an_edge_sums_its_callers_pods_and_rolls_subsets_up_to_their_service() -> None:
    mesh = secured()
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0, count=40)
    mesh["frontend-1"].request("backend", "items", "backend.v2", 200, 5.0, count=10)
    # Refused by backend's RBAC filter: the caller's cluster counts a 403.
    mesh["frontend-1"].request("backend", "items", "backend.v1", 403, 1.0, count=5)
    mesh["batch-0"].request("payments", "charge", "payments", 200, 3.0, count=3)
    view = mesh.tick()

    assert [e.key for e in view.edges] == ["batch->payments", "frontend->backend"]
    fb = edge(view, "frontend->backend")
    assert fb.mode == "mtls"
    assert fb.rps == pytest.approx((40 + 10 + 5) / DT)
    assert fb.denied_per_s == pytest.approx(5 / DT)
    assert fb.tls_failures == {}
    bp = edge(view, "batch->payments")
    assert (bp.mode, bp.denied_per_s) == ("plaintext", 0.0)
    assert bp.rps == pytest.approx(3 / DT)


def test_a_quiet_edge_stays_and_a_cluster_never_called_makes_none() -> None:
    mesh = secured()
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0, count=4)
    mesh.tick()
    quiet = mesh.tick()
    assert edge(quiet, "frontend->backend").rps == 0.0
    # frontend's config has a payments cluster, but it never called it.
    assert not any(e.destination == "payments" and e.source == "frontend" for e in quiet.edges)
    # A stale sidecar's numbers are old: they count nowhere, its edges included.
    mesh.stale = {"frontend-0"}
    assert not any(e.source == "frontend" for e in mesh.tick().edges)


def test_callers_that_disagree_on_tls_make_a_mixed_edge() -> None:
    mesh = secured()
    for node in ("frontend-0", "frontend-1"):
        mesh[node].request("backend", "items", "backend.v1", 200, 5.0)
    assert edge(mesh.tick(), "frontend->backend").mode == "mtls"
    # A reload that takes security away has reached one of frontend's pods so far.
    mesh.configure("frontend-1", Pod("frontend", inbound="127.0.1.3"))
    mesh["frontend-1"].request("backend", "items", "backend.v1", 200, 5.0)
    assert edge(mesh.tick(), "frontend->backend").mode == "mixed"


def test_without_a_config_tls_stats_still_tell_mtls() -> None:
    mesh = secured()
    mesh.topologies = dict.fromkeys(mesh.topologies)  # an Envoy: its config is not read
    mesh["frontend-0"].upstream_tls("backend.v1", handshake=1)
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0)
    mesh["batch-0"].request("payments", "charge", "payments", 200, 3.0)
    view = mesh.tick()
    # Its pods are named for their node, not their service, which only a config says.
    assert edge(view, "frontend-0->backend").mode == "mtls"
    assert edge(view, "batch-0->payments").mode == "unknown"


def test_handshakes_the_caller_failed_are_the_edges() -> None:
    mesh = secured()
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0)
    mesh["frontend-0"].upstream_tls("backend.v1", fail_verify_san=3, connection_error=1)
    mesh["frontend-1"].upstream_tls("backend.v2", fail_verify_san=2)
    view = mesh.tick()
    assert edge(view, "frontend->backend").tls_failures == {
        "fail_verify_san": 5,
        "connection_error": 1,
    }
    # An interval later with none: the interval's are gone, the totals since start stay.
    mesh["frontend-0"].request("backend", "items", "backend.v1", 200, 5.0)
    quiet = edge(mesh.tick(), "frontend->backend")
    assert quiet.tls_failures == {}
    assert quiet.tls_failures_total == {"fail_verify_san": 5, "connection_error": 1}


# -- pods -------------------------------------------------------------------------------------


def test_a_pods_rbac_decisions_and_inbound_tls_are_rates() -> None:
    mesh = secured()
    backend = mesh["backend-v1-0"]
    backend.rbac(allowed=20, denied=4)
    backend.inbound_tls("127.0.1.4", handshake=6, fail_verify_no_cert=2, no_filter_chain_match=3)
    view = mesh.tick()
    b = pod(view, "backend-v1-0")
    assert (b.service, b.mtls) == ("backend", "STRICT")
    assert b.rbac_allowed_per_s == pytest.approx(20 / DT)
    assert b.rbac_denied_per_s == pytest.approx(4 / DT)
    assert b.handshakes_per_s == pytest.approx(6 / DT)
    assert b.tls_failures == {"fail_verify_no_cert": 2, "no_filter_chain_match": 3}
    # No policies on frontend's listener, no TLS connection yet: nothing to count, not 0.
    f = pod(view, "frontend-0")
    assert (f.rbac_allowed_per_s, f.rbac_denied_per_s, f.handshakes_per_s) == (None, None, None)
    # The next interval: the stats exist, the rates are 0.
    quiet = pod(mesh.tick(), "backend-v1-0")
    assert (quiet.rbac_denied_per_s, quiet.handshakes_per_s, quiet.tls_failures) == (0, 0, {})


def test_a_refused_plaintext_connection_counts_once() -> None:
    mesh = secured()
    # The sidecar counts it as Envoy's TLS-only listener and as Istio's STRICT one would.
    mesh["backend-v1-0"].inbound_tls("127.0.1.4", connection_error=4, no_filter_chain_match=3)
    failures = pod(mesh.tick(), "backend-v1-0").tls_failures
    assert failures == {"connection_error": 1, "no_filter_chain_match": 3}
    mesh["backend-v1-0"].inbound_tls("127.0.1.4", connection_error=2, no_filter_chain_match=2)
    b = pod(mesh.tick(), "backend-v1-0")
    assert b.tls_failures == {"no_filter_chain_match": 2}
    # Since start: 6 connection errors, 5 of them the plaintext ones.
    assert b.tls_failures_total == {"connection_error": 1, "no_filter_chain_match": 5}


def test_an_envoys_inbound_tls_is_found_by_its_port() -> None:
    mesh = secured()
    mesh.topologies = dict.fromkeys(mesh.topologies)
    mesh["backend-v1-0"].inbound_tls("0.0.0.0", handshake=2, no_filter_chain_match=1)
    b = pod(mesh.tick(), "backend-v1-0")
    assert b.handshakes_per_s == pytest.approx(2 / DT)
    assert b.tls_failures == {"no_filter_chain_match": 1}


def test_an_ipv6_inbound_listener_is_read_either_way_it_is_spelled() -> None:
    inbound = InboundListener("inbound", "::", 15006)
    assert inbound.stat_prefixes == ("listener.[__]_15006.", "listener.[::]_15006.")
    mesh = Mesh({"backend-0": Pod("backend", inbound="::", mtls="STRICT")})
    mesh["backend-0"].inbound_tls("::", handshake=4)
    assert pod(mesh.tick(), "backend-0").handshakes_per_s == pytest.approx(4 / DT)


def test_the_synthetic_sidecar_counts_tls_under_the_data_planes_names() -> None:
    real = Store()
    ListenerTlsStats(real, "127.0.1.4", 15006)
    ClusterTlsStats(real, "backend.v1")
    fake = SyntheticSidecar(sidecar_config("x", ROUTES))
    fake.inbound_tls("127.0.1.4")
    fake.upstream_tls("backend.v1")
    names = {c.name for c in real.counters()}
    assert names == {c.name for c in fake.stats.counters()}
    # What the dashboard reads of them passes the stream's filter; the rest does not.
    read = {n for n in names if re.search(STREAM_FILTER, n)}
    assert {n.rsplit(".", 1)[-1] for n in names - read} == {"session_reused", "no_certificate"}


# -- worked out when read ------------------------------------------------------------------------


def _traffic(mesh: Mesh, rng: random.Random) -> None:
    for node in ("frontend-0", "frontend-1"):
        if rng.random() < 0.7:
            status = 403 if rng.random() < 0.3 else 200
            subset = rng.choice(BACKEND)
            mesh[node].request("backend", "items", subset, status, 2.0, count=rng.randint(1, 9))
        if rng.random() < 0.2:
            mesh[node].upstream_tls(rng.choice(BACKEND), fail_verify_san=rng.randint(1, 3))
    if rng.random() < 0.5:
        mesh["batch-0"].request("payments", "charge", "payments", 200, 3.0, count=rng.randint(1, 5))
    if rng.random() < 0.5:
        mesh["backend-v1-0"].rbac(allowed=rng.randint(0, 9), denied=rng.randint(0, 3))
        mesh["backend-v1-0"].inbound_tls("127.0.1.4", handshake=rng.randint(0, 3))


@pytest.mark.parametrize("seed", range(5))
def test_a_views_security_is_worked_out_when_read_as_it_was_when_built(seed: int) -> None:
    """Views of one sequence of documents: one mesh reads each view's security at once, the
    other only some views', later and out of order; both must read the same."""
    rng = random.Random(seed)
    now, later = secured(), secured()
    built = []
    for _ in range(12):
        state = rng.getstate()
        _traffic(now, rng)
        rng.setstate(state)
        _traffic(later, rng)
        if rng.random() < 0.2:  # a sidecar goes stale, or comes back
            stale = {"frontend-1"} if not now.stale else set()
            now.stale, later.stale = stale, set(stale)
        at_once = now.tick()
        expected = (at_once.edges, at_once.pod_security)
        view = later.tick()
        assert isinstance(view, DeferredSecurityView) and view.security_pending
        built.append((view, expected))
    rng.shuffle(built)
    for view, (edges, pods) in built[:6]:
        assert (view.edges, view.pod_security) == (edges, pods)
        assert not view.security_pending
        # A copy (the TUI's tests make some) carries what was worked out.
        assert dataclasses.replace(view, at=0.0).edges == edges
    assert any(e.rps > 0 for _, (edges, _) in built for e in edges)


def test_events_do_not_wait_for_the_security_parts() -> None:
    mesh = secured()
    first = mesh.tick()
    mesh.stale = {"frontend-1"}
    view = mesh.tick()
    assert [e.text for e in view.events] == ["frontend-1 is silent: its numbers are stale"]
    assert isinstance(first, DeferredSecurityView) and first.security_pending
    assert isinstance(view, DeferredSecurityView) and view.security_pending


# -- certificates -------------------------------------------------------------------------------


def test_a_certificate_expires_in_what_is_left_of_its_ttl() -> None:
    ttl = 24 * 3600.0
    issued = EPOCH - 3600.0
    cert = from_envoy_certs(
        certs_answer(synthetic_spiffe_id("backend"), valid_from=issued, expires=issued + ttl),
        synthetic_spiffe_id("backend"),
        EPOCH,
    )
    assert cert == CertInfo(synthetic_spiffe_id("backend"), issued + ttl, issued)
    mesh = Mesh({"backend-0": Pod("backend", inbound="127.0.1.4", mtls="STRICT", cert=cert)})
    status = pod(mesh.tick(at=EPOCH), "backend-0").cert
    assert status is not None
    assert status.expires_in_s == pytest.approx(ttl - 3600.0)
    assert status.lifetime_s == pytest.approx(ttl)
    assert pod(mesh.tick(at=issued + ttl + 60), "backend-0").cert.expires_in_s == -60  # type: ignore[union-attr]
    assert pod(mesh.tick(), "backend-0").spiffe_id == synthetic_spiffe_id("backend")


def test_the_certs_answer_is_read_leniently() -> None:
    me, other = synthetic_spiffe_id("backend"), synthetic_spiffe_id("frontend")
    theirs = certs_answer(other, valid_from=EPOCH, expires=EPOCH + 100)
    mine = certs_answer(me, valid_from=EPOCH, expires=EPOCH + 200)
    both = {"certificates": [*theirs["certificates"], *mine["certificates"]]}  # type: ignore[misc]
    # The leaf naming the pod's identity, wherever it is; else the first leaf there is.
    assert from_envoy_certs(both, me, EPOCH) == CertInfo(me, EPOCH + 200, EPOCH)
    assert from_envoy_certs(theirs, me, EPOCH) == CertInfo(other, EPOCH + 100, EPOCH)
    # Envoy's whole days, when it gives no expiration_time.
    days = {"certificates": [{"cert_chain": [{"days_until_expiration": "2"}]}]}
    assert from_envoy_certs(days, me, EPOCH) == CertInfo("", EPOCH + 2 * 86400)
    nothings: tuple[object, ...] = (
        {"certificates": []},
        {},
        [],
        None,
        {"certificates": [{"cert_chain": [{}]}]},
    )
    for nothing in nothings:
        assert from_envoy_certs(nothing, me, EPOCH) is None


def test_the_fake_source_aggregates_certificates_with_the_documents() -> None:
    cfg = sidecar_config(
        "backend-0", ROUTES, service="backend", spiffe_id=synthetic_spiffe_id("backend")
    )
    sc = SyntheticSidecar(cfg, name_filter=STREAM_FILTER)
    topo = from_config_dump({"config": cfg.model_dump(mode="json")})
    assert topo is not None
    cert = CertInfo(synthetic_spiffe_id("backend"), EPOCH + 600.0, EPOCH - DAY_S + 600.0)
    view = FakeSource().push_snapshots(
        {"backend-0": sc.snapshot()},
        at=EPOCH,
        topologies={"backend-0": topo},
        certs={"backend-0": cert},
    )
    (p,) = view.pod_security
    assert p.cert is not None
    assert (p.cert.expires_in_s, p.cert.lifetime_s) == (600.0, DAY_S)


# -- topology -----------------------------------------------------------------------------------


def test_the_config_dump_names_the_caller_its_identity_and_its_tls_clusters() -> None:
    cfg = sidecar_config(
        "frontend-0",
        ROUTES,
        service="frontend",
        spiffe_id=synthetic_spiffe_id("frontend"),
        tls=BACKEND,
        inbound="127.0.1.2",
        inbound_mtls="PERMISSIVE",
    )
    topo = from_config_dump({"config": cfg.model_dump(mode="json")})
    assert topo is not None
    assert (topo.service, topo.spiffe_id) == ("frontend", synthetic_spiffe_id("frontend"))
    assert topo.tls_clusters == frozenset(BACKEND)
    assert topo.inbound == InboundListener("inbound", "127.0.1.2", 15006, "PERMISSIVE")
    # The gateway has no service of its own: authorization calls it `ingress`.
    gateway = {
        "config": {
            "virtual_hosts": [],
            "listeners": [{"name": "ingress", "kind": "ingress", "address": "0.0.0.0"}],
        }
    }
    topo = from_config_dump(gateway)
    assert topo is not None and (topo.service, topo.inbound) == ("ingress", None)
    # Envoy's: a cluster with a TLS transport socket.
    envoy = {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "dynamic_active_clusters": [
                    {
                        "cluster": {
                            "name": "outbound|80||backend",
                            "transport_socket": {"name": "envoy.transport_sockets.tls"},
                        }
                    },
                    {"cluster": {"name": "outbound|80||legacy"}},
                ],
            }
        ]
    }
    topo = from_config_dump(envoy)
    assert topo is not None and topo.tls_clusters == frozenset({"outbound|80||backend"})
