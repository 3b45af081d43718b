"""Messages workers post to the app: plain dataclasses, one per thing that happened.

Messages flow up (workers -> app), attributes flow down (app -> panels). Every worker runs
with `exit_on_error=False`; what goes wrong in one arrives here as `WorkerFailed` and is shown.
The session's messages are its controller's to handle (`SessionMessage`, controllers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from textual.message import Message

from meshdev.control import ReloadReport, RollReport
from meshdev.runtime.base import PodState


@dataclass
class ViewReady(Message):
    """A new view waits in the mailbox (only ever one such message is pending)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ViewReady)


@dataclass
class TracesChanged(Message):
    """New spans arrived in the trace feed's store (only ever one such message is pending)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, TracesChanged)


@dataclass
class StartupLine(Message):
    """A progress line of `meshdev up` (image builds, pod starts)."""

    text: str


@dataclass
class RetryStart(Message):
    """The user asked to try `meshdev up` again after a failure."""


@dataclass
class StartupFinished(Message):
    report: ReloadReport


@dataclass
class StartupFailed(Message):
    cause: str


@dataclass
class ReloadApplied(Message):
    """A save of the mesh file was applied (or its apply failed: see `report.ok`)."""

    report: ReloadReport


@dataclass
class KeyApplied(Message):
    """A demo key (the canary shift) applied a changed mesh through the control plane, with
    mesh.yaml untouched: a new config version, as a save makes one."""

    report: ReloadReport


@dataclass
class ReloadRejected(Message):
    """A save of the mesh file did not validate; the last good config keeps serving."""

    version: int
    errors: tuple[str, ...]


@dataclass
class CodeRolled(Message):
    """A save of a service's code rolled it (or replaced nothing: see `report.ok`)."""

    report: RollReport


@dataclass
class PodStates(Message):
    """What the runtime sees of the pods right now."""

    states: tuple[PodState, ...]


@dataclass
class ActionDone(Message):
    """A one-key action finished: what it did, in words."""

    text: str
    ok: bool = True


@dataclass
class WorkerFailed(Message):
    """A worker raised: the app keeps running and says what happened."""

    what: str
    error: str


@dataclass
class TornDown(Message):
    """The session was stopped (or left running with --keep): the app may exit."""

    text: str


# What the app hands its session controller, in the order it arrives: the session's own
# messages, and every worker's failure (some of the workers are the controller's).
SessionMessage: TypeAlias = (
    StartupLine
    | RetryStart
    | StartupFinished
    | StartupFailed
    | ReloadApplied
    | KeyApplied
    | ReloadRejected
    | CodeRolled
    | PodStates
    | TornDown
    | WorkerFailed
)
