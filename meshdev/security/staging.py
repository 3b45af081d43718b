"""Turning TLS on or off without a failed request: the configs a save passes through.

A save that adds `security:` or moves a destination from DISABLE to mTLS cannot reach every
sidecar at the same instant. Pushed at once, a caller that already sends TLS can meet a callee
still on plaintext (refused), or a callee already STRICT can meet a caller still on plaintext
(refused). Istio's advice is to migrate through PERMISSIVE; the control plane does it for the
user, in three rounds, each pushed to every sidecar before the next:

1. identity: each sidecar gets its identity (and then its certificate); inbound listeners that
   were plaintext take both (PERMISSIVE); callers send TLS only where they already did;
2. clients: callers send TLS wherever the save asks (every callee takes it by now);
3. the saved config itself (STRICT where asked: every caller sends TLS by now).

"By now" holds because a sidecar answers the push that makes it send TLS only once the
plaintext requests it had under way have their answers (sidecar DataPlane.settle): one that
reached its callee after round 3 was refused (STRICT) or denied (no principal).

Authorization that names callers by identity (principals, which `from.services` becomes) is
held back to round 3 as well: a caller still on plaintext has no principal, so a saved
`ALLOW from: {services: [web]}` pushed in round 1 refused web's requests (403) until web's
sidecar sent TLS. Until then an inbound listener keeps the policies it had.

Turning TLS off (`security` removed, or a destination moved to DISABLE) is the same the other
way, also in three rounds: callees that will take plaintext only take both first (PERMISSIVE,
with the identity and certificate they have), then callers send plaintext, then the saved
config (DISABLE). A push that makes a sidecar send plaintext answers once the TLS requests it
had under way have their answers, as above.

Pure: configs in, configs out.
"""

from __future__ import annotations

from meshdev.common.sidecar_config import Cluster, Listener, SidecarConfig


def _tls_clusters(config: SidecarConfig | None) -> set[str]:
    return set() if config is None else {c.name for c in config.clusters if c.tls is not None}


def _inbound_modes(config: SidecarConfig | None) -> dict[str, str]:
    if config is None:
        return {}
    return {lst.name: lst.mtls for lst in config.listeners if lst.kind == "inbound"}


def _by_identity(listener: Listener) -> bool:
    """Whether its authorization names callers by their certificate."""
    return any(
        rule.principals or rule.not_principals
        for policy in listener.authorization
        for rule in policy.rules
    )


def tightens(current: SidecarConfig | None, target: SidecarConfig) -> bool:
    """Whether pushing `target` over `current` at once could refuse traffic: a new identity,
    a cluster that starts sending TLS, or an inbound listener leaving plaintext."""
    if current is None:
        return False  # a pod that just started with its config
    if target.spiffe_id is not None and target.spiffe_id != current.spiffe_id:
        return True
    if _tls_clusters(target) - _tls_clusters(current):
        return True
    was = _inbound_modes(current)
    return any(
        was.get(name) == "DISABLE" and mode != "DISABLE"
        for name, mode in _inbound_modes(target).items()
    )


def transitional(
    current: SidecarConfig | None, target: SidecarConfig, *, clients: bool
) -> SidecarConfig:
    """Round 1 (`clients` False) or round 2 (`clients` True) on the way to `target`."""
    keep_tls = _tls_clusters(current)
    was = _inbound_modes(current)
    had = {} if current is None else {lst.name: lst for lst in current.listeners}

    def cluster(c: Cluster) -> Cluster:
        if c.tls is None or clients or c.name in keep_tls:
            return c
        return c.model_copy(update={"tls": None})

    def listener(lst: Listener) -> Listener:
        update: dict[str, object] = {}
        before = had.get(lst.name)
        if before is not None and _by_identity(lst) and before.authorization != lst.authorization:
            update["authorization"] = before.authorization
        if (
            lst.kind == "inbound"
            and lst.mtls != "DISABLE"
            and was.get(lst.name) not in (lst.mtls, "STRICT")  # STRICT: callers send TLS
        ):
            update["mtls"] = "PERMISSIVE"
        return lst.model_copy(update=update) if update else lst

    return target.model_copy(
        update={
            "clusters": tuple(cluster(c) for c in target.clusters),
            "listeners": tuple(listener(lst) for lst in target.listeners),
        }
    )


def loosens(current: SidecarConfig | None, target: SidecarConfig) -> bool:
    """Whether pushing `target` over `current` at once could refuse traffic on the way back to
    plaintext: a cluster that stops sending TLS, or an inbound listener that stops taking it."""
    if current is None:
        return False
    if _tls_clusters(current) - _tls_clusters(target):
        return True
    now = _inbound_modes(target)
    return any(
        mode != "DISABLE" and now.get(name) == "DISABLE"
        for name, mode in _inbound_modes(current).items()
    )


def winding_down(
    current: SidecarConfig | None, target: SidecarConfig, *, clients: bool
) -> SidecarConfig:
    """Round 1 (`clients` False) or round 2 (`clients` True) of turning TLS off on the way to
    `target`: an inbound listener leaving TLS takes both (PERMISSIVE) until round 3, with the
    identity the sidecar has; a cluster leaving TLS keeps sending it until round 2."""
    before = {} if current is None else {c.name: c for c in current.clusters}
    was = _inbound_modes(current)

    def cluster(c: Cluster) -> Cluster:
        old = before.get(c.name)
        if clients or c.tls is not None or old is None or old.tls is None:
            return c
        return c.model_copy(update={"tls": old.tls})

    def listener(lst: Listener) -> Listener:
        if (
            lst.kind == "inbound"
            and lst.mtls == "DISABLE"
            and was.get(lst.name, "DISABLE") != "DISABLE"
        ):
            return lst.model_copy(update={"mtls": "PERMISSIVE"})
        return lst

    identity = target.spiffe_id
    if identity is None and current is not None:
        identity = current.spiffe_id
    return target.model_copy(
        update={
            "spiffe_id": identity,
            "clusters": tuple(cluster(c) for c in target.clusters),
            "listeners": tuple(listener(lst) for lst in target.listeners),
        }
    )
