"""The Pods view with self-healing: restarts and the last exit come from the control plane
(the runtime sees only the current containers), and a pod of the plan that is down waiting for
its restart keeps its row, crash-looping with its backoff."""

from __future__ import annotations

from meshdev import healing
from meshdev.config import parse_mesh
from meshdev.control import ControlPlane, Pod
from meshdev.plan import Placement, pods
from meshdev.runtime.base import PodState, StartedPod
from meshdev.tui.tables.pods import down_pod_facts, healed_states
from tests.tui.tuifakes import FakeRuntime

MESH = parse_mesh(b"name: heal\nservices:\n  web: {command: x, replicas: 2}\n", "mesh.yaml")


def control() -> ControlPlane:
    cp = ControlPlane(FakeRuntime(), "token")
    cp.mesh = MESH
    web0 = next(s for s in pods(MESH) if s.name == "web-0")
    started = StartedPod(Placement("web-0", "127.0.9.2", "127.0.9.2", "127.0.9.2"), "http://x")
    cp.pods["web-0"] = Pod("web-0", web0, started, routable=True)
    restarted = healing.PodHealth(started_at=0.0)
    restarted.exited(137, now=1.0)
    restarted.restarting(now=1.0)
    restarted.running()
    looping = healing.PodHealth(started_at=0.0)
    looping.exited(3, now=1.0)
    looping.restarting(now=1.0)
    looping.exited(3, now=2.0)
    cp.health = {"web-0": restarted, "web-1": looping}
    return cp


def test_restarts_and_the_last_exit_come_from_the_control_plane() -> None:
    cp = control()
    seen = PodState("web-0", "web", None, "running", "127.0.9.2", "http://x")
    states = {s.pod: s for s in healed_states(cp, [seen])}
    assert (states["web-0"].restarts, states["web-0"].detail) == (1, "last exit 137")
    # web-1 is down, waiting out its backoff: still listed.
    assert states["web-1"].state == healing.CRASH_LOOPING
    assert states["web-1"].restarts == 1
    assert states["web-1"].detail.startswith("crash-looping, exit 3, next try in")


def test_a_pod_down_waiting_for_its_restart_keeps_its_row() -> None:
    facts = down_pod_facts(control())
    assert [(f.name, f.service, f.routable) for f in facts] == [("web-1", "web", False)]
