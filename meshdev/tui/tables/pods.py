"""Services and pods: state, readiness, restarts, subset, and the config version each serves.

Three sources meet here: the control plane (which pods exist, which get traffic, the version
it pushed), the runtime (running or exited, restarts), and telemetry (whether the sidecar's
admin endpoint answers, and the version it reports serving).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from rich.text import Text

from meshdev import healing, plan
from meshdev.control import ControlPlane, Pod
from meshdev.runtime.base import PodState
from meshdev.telemetry.aggregation.view import SidecarStatus
from meshdev.tui.logic.format import DASH
from meshdev.tui.tables.keyed import Column, KeyedTable, Row


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the control plane knows of one pod (from `ControlPlane.pods`)."""

    name: str
    service: str  # "" for the ingress gateway
    subset: str | None
    address: str
    routable: bool
    version: int
    config_hash: str | None


def pod_facts(pods: Iterable[Pod]) -> list[PodFacts]:
    return [
        PodFacts(
            name=p.name,
            service=p.spec.service,
            subset=p.spec.subset,
            address=p.started.placement.address,
            routable=p.routable,
            version=p.version,
            config_hash=p.hash,
        )
        for p in pods
    ]


def _state_cell(state: PodState | None) -> Text:
    if state is None:
        return Text("unknown", style="dim")
    style = {"running": "green", "starting": "yellow"}.get(state.state, "bold red")
    return Text(state.state, style=style)


def _ready_cell(pod: PodFacts, state: PodState | None, sidecar: SidecarStatus | None) -> Text:
    if state is not None and state.state not in ("running", "starting"):
        return Text("no", style="bold red")
    if not pod.routable:
        # Starting (not yet in endpoints) or draining (taken out before it stops).
        return Text("no traffic", style="yellow")
    if sidecar is not None and not sidecar.connected:
        return Text("no admin", style="bold red")
    return Text("yes", style="green")


def _sidecar_cell(sidecar: SidecarStatus | None) -> Text:
    if sidecar is None:
        return Text(DASH, style="dim")
    if not sidecar.connected:
        return Text("down", style="bold red")
    if sidecar.stale:
        return Text(f"{sidecar.mode} stale", style="yellow")
    return Text(sidecar.mode, style="green")


def _config_cell(pod: PodFacts, sidecar: SidecarStatus | None, current: int) -> Text:
    version = pod.version
    digest = pod.config_hash
    if sidecar is not None and sidecar.config_version is not None:
        version, digest = sidecar.config_version, sidecar.config_hash or digest
    text = f"v{version}" + (f" {digest[:8]}" if digest else "")
    # Unchanged sidecars are not pushed, so an older number alone is no fault; it is only
    # worth a colour while it differs.
    return Text(text, style="" if version == current else "dim")


def pod_row(
    pod: PodFacts, state: PodState | None, sidecar: SidecarStatus | None, current: int
) -> Row:
    restarts = state.restarts if state is not None else 0
    cells = (
        pod.name,
        pod.service or "(ingress)",
        pod.subset or "",
        _state_cell(state),
        _ready_cell(pod, state, sidecar),
        Text(str(restarts), style="bold red" if restarts else "dim"),
        _config_cell(pod, sidecar, current),
        _sidecar_cell(sidecar),
        pod.address,
        Text(state.detail if state is not None else "", style="dim"),
    )
    return Row(cells, {"pod": pod.name, "service": pod.service, "restarts": restarts})


class PodsTable(KeyedTable):
    TITLE = "Services and pods"
    COLUMNS = (
        Column("pod", "POD"),
        Column("service", "SERVICE"),
        Column("subset", "SUBSET"),
        Column("state", "STATE"),
        Column("ready", "READY", 10),
        Column("restarts", "RESTARTS", 8),
        Column("config", "CONFIG", 12),
        Column("sidecar", "SIDECAR", 12),
        Column("address", "ADDRESS"),
        Column("detail", "DETAIL"),
    )
    SORTABLE = ("service", "restarts", "pod")
    DESCENDING = frozenset({"restarts"})

    def show(
        self,
        pods: Iterable[PodFacts],
        states: Mapping[str, PodState],
        sidecars: Mapping[str, SidecarStatus],
        current: int,
    ) -> None:
        self.sync(
            {p.name: pod_row(p, states.get(p.name), sidecars.get(p.name), current) for p in pods}
        )


def healed_states(control: ControlPlane, states: Iterable[PodState]) -> list[PodState]:
    """The runtime's pod states with what the control plane remembers of each pod's restarts
    (the runtime sees only the current containers), plus the pods of the plan that are down
    waiting for their restart."""
    keys = {p.name: p.key for p in control.pods.values()}
    out = []
    for seen in states:
        health = control.health.get(keys.get(seen.pod, seen.pod))
        if health is None or not health.restarts:
            out.append(seen)
            continue
        last = f"last exit {health.exit_code}" if health.exit_code is not None else ""
        out.append(replace(seen, restarts=health.restarts, detail=seen.detail or last))
    for key in _down(control):
        health = control.health[key]
        out.append(
            PodState(
                pod=key,
                service="",
                subset=None,
                state=health.state,
                address="",
                admin_url="",
                restarts=health.restarts,
                detail=health.describe(),
            )
        )
    return out


def down_pod_facts(control: ControlPlane) -> list[PodFacts]:
    """Rows for the pods of the plan that are down, waiting for their restart."""
    specs = {s.name: s for s in plan.pods(control.mesh)} if control.mesh is not None else {}
    out = []
    for key in _down(control):
        spec = specs.get(key)
        if spec is not None:
            out.append(PodFacts(key, spec.service, spec.subset, "", False, 0, None))
    return out


def _down(control: ControlPlane) -> list[str]:
    running = {p.key for p in control.pods.values()}
    return sorted(
        key
        for key, health in control.health.items()
        if key not in running and health.state != healing.RUNNING
    )
