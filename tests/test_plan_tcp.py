"""The plan for `protocol: tcp` services: the inbound tcp_proxy of their pods, a listener per
tcp destination in every other pod, and the Kubernetes-style variables that point apps there."""

from __future__ import annotations

import dataclasses

from meshdev import plan
from meshdev.common import envoy_defaults as envoy
from meshdev.common import sidecar_config as sc
from meshdev.config import parse_mesh

MESH = parse_mesh(
    b"""\
name: shop
services:
  web:
    command: python app.py
  session-store:
    command: redis-server --port $PORT --bind $HOST
    port: 6379
    protocol: tcp
    versions: {a: {}, b: {replicas: 2}}
  pg:
    command: postgres
    port: 5432
    protocol: tcp
ingress:
  routes: [{to: web}]
routes:
  session-store:
    - to: {session-store.a: 1, session-store.b: 3}
policies:
  session-store: {idle_timeout: 5m, circuit_breaker: {max_connections: 7}}
""",
    "mesh.yaml",
)


def placed() -> list[tuple[plan.PodSpec, plan.Placement]]:
    """As the process runtime places pods: each on its own loopback address."""
    return [
        (s, plan.Placement(s.name, f"127.0.9.{i + 1}", f"127.0.9.{i + 1}", f"127.0.9.{i + 1}"))
        for i, s in enumerate(plan.pods(MESH))
    ]


def config(pod: str) -> sc.SidecarConfig:
    pairs = placed()
    spec, where = next((s, p) for s, p in pairs if s.name == pod)
    return plan.render(MESH, spec, where, pairs, version=3, defaults={})


def test_pods_know_their_protocol_and_the_tcp_services_they_reach() -> None:
    specs = {s.name: s for s in plan.pods(MESH)}
    assert specs["web-0"].protocol == "http"
    assert specs["web-0"].tcp_services == (("session-store", 6379), ("pg", 5432))
    # A pod's own service is not among them: its app holds that port on its address.
    assert specs["session-store-b-1"].protocol == "tcp"
    assert specs["session-store-b-1"].tcp_services == (("pg", 5432),)
    assert specs["pg-0"].tcp_services == (("session-store", 6379),)
    assert specs["ingress"].tcp_services == ()


def test_apps_find_tcp_services_in_their_environment() -> None:
    spec, where = next((s, p) for s, p in placed() if s.name == "web-0")
    env = plan.app_env(spec, where)
    assert env["SESSION_STORE_SERVICE_HOST"] == where.local
    assert env["SESSION_STORE_SERVICE_PORT"] == "6379"
    assert env["PG_SERVICE_HOST"] == where.local
    assert env["PG_SERVICE_PORT"] == "5432"
    redis, redis_at = next((s, p) for s, p in placed() if s.name == "session-store-a-0")
    redis_env = plan.app_env(redis, redis_at)
    assert "SESSION_STORE_SERVICE_HOST" not in redis_env
    assert redis_env["PORT"] == "6379"
    assert redis_env["PG_SERVICE_PORT"] == "5432"


def test_a_services_own_env_overrides_the_service_variables() -> None:
    # As in Kubernetes, an explicit variable wins over the injected one.
    spec, where = next((s, p) for s, p in placed() if s.name == "web-0")
    spec = dataclasses.replace(spec, env={"PG_SERVICE_PORT": "6432"})
    assert plan.app_env(spec, where)["PG_SERVICE_PORT"] == "6432"


def test_caller_gets_a_tcp_proxy_listener_per_tcp_destination() -> None:
    cfg = config("web-0")
    tcp = {lst.name: lst for lst in cfg.listeners if lst.tcp_proxy is not None}
    assert set(tcp) == {"outbound|6379|session-store", "outbound|5432|pg"}
    store = tcp["outbound|6379|session-store"]
    assert (store.kind, store.address, store.port) == ("outbound", "127.0.9.2", 6379)
    assert store.tcp_proxy is not None
    assert store.tcp_proxy.stat_prefix == "session-store"
    # The route's weights split connections among the subsets.
    assert [(c.cluster, c.weight) for c in store.tcp_proxy.clusters] == [
        ("session-store.a", 1),
        ("session-store.b", 3),
    ]
    assert store.tcp_proxy.idle_timeout == 300.0
    pg = tcp["outbound|5432|pg"]
    assert pg.tcp_proxy is not None
    assert [(c.cluster, c.weight) for c in pg.tcp_proxy.clusters] == [("pg", 1)]
    assert pg.tcp_proxy.idle_timeout == envoy.TCP_IDLE_TIMEOUT
    # The HTTP listeners stay as they were; HTTP routing knows only the http services.
    http = {lst.name for lst in cfg.listeners if lst.tcp_proxy is None}
    assert http == {"inbound", "outbound"}
    assert [v.name for v in cfg.virtual_hosts] == ["web"]


def test_tcp_clusters_are_discovered_as_http_ones() -> None:
    cfg = config("web-0")
    b = cfg.cluster("session-store.b")
    assert b is not None
    # Endpoints stay the pods' inbound listeners: discovery does not change with the protocol.
    assert [(e.pod, e.port) for e in b.endpoints] == [
        ("session-store-b-0", sc.INBOUND_PORT),
        ("session-store-b-1", sc.INBOUND_PORT),
    ]
    assert b.circuit_breaker.max_connections == 7


def test_a_tcp_pods_inbound_listener_is_a_tcp_proxy_to_its_app() -> None:
    cfg = config("session-store-a-0")
    inbound = next(lst for lst in cfg.listeners if lst.kind == "inbound")
    assert (inbound.address, inbound.port) == ("127.0.9.3", sc.INBOUND_PORT)
    assert inbound.cluster == "inbound|6379"
    assert inbound.tcp_proxy == sc.TcpProxy(
        stat_prefix="inbound|6379",
        clusters=(sc.WeightedCluster(cluster="inbound|6379", weight=1),),
        idle_timeout=300.0,
    )
    own = cfg.cluster("inbound|6379")
    assert own is not None
    assert [(e.address, e.port) for e in own.endpoints] == [("127.0.9.3", 6379)]
    # It reaches pg, not itself.
    tcp = [lst.name for lst in cfg.listeners if lst.tcp_proxy is not None and lst.kind != "inbound"]
    assert tcp == ["outbound|5432|pg"]


def test_the_gateway_gets_no_tcp_listener() -> None:
    cfg = config("ingress")
    assert [lst.kind for lst in cfg.listeners] == ["ingress"]
    assert all(lst.tcp_proxy is None for lst in cfg.listeners)


def test_an_http_only_mesh_renders_as_before() -> None:
    mesh = parse_mesh(b"name: d\nservices:\n  a: {command: x}\n", "mesh.yaml")
    (spec,) = plan.pods(mesh)
    assert spec.tcp_services == ()
    where = plan.Placement(spec.name, "127.0.9.2", "127.0.9.2", "127.0.9.2")
    cfg = plan.render(mesh, spec, where, [(spec, where)], version=1, defaults={})
    assert all(lst.tcp_proxy is None for lst in cfg.listeners)
    assert "tcp_proxy" not in cfg.model_dump(exclude_defaults=True)["listeners"][0]
