"""The configs a save that turns TLS on passes through (meshdev/security/staging.py)."""

from __future__ import annotations

from typing import Any

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.security.staging import loosens, tightens, transitional, winding_down

CALLEE = "spiffe://cluster.local/ns/m/sa/api"


def config(*, mtls: str, tls: bool, spiffe: str | None, version: int = 1) -> SidecarConfig:
    cluster: dict[str, Any] = {"name": "api", "endpoints": []}
    if tls:
        cluster["tls"] = {"spiffe_ids": [CALLEE]}
    return SidecarConfig.model_validate(
        {
            "version": version,
            "mesh": "m",
            "node": "web-0",
            "spiffe_id": spiffe,
            "listeners": [
                {
                    "name": "inbound",
                    "kind": "inbound",
                    "address": "0.0.0.0",
                    "port": 15006,
                    "cluster": "inbound|8080",
                    "mtls": mtls,
                }
            ],
            "clusters": [
                {"name": "inbound|8080", "endpoints": []},
                cluster,
            ],
        }
    )


PLAIN = config(mtls="DISABLE", tls=False, spiffe=None)
STRICT = config(mtls="STRICT", tls=True, spiffe="spiffe://cluster.local/ns/m/sa/web", version=2)


def test_turning_tls_on_tightens_and_relaxing_it_does_not() -> None:
    assert tightens(PLAIN, STRICT)
    assert not tightens(STRICT, PLAIN)
    assert not tightens(None, STRICT)  # a pod that started with it
    assert not tightens(STRICT, STRICT)
    permissive = config(mtls="PERMISSIVE", tls=True, spiffe=STRICT.spiffe_id)
    # PERMISSIVE -> STRICT: every caller already sends TLS to it.
    assert not tightens(permissive, STRICT)


def inbound_mode(cfg: SidecarConfig) -> str:
    return next(lst.mtls for lst in cfg.listeners if lst.kind == "inbound")


def tls_of(cfg: SidecarConfig) -> bool:
    return next(c for c in cfg.clusters if c.name == "api").tls is not None


def test_the_rounds_go_through_permissive() -> None:
    first = transitional(PLAIN, STRICT, clients=False)
    assert (first.spiffe_id, inbound_mode(first), tls_of(first)) == (
        STRICT.spiffe_id,
        "PERMISSIVE",
        False,
    )
    second = transitional(PLAIN, STRICT, clients=True)
    assert (inbound_mode(second), tls_of(second)) == ("PERMISSIVE", True)
    assert first.version == second.version == STRICT.version


def test_a_listener_already_strict_is_never_loosened() -> None:
    strict_no_client = config(mtls="STRICT", tls=False, spiffe=STRICT.spiffe_id)
    assert inbound_mode(transitional(strict_no_client, STRICT, clients=False)) == "STRICT"
    # A cluster that already sent TLS keeps it in the first round.
    assert tls_of(transitional(STRICT, STRICT, clients=False))


def with_policy(cfg: SidecarConfig, rule: dict[str, Any]) -> SidecarConfig:
    data = cfg.model_dump(mode="json")
    data["listeners"][0]["authorization"] = [{"name": "reads", "action": "ALLOW", "rules": [rule]}]
    return SidecarConfig.model_validate(data)


def authorization_of(cfg: SidecarConfig) -> Any:
    return next(lst.authorization for lst in cfg.listeners if lst.kind == "inbound")


def test_identity_rules_wait_for_the_round_where_every_caller_sends_tls() -> None:
    # A caller still on plaintext has no principal: pushed in round 1, `from: {services:
    # [web]}` answered web's own requests 403 until web's sidecar sent TLS.
    before = with_policy(PLAIN, {"paths": ["/data*"]})
    after = with_policy(STRICT, {"principals": ["cluster.local/ns/m/sa/web"]})
    for clients in (False, True):
        step = transitional(before, after, clients=clients)
        assert authorization_of(step) == authorization_of(before)
        assert inbound_mode(step) == "PERMISSIVE"
    # Rules on paths and methods alone need no identity: they apply from round 1.
    paths_only = with_policy(STRICT, {"paths": ["/other*"]})
    step = transitional(before, paths_only, clients=False)
    assert authorization_of(step) == authorization_of(paths_only)


def test_turning_tls_off_loosens_and_turning_it_on_does_not() -> None:
    assert loosens(STRICT, PLAIN)
    assert not loosens(PLAIN, STRICT)
    assert not loosens(None, PLAIN)
    assert not loosens(STRICT, STRICT)
    # A caller that stops sending TLS alone loosens too.
    assert loosens(STRICT, config(mtls="STRICT", tls=False, spiffe=STRICT.spiffe_id))


def test_turning_tls_off_goes_back_through_permissive() -> None:
    plain = PLAIN.model_copy(update={"version": 3})
    first = winding_down(STRICT, plain, clients=False)
    # The callee takes both, with the identity it has; the caller still sends TLS.
    assert (first.spiffe_id, inbound_mode(first), tls_of(first)) == (
        STRICT.spiffe_id,
        "PERMISSIVE",
        True,
    )
    second = winding_down(first, plain, clients=True)
    assert (second.spiffe_id, inbound_mode(second), tls_of(second)) == (
        STRICT.spiffe_id,
        "PERMISSIVE",
        False,
    )
    assert first.version == second.version == 3
