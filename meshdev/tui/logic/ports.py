"""The two seams the dashboard is built against: where views come from, and the session.

The real implementations are `meshdev.telemetry.io.source.TelemetrySource` and
`meshdev.session.Session`; tests hand in in-memory fakes that satisfy the same protocols, so
every panel and action is exercised without sidecars, processes or containers.

`ViewSource` and `OnView` are declared by telemetry, the lower package whose source implements
them, and only re-exported here so the dashboard finds both of its seams in one module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from meshdev.config.model import Mesh
from meshdev.control import ControlPlane, ReloadReport, RollReport
from meshdev.runtime.base import Runtime
from meshdev.telemetry.io.source import OnView, ViewSource

__all__ = ["OnView", "SessionPort", "ViewSource"]


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

    async def stop(self) -> list[str]: ...
