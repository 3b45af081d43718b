"""The plan for a captured pod (the Docker runtime): every service at a stable virtual address,
the outbound listener handing captured connections on, tcp services' listeners at their
addresses without sockets, and an app environment with no proxy at all."""

from __future__ import annotations

import ipaddress

from meshdev import plan
from meshdev.common import sidecar_config as sc
from meshdev.config import parse_mesh

MESH = parse_mesh(
    b"""\
name: shop
services:
  web:
    command: python app.py
  api:
    command: python api.py
    port: 9000
    protocol: grpc
    excluded_ports: [5432]
  cache:
    command: redis-server
    port: 6379
    protocol: tcp
ingress:
  routes: [{to: web}]
""",
    "mesh.yaml",
)


def placed(captured: bool) -> list[tuple[plan.PodSpec, plan.Placement]]:
    return [
        (s, plan.Placement(s.name, f"172.20.0.{i + 2}", "0.0.0.0", "127.0.0.1", captured=captured))
        for i, s in enumerate(plan.pods(MESH))
    ]


def config(pod: str, captured: bool = True) -> sc.SidecarConfig:
    pairs = placed(captured)
    spec, where = next((s, p) for s, p in pairs if s.name == pod)
    return plan.render(MESH, spec, where, pairs, version=1, defaults={})


def test_virtual_addresses_are_stable_and_in_the_benchmark_range() -> None:
    names = [f"svc{i}" for i in range(300)]
    addresses = plan.virtual_addresses(names)
    assert len(set(addresses.values())) == 300  # collisions settled
    for address in addresses.values():
        assert ipaddress.ip_address(address) in plan.VIRTUAL_NETWORK
        assert address not in ("198.18.0.0", "198.18.255.255")
    # Adding or removing a service moves no other.
    assert plan.virtual_addresses([*names[:10], "new"])["svc3"] == addresses["svc3"]
    assert plan.virtual_addresses(["svc3"]) == {"svc3": addresses["svc3"]}


def test_a_captured_pod_hands_connections_on_by_original_destination() -> None:
    cfg = config("web-0")
    listeners = {lst.name: lst for lst in cfg.listeners}
    assert listeners["outbound"].use_original_dst
    assert listeners["outbound"].bind_to_port
    cache_ip = plan.virtual_addresses(MESH.services)["cache"]
    cache = listeners["outbound|6379|cache"]
    assert (cache.address, cache.port, cache.bind_to_port) == (cache_ip, 6379, False)
    # HTTP services are called on port 80 or on their app's port: one listener per port.
    http = {n: lst for n, lst in listeners.items() if n.startswith("0.0.0.0_")}
    assert sorted(http) == ["0.0.0.0_80", "0.0.0.0_8080", "0.0.0.0_9000"]
    assert all(not lst.bind_to_port and lst.tcp_proxy is None for lst in http.values())
    # The hosts file names every service, also as <service>.<mesh>.
    assert cfg.hosts_file == "/etc/hosts"
    assert cfg.service_addresses["cache"] == cache_ip
    assert cfg.service_addresses["cache.shop"] == cache_ip
    assert set(cfg.service_addresses) == {
        f"{n}{suffix}" for n in ("web", "api", "cache") for suffix in ("", ".shop")
    }
    # A call on the app's own port finds its virtual host too.
    api = next(v for v in cfg.virtual_hosts if v.name == "api")
    assert {"api", "api:80", "api:9000", "api.shop:9000"} <= set(api.domains)


def test_an_uncaptured_pod_keeps_its_proxy_listener_only() -> None:
    cfg = config("web-0", captured=False)
    listeners = {lst.name: lst for lst in cfg.listeners}
    assert not listeners["outbound"].use_original_dst
    assert listeners["outbound|6379|cache"].address == "127.0.0.1"
    assert listeners["outbound|6379|cache"].bind_to_port
    assert not [n for n in listeners if n.startswith("0.0.0.0_")]
    assert cfg.service_addresses == {} and cfg.hosts_file is None


def test_a_captured_app_has_no_proxy_and_reaches_tcp_services_by_name() -> None:
    spec, where = next((s, p) for s, p in placed(True) if s.name == "web-0")
    env = plan.app_env(spec, where)
    assert not [k for k in env if "proxy" in k.lower()]
    assert env["CACHE_SERVICE_HOST"] == "cache"
    assert env["CACHE_SERVICE_PORT"] == "6379"
    spec, where = next((s, p) for s, p in placed(False) if s.name == "web-0")
    env = plan.app_env(spec, where)
    assert env["HTTP_PROXY"] == "http://127.0.0.1:15001"
    assert env["CACHE_SERVICE_HOST"] == "127.0.0.1"


def test_excluded_ports_reach_the_pod_spec() -> None:
    specs = {s.name: s for s in plan.pods(MESH)}
    assert specs["api-0"].excluded_ports == (5432,)
    assert specs["web-0"].excluded_ports == ()
