"""Configs scoped by `calls:` (Istio's Sidecar egress hosts): each sidecar gets the routes of
the services its app calls, the clusters those routes send to, and its own inbound; the
gateway and services without `calls:` keep every service. One push renders what sidecars
share once."""

from __future__ import annotations

from meshdev import plan
from meshdev.common import sidecar_config as sc
from meshdev.config import parse_mesh
from meshdev.config.model import Mesh, Policy
from meshdev.sidecar.router.table import HostIndex

MESH = parse_mesh(
    b"""\
name: shop
services:
  frontend: {command: app, calls: [reviews, backend, cache]}
  reviews: {command: app, calls: []}
  ratings: {command: app}
  backend:
    command: app
    versions: {v1: {}, v2: {}}
  cache: {command: redis, port: 6379, protocol: tcp}
  db: {command: pg, port: 5432, protocol: tcp}
ingress:
  routes: [{to: frontend}]
routes:
  # reviews' routes send some of its traffic to another service: its callers need that one's
  # cluster, not its routes.
  reviews:
    - {name: stars, match: {prefix: /stars}, to: ratings}
    - {name: rest}
  backend:
    - {name: split, to: {backend.v1: 90, backend.v2: 10}}
""",
    "mesh.yaml",
)


def placed(mesh: Mesh = MESH) -> list[tuple[plan.PodSpec, plan.Placement]]:
    return [
        (s, plan.Placement(s.name, f"127.0.9.{i + 1}", f"127.0.9.{i + 1}", f"127.0.9.{i + 1}"))
        for i, s in enumerate(plan.pods(mesh))
    ]


def configs(mesh: Mesh = MESH) -> dict[str, sc.SidecarConfig]:
    pairs = placed(mesh)
    renderer = plan.Renderer(mesh, pairs, version=2, defaults={})
    return {spec.name: renderer.render(spec, where) for spec, where in pairs}


def test_a_caller_gets_the_routes_of_what_it_calls_and_the_clusters_they_need() -> None:
    cfg = configs()["frontend-0"]
    assert [v.name for v in cfg.virtual_hosts] == ["reviews", "backend"]
    assert [c.name for c in cfg.clusters] == [
        "reviews",
        "ratings",  # reviews' `stars` route sends there
        "backend",
        "backend.v1",
        "backend.v2",
        "cache",
        "inbound|8080",
    ]
    assert cfg.egress == sc.Egress(
        service="frontend",
        calls=("reviews", "backend", "cache"),
        hidden=("frontend", "ratings", "db"),
    )
    # Only the tcp services it calls get a listener (and a variable in its app's env).
    assert [lst.name for lst in cfg.listeners] == ["inbound", "outbound", "outbound|6379|cache"]
    frontend = next(s for s, _ in placed() if s.name == "frontend-0")
    assert frontend.tcp_services == (("cache", 6379),)


def test_every_call_an_app_declares_is_routed_to_a_cluster_of_its_config() -> None:
    for name, cfg in configs().items():
        spec = next(s for s, _ in placed() if s.name == name)
        calls = MESH.services[spec.service].calls if spec.service else None
        if calls is None:
            continue
        index = HostIndex([(v.domains, v) for v in cfg.virtual_hosts])
        clusters = {c.name for c in cfg.clusters}
        for dest in calls:
            if MESH.services[dest].protocol == "tcp":
                assert any(lst.name.endswith(f"|{dest}") for lst in cfg.listeners), (name, dest)
                continue
            for authority in (dest, f"{dest}:80", f"{dest}.shop"):
                vhost = index.lookup(authority)
                assert vhost is not None and vhost.name == dest, (name, authority)
            for route in index.lookup(dest).routes:  # type: ignore[union-attr]
                assert {wc.cluster for wc in route.clusters} <= clusters, (name, route.name)


def test_a_service_that_calls_nothing_has_its_inbound_only() -> None:
    cfg = configs()["reviews-0"]
    assert cfg.virtual_hosts == ()
    assert [c.name for c in cfg.clusters] == ["inbound|8080"]
    assert cfg.egress is not None and "ratings" in cfg.egress.hidden


def test_the_gateway_and_services_without_calls_see_every_service() -> None:
    every = ["frontend", "reviews", "ratings", "backend"]
    for pod in ("ingress", "ratings-0", "backend-v1-0"):
        cfg = configs()[pod]
        assert [v.name for v in cfg.virtual_hosts] == every, pod
        assert cfg.egress is None


def test_without_calls_the_configs_are_what_a_mesh_without_the_key_renders() -> None:
    text = (
        b"name: shop\nservices:\n  a: {command: x}\n  b: {command: x, replicas: 2}\n"
        b"ingress: {routes: [{to: a}]}\nroutes:\n  b: [{name: r, timeout: 1s}]\n"
    )
    mesh = parse_mesh(text, "mesh.yaml")
    pairs = placed(mesh)
    for spec, where in pairs:
        alone = plan.render(mesh, spec, where, pairs, version=2, defaults={})
        assert alone == configs(mesh)[spec.name]
        assert [v.name for v in alone.virtual_hosts] == ["a", "b"]


def test_one_push_renders_what_sidecars_share_once() -> None:
    cfgs = configs()
    ingress, ratings = cfgs["ingress"], cfgs["ratings-0"]
    # The same objects, not equal copies: validated once for the whole push.
    assert ingress.virtual_hosts[1] is ratings.virtual_hosts[1]
    assert ingress.cluster("backend") is ratings.cluster("backend")
    assert ingress.cluster("backend") is cfgs["frontend-0"].cluster("backend")


def test_a_policy_edit_changes_only_the_configs_that_route_to_its_service() -> None:
    before = configs()
    after = configs(
        MESH.model_copy(
            update={"policies": {"ratings": Policy(lb="least_request")}},
        )
    )
    changed = sorted(
        name for name in before if before[name].content_hash() != after[name].content_hash()
    )
    # ratings' callers: the gateway, every pod without `calls:`, and frontend, whose
    # reviews route sends to ratings; not reviews, which calls nothing.
    assert changed == [
        "backend-v1-0",
        "backend-v2-0",
        "cache-0",
        "db-0",
        "frontend-0",
        "ingress",
        "ratings-0",
    ]


def test_a_captured_pod_still_catches_calls_to_services_outside_its_calls() -> None:
    """Docker's capture: every HTTP service's port has its listener, so a call to a service
    outside `calls:` meets the outbound router (404 NR saying why), not a passthrough."""
    pairs = placed()
    spec = next(s for s, _ in pairs if s.name == "reviews-0")
    where = plan.Placement(spec.name, "10.0.0.5", "0.0.0.0", "127.0.0.1", captured=True)
    cfg = plan.Renderer(MESH, pairs, version=2, defaults={}).render(spec, where)
    assert cfg.virtual_hosts == ()
    assert [lst.name for lst in cfg.listeners if lst.name.startswith("0.0.0.0_")] == [
        "0.0.0.0_80",
        "0.0.0.0_8080",
    ]
    assert cfg.egress is not None and cfg.egress.hidden == (
        "frontend",
        "reviews",
        "ratings",
        "backend",
        "cache",
        "db",
    )
