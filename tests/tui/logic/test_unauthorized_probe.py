"""The `a` demo: a request from a service of the mesh that no policy allows, against a real
sidecar whose certificate comes from a real mesh CA: the probe calls as each other service in
turn (a certificate for its SPIFFE ID), finds the one the sidecar's RBAC filter refuses, and
explains the 403 from mesh.yaml. An allowed caller gets through; a mesh with no policy says
how to add one."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from meshdev.common.workload_certs import spiffe_id
from meshdev.config import parse_mesh
from meshdev.control import ControlPlane, Pod
from meshdev.plan import Placement, pods
from meshdev.runtime.base import StartedPod
from meshdev.security import ca as mesh_ca
from meshdev.tui.logic.actions import ActionFailed, probe_requests
from meshdev.tui.logic.commands import Commands, nothing_refused
from meshdev.tui.logic.ports import SessionPort
from tests.sidecar.helpers import Upstream, sidecar, upstreams
from tests.sidecar.tls.meshtls import callee_config, install, port_of
from tests.support import LOCALHOST
from tests.tui.tuifakes import FakeRuntime

MESH = """\
name: m
services:
  api: {command: x}
  web: {command: x}
  batch: {command: x}
security: {mtls: STRICT}
authorization:
  api:
"""
# Only web may read /data; everything else is open to everyone but web's /admin.
PRINCIPAL = "cluster.local/ns/m/sa"
ONLY_WEB = "    - {name: web-reads, from: {services: [web]}, to: {paths: [/data*]}}\n"
NO_ADMIN = "    - {name: no-admin, action: DENY, from: {services: [web]}, to: {paths: [/admin*]}}\n"


def session(policies: str, inbound_port: int, ca: mesh_ca.MeshCA) -> SessionPort:
    mesh = parse_mesh((MESH + policies).encode(), "mesh.yaml")
    control = ControlPlane(FakeRuntime(), "token")
    control.mesh = mesh
    control.ca = ca
    spec = next(s for s in pods(mesh) if s.service == "api")
    where = Placement(spec.name, LOCALHOST, LOCALHOST, LOCALHOST)
    inbound = f"http://{LOCALHOST}:{inbound_port}"
    control.pods[spec.name] = Pod(spec.name, spec, StartedPod(where, "http://x", inbound))
    return cast(SessionPort, SimpleNamespace(control=control, mesh=mesh))


def guarded(app: Upstream, policies: list[dict[str, Any]]) -> Any:
    """The callee's sidecar as the plan renders it: STRICT, with these RBAC policies."""
    config = callee_config(app, mtls="STRICT", spiffe_id=spiffe_id("m", "api"))
    data = config.model_dump(mode="json")
    data["mesh"] = "m"
    data["listeners"][0]["authorization"] = policies
    return type(config).model_validate(data)


async def test_the_caller_no_allow_policy_names_gets_403_explained(tmp_path: Path) -> None:
    ca = mesh_ca.load_or_create(tmp_path, "m")
    policies = [
        {
            "name": "web-reads",
            "action": "ALLOW",
            "rules": [{"principals": ["cluster.local/ns/m/sa/web"], "paths": ["/data*"]}],
        }
    ]
    async with upstreams("app") as (app,), sidecar(guarded(app, policies)) as sc:
        install(sc, ca.issue(spiffe_id("m", "api")))
        said = await Commands(session(ONLY_WEB, port_of(sc), ca)).unauthorized()
    # Services are tried in name order: batch comes before web, and is refused.
    assert said.startswith("GET /data to api-0 as batch: 403 RBAC: access denied: ")
    assert "no ALLOW policy of api matches this caller/path" in said


async def test_a_deny_policy_is_named(tmp_path: Path) -> None:
    ca = mesh_ca.load_or_create(tmp_path, "m")
    policies = [
        {
            "name": "no-admin",
            "action": "DENY",
            "rules": [{"principals": ["cluster.local/ns/m/sa/web"], "paths": ["/admin*"]}],
        }
    ]
    async with upstreams("app") as (app,), sidecar(guarded(app, policies)) as sc:
        install(sc, ca.issue(spiffe_id("m", "api")))
        said = await Commands(session(NO_ADMIN, port_of(sc), ca)).unauthorized()
    # batch, tried first, is let through (the sidecar forwarded both its probes to the app);
    # web is refused at once.
    assert said.startswith("GET /admin to api-0 as web: 403 RBAC: access denied: ")
    assert "denied by authorization policy no-admin (authorization.api[0] in mesh.yaml)" in said
    assert app.seen_targets == ["/admin", "/"]


async def test_when_every_caller_is_allowed_it_says_so(tmp_path: Path) -> None:
    ca = mesh_ca.load_or_create(tmp_path, "m")
    everyone = "    - {name: all, to: {paths: ['*']}}\n"
    policies = [{"name": "all", "action": "ALLOW", "rules": [{"paths": ["*"]}]}]
    async with upstreams("app") as (app,), sidecar(guarded(app, policies)) as sc:
        install(sc, ca.issue(spiffe_id("m", "api")))
        with pytest.raises(ActionFailed, match="every caller may call api"):
            await Commands(session(everyone, port_of(sc), ca)).unauthorized()


async def test_a_mesh_without_policies_says_how_to_add_one(tmp_path: Path) -> None:
    mesh_text = MESH.replace("authorization:\n  api:\n", "")
    mesh = parse_mesh(mesh_text.encode(), "mesh.yaml")
    control = ControlPlane(FakeRuntime(), "token")
    control.mesh = mesh
    with pytest.raises(ActionFailed, match=re.escape("under `authorization:` in mesh.yaml")):
        await Commands(
            cast(SessionPort, SimpleNamespace(control=control, mesh=mesh))
        ).unauthorized()


def test_probe_requests_come_from_the_policies_patterns_with_safe_methods_only() -> None:
    mesh = parse_mesh(
        (
            MESH
            + "    - {name: a, to: {methods: [POST, HEAD], "
            + "paths: ['/x*', '*.json', /exact, '*']}}\n"
        ).encode(),
        "mesh.yaml",
    )
    assert probe_requests(mesh.authorization["api"]) == [
        ("HEAD", "/x"),
        ("HEAD", "/probe.json"),
        ("HEAD", "/exact"),
        ("HEAD", "/"),
        ("GET", "/"),
    ]


NO_POSTS = "    - {name: no-posts, action: DENY, to: {methods: [POST]}}\n"
NO_POSTS_RULE = {"name": "no-posts", "action": "DENY", "rules": [{"methods": ["POST"]}]}


async def test_a_deny_of_post_alone_is_named_not_asked_for(tmp_path: Path) -> None:
    # The mesh's one policy denies POST, a method the probe does not send: it used to say
    # "no request to deny (add a DENY policy, ...)" of a mesh that has one.
    ca = mesh_ca.load_or_create(tmp_path, "m")
    async with upstreams("app") as (app,), sidecar(guarded(app, [NO_POSTS_RULE])) as sc:
        install(sc, ca.issue(spiffe_id("m", "api")))
        with pytest.raises(ActionFailed) as failed:
            await Commands(session(NO_POSTS, port_of(sc), ca)).unauthorized()
    said = str(failed.value)
    assert said.startswith("no GET or HEAD to api is refused, whoever calls: ")
    assert (
        "DENY no-posts (authorization.api[0]) takes only POST, so such a POST to api gets 403 "
        "RBAC: access denied" in said
    )
    assert "add a DENY policy" not in said
    # Every caller's GET / went through to the app; nothing that could change it was sent.
    assert app.seen_targets == ["/", "/", "/"]


async def test_a_get_no_allow_takes_is_not_blamed_on_a_deny_of_post(tmp_path: Path) -> None:
    # A GET refused for want of an ALLOW was explained by the DENY of POST: the probe asked
    # the explainer about the path alone, not the method.
    ca = mesh_ca.load_or_create(tmp_path, "m")
    web = {"name": "web-all", "action": "ALLOW", "rules": [{"principals": [f"{PRINCIPAL}/web"]}]}
    yaml = "    - {name: web-all, from: {services: [web]}}\n" + NO_POSTS
    async with upstreams("app") as (app,), sidecar(guarded(app, [NO_POSTS_RULE, web])) as sc:
        install(sc, ca.issue(spiffe_id("m", "api")))
        said = await Commands(session(yaml, port_of(sc), ca)).unauthorized()
    assert said == (
        "GET / to api-0 as batch: 403 RBAC: access denied: "
        "no ALLOW policy of api matches this caller/path"
    )


def test_the_sentence_names_each_deny_of_unsafe_methods_with_whom_it_takes() -> None:
    mesh = parse_mesh(
        (
            MESH
            + "    - {name: no-web-deletes, action: DENY, from: {services: [web]}, "
            + "to: {methods: [DELETE], paths: ['/data*']}}\n"
            + "    - {name: reads-only, action: DENY, to: {not_methods: [GET, HEAD, POST, PUT, "
            + "DELETE, PATCH]}}\n"
        ).encode(),
        "mesh.yaml",
    )
    assert nothing_refused(mesh, ["api"]) == (
        "no GET or HEAD to api is refused, whoever calls: "
        "DENY no-web-deletes (authorization.api[0]) takes only DELETE from web to /data*, "
        "so such a DELETE to api gets 403 RBAC: access denied; "
        "DENY reads-only (authorization.api[1]) takes every method but GET, HEAD, POST, PUT, "
        "DELETE, PATCH, so such a request of another method to api gets 403 RBAC: access "
        "denied. This key sends GET or HEAD only (a request let through would reach the app "
        "and could change it)"
    )
