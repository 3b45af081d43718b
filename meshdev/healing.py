"""Pods heal themselves, as Kubernetes restarts a container (restartPolicy Always): what is
remembered of each pod across its restarts, and when the next restart may come.

Kubernetes' crash-loop backoff: the first restart at once (a single crash costs about a
second), then 10 s, doubling to 5 min between restarts of a pod that keeps crashing; a pod
that ran 10 minutes since its last start is forgiven, and its next crash restarts at once
again. Pure: the control plane (control.py) watches the runtime and acts on this.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

FIRST_BACKOFF = 10.0
MAX_BACKOFF = 300.0
# Running this long since its last start resets a pod's backoff.
FORGIVE_AFTER = 600.0

# A pod's state as `meshdev status` shows it (docs/status.md).
STARTING = "starting"
RUNNING = "running"
EXITED = "exited"
CRASH_LOOPING = "crash-looping"


def backoff(crashes: int) -> float:
    """The wait before restarting a pod after its `crashes`-th crash in a row (1-based)."""
    if crashes <= 1:
        return 0.0
    return float(min(FIRST_BACKOFF * 2.0 ** (crashes - 2), MAX_BACKOFF))


@dataclass(slots=True)
class PodHealth:
    """One pod of the plan (by its key), across its restarts."""

    restarts: int = 0
    exit_code: int | None = None
    last_exit: float | None = None  # wall-clock time of its last exit
    state: str = RUNNING
    # Crashes since it last ran FORGIVE_AFTER seconds: what its backoff grows with.
    crashes: int = 0
    started_at: float = field(default_factory=time.monotonic)
    next_try: float | None = None  # monotonic time of its next restart, while it waits
    liveness_failures: int = 0  # failed liveness probes in a row

    def exited(self, exit_code: int | None, now: float | None = None) -> float:
        """Record an exit; returns how long to wait before restarting it."""
        now = time.monotonic() if now is None else now
        if now - self.started_at >= FORGIVE_AFTER:
            self.crashes = 0
        self.crashes += 1
        self.exit_code = exit_code
        self.last_exit = time.time()
        delay = backoff(self.crashes)
        self.state = EXITED if delay == 0 else CRASH_LOOPING
        self.next_try = now + delay
        return delay

    def restarting(self, now: float | None = None) -> None:
        self.restarts += 1
        self.state = STARTING
        self.next_try = None
        self.started_at = time.monotonic() if now is None else now

    def running(self) -> None:
        self.state = RUNNING

    def describe(self, now: float | None = None) -> str:
        """In words, for status and the headless log: "crash-looping, exit 3, next try in 20 s"."""
        now = time.monotonic() if now is None else now
        if self.state == RUNNING:
            return ""
        words = [self.state]
        if self.exit_code is not None:
            words.append(f"exit {self.exit_code}")
        if self.next_try is not None:
            words.append(f"next try in {max(0, round(self.next_try - now))} s")
        return ", ".join(words)

    def to_json(self, now: float | None = None) -> dict[str, object]:
        now = time.monotonic() if now is None else now
        return {
            "state": self.state,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "last_exit": self.last_exit,
            "next_try_in": None
            if self.next_try is None
            else round(max(0.0, self.next_try - now), 1),
        }
