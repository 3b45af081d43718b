"""The `p` demo: a plaintext request from outside straight at a secured pod's inbound listener,
against a real sidecar: STRICT refuses it; PERMISSIVE lets it in, and an ALLOW policy answers
403 (no identity). Without TLS in the mesh it says how to turn it on."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, cast

import pytest

from meshdev.config import parse_mesh
from meshdev.control import ControlPlane, Pod
from meshdev.plan import Placement, pods
from meshdev.runtime.base import StartedPod
from meshdev.tui.logic.actions import ActionFailed
from meshdev.tui.logic.commands import Commands
from meshdev.tui.logic.ports import SessionPort
from tests.sidecar.helpers import Upstream, sidecar, upstreams
from tests.sidecar.tls.meshtls import callee_config, port_of
from tests.support import LOCALHOST
from tests.tui.tuifakes import FakeRuntime

MESH = "name: m\nservices:\n  api: {{command: x}}\n{security}"


def session(mode: str | None, inbound_port: int) -> SessionPort:
    text = MESH.format(security=f"security: {{mtls: {mode}}}\n" if mode else "")
    mesh = parse_mesh(text.encode(), "mesh.yaml")
    control = ControlPlane(FakeRuntime(), "token")
    control.mesh = mesh
    spec = next(s for s in pods(mesh) if s.service == "api")
    where = Placement(spec.name, LOCALHOST, LOCALHOST, LOCALHOST)
    inbound = f"http://{LOCALHOST}:{inbound_port}"
    control.pods[spec.name] = Pod(spec.name, spec, StartedPod(where, "http://x", inbound))
    return cast(SessionPort, SimpleNamespace(control=control, mesh=mesh))


def with_allow(config: Any) -> Any:
    data = config.model_dump(mode="json")
    data["listeners"][0]["authorization"] = [
        {"name": "only-web", "action": "ALLOW", "rules": [{"principals": ["x/ns/m/sa/web"]}]}
    ]
    return type(config).model_validate(data)


async def test_strict_refuses_the_plaintext_request() -> None:
    async with upstreams("app") as (app,), sidecar(callee_config(app, mtls="STRICT")) as sc:
        said = await Commands(session("STRICT", port_of(sc))).plaintext()
        assert said.startswith("plaintext to api-0's inbound listener: refused (STRICT")


async def test_permissive_lets_it_in_and_authorization_answers() -> None:
    # The policy answers before anything is forwarded: the app need not exist.
    config = with_allow(callee_config(Upstream("app", port=1), mtls="PERMISSIVE"))
    async with sidecar(config) as sc:
        said = await Commands(session("PERMISSIVE", port_of(sc))).plaintext()
        assert "answered 403" in said


async def test_a_mesh_without_tls_says_how_to_turn_it_on() -> None:
    with pytest.raises(ActionFailed, match=re.escape("add `security: {mtls: STRICT}`")):
        await Commands(session(None, 1)).plaintext()


TWO = """\
name: m
services:
  web: {command: x}
  api: {command: x}
security: {mtls: STRICT}
policies:
  api: {mtls: PERMISSIVE}
"""


def two_pods(web_port: int, api_port: int) -> SessionPort:
    mesh = parse_mesh(TWO.encode(), "mesh.yaml")
    control = ControlPlane(FakeRuntime(), "token")
    control.mesh = mesh
    for spec in pods(mesh):
        port = web_port if spec.service == "web" else api_port
        where = Placement(spec.name, LOCALHOST, LOCALHOST, LOCALHOST)
        started = StartedPod(where, "http://x", f"http://{LOCALHOST}:{port}")
        control.pods[spec.name] = Pod(spec.name, spec, started)
    return cast(SessionPort, SimpleNamespace(control=control, mesh=mesh))


async def test_the_selected_pod_is_probed_so_permissive_can_be_seen_beside_strict() -> None:
    # Before, a STRICT service anywhere in the mesh took every press: what the docs say of
    # PERMISSIVE (let in without an identity, an ALLOW policy answers 403) never showed.
    permissive = with_allow(callee_config(Upstream("app", port=1), mtls="PERMISSIVE"))
    async with (
        upstreams("app") as (app,),
        sidecar(callee_config(app, mtls="STRICT")) as strict,
        sidecar(permissive) as loose,
    ):
        commands = Commands(two_pods(port_of(strict), port_of(loose)))
        said = await commands.plaintext("api-0")
        assert said.startswith("plaintext to api-0's inbound listener (PERMISSIVE): answered 403")
        # Nothing selected, or a pod that takes no mTLS (the gateway): the first STRICT one.
        for selected in (None, "ingress"):
            said = await commands.plaintext(selected)
            assert said.startswith("plaintext to web-0's inbound listener: refused (STRICT")
