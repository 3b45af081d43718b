"""The seams the dashboard is built against: where views come from, the session, and where
the Traces view's spans come from.

The real implementations are `meshdev.telemetry.io.source.TelemetrySource`,
`meshdev.session.Session` and `meshdev.telemetry.io.spans.SpanReader`; tests hand in
in-memory fakes that satisfy the same protocols, so every panel and action is exercised
without sidecars, processes or containers.

`ViewSource` and `OnView` are declared by telemetry, the lower package whose source implements
them, and only re-exported here so the dashboard finds both of its seams in one module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.text import Text

from meshdev.config.model import Mesh
from meshdev.control import ControlPlane, ReloadReport, RollReport
from meshdev.runtime.base import Runtime
from meshdev.telemetry.aggregation.trace_store import TraceStore
from meshdev.telemetry.io.source import OnView, ProxyTarget, ViewSource

__all__ = ["DemoKeys", "OnView", "SessionPort", "TraceFeed", "ViewSource"]


class DemoKeys(Protocol):
    """What the demo keys act on: `commands.Commands` (a session of this process), or
    `tui/remote_keys.RemoteKeys` (the session of a `meshdev up --web` in another process,
    through its web server). Each answers the sentence the dashboard shows, or raises
    `actions.ActionFailed` with one that says why nothing happened."""

    async def toggle_load(self) -> str: ...

    async def rate(self, direction: int) -> str:
        """One rung up (+1) or down (-1) the load's rate ladder."""

    async def trip_breaker(self) -> str: ...

    async def chaos(self, selected: str | None = None) -> str: ...

    async def plaintext(self, selected: str | None = None) -> str:
        """At the pod `selected` (the Security tab's cursor) when it takes mTLS, else at the
        first STRICT one."""

    async def unauthorized(self) -> str: ...

    async def fault(self, route_key: str | None) -> str: ...

    async def canary(self, prefer: Sequence[str] = ()) -> str: ...

    def load_text(self) -> Text:
        """The load bar: whether load runs, at what rate, to where, how it goes."""


class TraceFeed(Protocol):
    """Where the Traces view's spans come from: `meshdev.telemetry.io.spans.SpanReader`
    (every sidecar's /spans, polled), or a test's in-memory feed."""

    @property
    def store(self) -> TraceStore:
        """The traces kept so far (the feed adds to it; the view reads it)."""

    def outcomes(self) -> Mapping[str, int]:
        """How many sidecars answer /spans ("ok"), have none ("missing"), or fail ("error")."""

    async def run(
        self, targets: Callable[[], Sequence[ProxyTarget]], on_new: Callable[[], None]
    ) -> None:
        """Read the spans of `targets()` (the sidecars of the moment) into `store`, calling
        `on_new` when some arrived; returns only when cancelled."""


class SessionPort(Protocol):
    """What the dashboard uses of a `meshdev.session.Session`.

    Its progress lines (the session's and its control plane's) go where
    `Session.send_progress_to` points them: the dashboard's `UpController.say` (tui/launch.py).
    """

    # Read-only here: the dashboard never replaces any of them.
    @property
    def mesh(self) -> Mesh: ...

    @property
    def mesh_file(self) -> Path: ...

    @property
    def token(self) -> str: ...

    @property
    def watch(self) -> bool: ...

    @property
    def last_reload(self) -> dict[str, Any] | None: ...

    @property
    def control(self) -> ControlPlane: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def ingress_url(self) -> str | None: ...

    async def start(self) -> ReloadReport: ...

    async def follow_file(
        self, on_report: Callable[[ReloadReport], None] | None = None
    ) -> None: ...

    async def follow_code(self, on_roll: Callable[[RollReport], None] | None = None) -> None: ...

    async def leave(self) -> None:
        """`--keep`: stop what the session runs for the mesh, leaving the mesh running."""

    async def stop(self) -> list[str]: ...

    def record(self, report: ReloadReport, *, by_key: bool = False) -> None:
        """A change applied by other means than a save (`by_key`: the canary key) is the
        newest reload: `last_reload`, and the state file `meshdev status` and watchers read."""
