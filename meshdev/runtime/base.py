"""The one interface both runtimes satisfy, and the plain facts they report.

The control plane only ever sees this: start a pod (its app and its sidecar) and get back where
it is, stop one, list what runs with the mesh's label, stream logs, remove everything. Whether
a pod is two containers sharing a network namespace or two processes sharing a loopback
address is the runtime's business alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from meshdev.config.model import Mesh
from meshdev.plan import Placement, PodSpec

RuntimeKind = Literal["docker", "process"]
Container = Literal["app", "sidecar"]
# Labels every object carries (containers, networks; processes get them as env vars).
LABEL_MESH = "meshdev.mesh"
LABEL_POD = "meshdev.pod"
LABEL_SERVICE = "meshdev.service"
LABEL_SUBSET = "meshdev.subset"
LABEL_ROLE = "meshdev.role"
LABEL_CONFIG = "meshdev.config-hash"

Progress = Callable[[str], None]


class RuntimeFailure(Exception):
    """A failure the user must see, worded for them (what, which pod, what to do).
    `exit_code`: a pod's container exited while starting, with this code."""

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class StartedPod:
    placement: Placement
    admin_url: str  # reachable from the host's loopback
    # The pod's inbound listener as reachable from the host (its app, through its sidecar):
    # what the dashboard uses to poke one replica (e.g. the example's POST /chaos).
    inbound_url: str = ""


@dataclass(frozen=True, slots=True)
class PodState:
    """What the runtime sees of one pod right now."""

    pod: str
    service: str
    subset: str | None
    state: str  # running, exited, starting, missing
    address: str
    admin_url: str
    restarts: int = 0
    detail: str = ""  # e.g. the exit code and the app's last line


@dataclass(frozen=True, slots=True)
class PodExit:
    """A container of a running pod that exited on its own (a crash, a kill from outside)."""

    pod: str
    container: Container
    exit_code: int | None


class Runtime(Protocol):
    kind: RuntimeKind

    async def remove_leftovers(self) -> list[str]:
        """Remove every object of this mesh from an earlier run; returns what was removed."""

    async def prepare(self, mesh: Mesh, specs: list[PodSpec], progress: Progress) -> None:
        """Build images, create networks: everything before pods can start."""

    def planned_placement(self, spec: PodSpec) -> Placement:
        """Where the pod will listen, as far as known before it starts."""

    def code_version(self, spec: PodSpec) -> str | None:
        """What identifies the code the pod would run if started now (Docker: its built
        image's id, as the last prepare left it); None when the runtime cannot tell (a
        process runs its folder's files as they are), which makes every code roll replace it."""

    async def start_pod(self, spec: PodSpec, sidecar_config: bytes, token: str) -> StartedPod:
        """Start the pod's sidecar and app; returns once both processes/containers run."""

    async def wait_ready(self, spec: PodSpec, started: StartedPod, timeout: float) -> None:
        """Until the sidecar's /ready and the app's health answer; on timeout or an early exit
        raise RuntimeError_ naming the pod, the cause and the last lines of its log."""

    async def stop_pod(self, pod: str) -> None: ...

    async def exits(self) -> list[PodExit]:
        """The pods started here (and not stopped since) one of whose containers exited;
        cheap enough to ask every second."""
        ...

    async def pod_states(self) -> list[PodState]: ...

    def logs(self, pod: str, container: Container) -> AsyncIterator[str]:
        """Lines of a pod's app or sidecar output, from the start, then following."""

    async def last_lines(self, pod: str, container: Container, n: int = 20) -> list[str]: ...

    async def teardown(self) -> list[str]:
        """Remove every container, network and process of the mesh; returns what was removed."""
