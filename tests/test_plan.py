"""The plan: which pods a mesh wants and what each sidecar serves, computed without I/O."""

from __future__ import annotations

import pytest
import yaml

from meshdev import plan
from meshdev.common import envoy_defaults as envoy
from meshdev.common import sidecar_config as sc
from meshdev.config import load_mesh, parse_mesh
from tests.support import DEMO_MESH, ROOT

MESH = load_mesh(DEMO_MESH)
DEFAULTS = yaml.safe_load((ROOT / "templates" / "sidecar.yaml").read_text())


def placements(specs: list[plan.PodSpec]) -> list[plan.Placement]:
    return [
        plan.Placement(p.name, f"10.0.0.{i + 2}", "0.0.0.0", "127.0.0.1")
        for i, p in enumerate(specs)
    ]


def pairs(
    specs: list[plan.PodSpec], placed: list[plan.Placement]
) -> list[tuple[plan.PodSpec, plan.Placement]]:
    return list(zip(specs, placed, strict=True))


def test_pods_of_the_demo_mesh() -> None:
    specs = plan.pods(MESH)
    assert [(p.name, p.service, p.subset) for p in specs] == [
        ("ingress", "", None),
        ("frontend-0", "frontend", None),
        ("backend-v1-0", "backend", "v1"),
        ("backend-v1-1", "backend", "v1"),
        ("backend-v2-0", "backend", "v2"),
    ]
    v2 = specs[-1]
    assert v2.env["VERSION"] == "v2"
    assert v2.command == "python app.py"
    assert v2.health_path == "/healthz"


def test_app_env_is_the_command_contract() -> None:
    spec = plan.pods(MESH)[2]
    env = plan.app_env(spec, plan.Placement(spec.name, "127.0.1.3", "127.0.1.3", "127.0.1.3"))
    assert env["HOST"] == "127.0.1.3"
    assert env["PORT"] == "8080"
    assert env["HTTP_PROXY"] == "http://127.0.1.3:15001"
    assert env["POD"] == "backend-v1-0"
    assert env["SERVICE"] == "backend"


def test_pod_sidecar_config() -> None:
    specs = plan.pods(MESH)
    placed = placements(specs)
    cfg = plan.render(MESH, specs[2], placed[2], pairs(specs, placed), version=7, defaults=DEFAULTS)
    assert (cfg.version, cfg.node, cfg.service, cfg.subset) == (7, "backend-v1-0", "backend", "v1")
    kinds = {lst.kind: lst for lst in cfg.listeners}
    assert set(kinds) == {"inbound", "outbound"}
    assert (kinds["inbound"].address, kinds["inbound"].port) == ("0.0.0.0", sc.INBOUND_PORT)
    assert (kinds["outbound"].address, kinds["outbound"].port) == ("127.0.0.1", sc.OUTBOUND_PORT)
    inbound = cfg.cluster("inbound|8080")
    assert inbound is not None
    assert [(e.address, e.port) for e in inbound.endpoints] == [("127.0.0.1", 8080)]
    # Service discovery: subset clusters hold exactly their pods' inbound listeners.
    v1 = cfg.cluster("backend.v1")
    assert v1 is not None
    assert [(e.pod, e.address, e.port) for e in v1.endpoints] == [
        ("backend-v1-0", "10.0.0.4", 15006),
        ("backend-v1-1", "10.0.0.5", 15006),
    ]
    backend = cfg.cluster("backend")
    assert backend is not None and len(backend.endpoints) == 3
    assert backend.lb == "least_request"
    assert backend.circuit_breaker.max_pending_requests == 5
    assert backend.outlier_detection is not None
    assert backend.outlier_detection.base_ejection_time == 10.0
    # The template's defaults are in every config.
    assert cfg.limits.header_timeout == DEFAULTS["limits"]["header_timeout"]


def test_routes_render_as_envoy_routes() -> None:
    specs = plan.pods(MESH)
    placed = placements(specs)
    cfg = plan.render(MESH, specs[1], placed[1], pairs(specs, placed), version=1, defaults=DEFAULTS)
    vhosts = {v.name: v for v in cfg.virtual_hosts}
    assert "backend:80" in vhosts["backend"].domains
    canary, items, default = vhosts["backend"].routes
    assert canary.match.headers[0].name == "x-canary"
    assert canary.match.headers[0].exact == "1"
    assert canary.fault is not None and canary.fault.delay is not None
    assert canary.fault.delay.fixed == pytest.approx(0.3)
    assert [(c.cluster, c.weight) for c in items.clusters] == [
        ("backend.v1", 90),
        ("backend.v2", 10),
    ]
    assert items.retries is not None and items.retries.per_try_timeout == pytest.approx(0.5)
    assert items.rate_limit == sc.RateLimit(requests_per_second=200, burst=50)
    assert [(c.cluster, c.weight) for c in default.clusters] == [("backend", 1)]
    # A service without routes gets Istio's default: everything to every pod.
    (only,) = vhosts["frontend"].routes
    assert only.match == sc.RouteMatch()
    assert [c.cluster for c in only.clusters] == ["frontend"]


def test_ingress_config() -> None:
    specs = plan.pods(MESH)
    placed = placements(specs)
    placed[0] = plan.Placement("ingress", "10.0.0.2", "0.0.0.0", "127.0.0.1", public="0.0.0.0")
    cfg = plan.render(MESH, specs[0], placed[0], pairs(specs, placed), version=1, defaults=DEFAULTS)
    (listener,) = cfg.listeners
    assert (listener.kind, listener.address, listener.port) == ("ingress", "0.0.0.0", 8000)
    assert [(r.name, r.virtual_host, r.match.prefix) for r in listener.routes] == [
        ("web", "frontend", "/")
    ]


def test_only_routable_pods_are_endpoints() -> None:
    specs = plan.pods(MESH)
    placed = placements(specs)
    draining = [(s, p) for s, p in pairs(specs, placed) if p.pod != "backend-v1-1"]
    cfg = plan.render(MESH, specs[1], placed[1], draining, version=2, defaults=DEFAULTS)
    v1 = cfg.cluster("backend.v1")
    assert v1 is not None
    assert [e.pod for e in v1.endpoints] == ["backend-v1-0"]


def test_hash_ignores_version_but_not_content() -> None:
    specs = plan.pods(MESH)
    placed = placements(specs)
    a = plan.render(MESH, specs[1], placed[1], pairs(specs, placed), version=1, defaults=DEFAULTS)
    b = plan.render(MESH, specs[1], placed[1], pairs(specs, placed), version=2, defaults=DEFAULTS)
    assert a.content_hash() == b.content_hash()
    text = DEMO_MESH.read_text()
    changed = parse_mesh(
        text.replace("backend.v1: 90, backend.v2: 10", "backend.v1: 50, backend.v2: 50").encode(),
        "m",
    )
    c = plan.render(
        changed, specs[1], placed[1], pairs(specs, placed), version=3, defaults=DEFAULTS
    )
    assert c.content_hash() != a.content_hash()


def test_an_http_destinations_idle_timeout_holds_on_every_hop() -> None:
    mesh = parse_mesh(
        b"name: t\nservices:\n  chat: {command: x}\n  web: {command: x}\n"
        b"ingress: {routes: [{to: chat}]}\npolicies:\n  chat: {idle_timeout: 30m}\n",
        "mesh.yaml",
    )
    specs = plan.pods(mesh)
    placed = placements(specs)
    configs = {
        s.name: plan.render(mesh, s, p, pairs(specs, placed), version=1, defaults=DEFAULTS)
        for s, p in zip(specs, placed, strict=True)
    }

    def idle(pod: str, cluster: str) -> float:
        found = configs[pod].cluster(cluster)
        assert found is not None
        return found.stream_idle_timeout

    # Every caller's cluster of chat, the gateway's included; web keeps Envoy's default.
    for pod in ("ingress", "chat-0", "web-0"):
        assert (idle(pod, "chat"), idle(pod, "web")) == (1800.0, envoy.STREAM_IDLE_TIMEOUT)
    # And chat's own inbound hop, which the same connections cross.
    assert idle("chat-0", "inbound|8080") == 1800.0
    assert idle("web-0", "inbound|8080") == envoy.STREAM_IDLE_TIMEOUT
