"""A mesh's pods as `docker ps` sees them: container summaries (one list call, no inspects)
grouped by the pod label into `PodState`s. Pure, so any process can read any mesh."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from meshdev.common.sidecar_config import ADMIN_PORT
from meshdev.plan import INGRESS_POD
from meshdev.runtime.base import (
    LABEL_POD,
    LABEL_SERVICE,
    LABEL_SUBSET,
    Container,
    PodExit,
    PodState,
)
from meshdev.runtime.docker.names import role_of

LOOPBACK = "127.0.0.1"
Summary = Mapping[str, Any]


def _state_word(docker_state: str) -> str:
    # Docker's words mapped onto PodState's: a created container has not started yet.
    return {"created": "starting", "restarting": "starting", "removing": "exited"}.get(
        docker_state, docker_state
    )


def _address(sidecar: Summary, network: str) -> str:
    nets = (sidecar.get("NetworkSettings") or {}).get("Networks") or {}
    return str((nets.get(network) or {}).get("IPAddress") or "")


def _admin_url(sidecar: Summary) -> str:
    for port in sidecar.get("Ports") or ():
        if port.get("PrivatePort") == ADMIN_PORT and port.get("PublicPort"):
            return f"http://{LOOPBACK}:{port['PublicPort']}"
    return ""


def pod_state(pod: str, sidecar: Summary | None, app: Summary | None, network: str) -> PodState:
    labels: Mapping[str, str] = next(
        ((s.get("Labels") or {}) for s in (sidecar, app) if s is not None), {}
    )
    parts: list[tuple[str, Summary | None]] = [("sidecar", sidecar)]
    if pod != INGRESS_POD and labels.get(LABEL_SERVICE):
        parts.append(("app", app))
    state = "running"
    detail: list[str] = []
    for which, summary in parts:
        if summary is None:
            state = "missing" if state == "running" else state
            detail.append(f"{which}: no container")
        elif summary["State"] != "running":
            if state == "running":
                state = _state_word(str(summary["State"]))
            detail.append(f"{which}: {summary.get('Status') or summary['State']}")
    live = sidecar is not None and sidecar["State"] == "running"
    return PodState(
        pod=pod,
        service=labels.get(LABEL_SERVICE, ""),
        subset=labels.get(LABEL_SUBSET),
        state=state,
        address=_address(sidecar, network) if live and sidecar else "",
        admin_url=_admin_url(sidecar) if live and sidecar else "",
        detail="; ".join(detail),
    )


def pod_states(summaries: Iterable[Summary], network: str) -> list[PodState]:
    """The gateway first, then pods by name."""
    by_pod: dict[str, dict[str, Summary]] = {}
    for summary in summaries:
        labels = summary.get("Labels") or {}
        role = role_of(labels)
        pod = labels.get(LABEL_POD)
        if role is not None and pod is not None:
            by_pod.setdefault(pod, {})["app" if role == "app" else "sidecar"] = summary
    order = sorted(by_pod, key=lambda p: (p != INGRESS_POD, p))
    return [pod_state(p, by_pod[p].get("sidecar"), by_pod[p].get("app"), network) for p in order]


_EXIT_CODE = re.compile(r"Exited \((-?\d+)\)")


def exited_pods(summaries: Iterable[Summary], started: Collection[str]) -> list[PodExit]:
    """The pods of `started` one of whose containers has exited, with its exit code (read from
    the summary's status, "Exited (137) 2 seconds ago", so no inspect is needed)."""
    out: dict[str, PodExit] = {}
    for summary in summaries:
        labels = summary.get("Labels") or {}
        pod = labels.get(LABEL_POD)
        role = role_of(labels)
        if not isinstance(pod, str) or pod not in started or role is None:
            continue
        if summary.get("State") not in ("exited", "dead"):
            continue
        match = _EXIT_CODE.search(str(summary.get("Status", "")))
        container: Container = "app" if role == "app" else "sidecar"
        out.setdefault(pod, PodExit(pod, container, int(match.group(1)) if match else None))
    return list(out.values())
