"""The security tab: how the mesh is secured (or how to secure it) in a line, who calls whom,
and each pod's inbound side. Painted only while the tab shows (as the pods tab): the app
hands it the newest view when it is switched to, and each new view while it stays."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.tui.logic.recent import RecentFailures
from meshdev.tui.logic.security import notice, secured
from meshdev.tui.tables.security import EdgesTable, PodSecurityTable, has_security


class SecurityView(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._notice = Text()

    def compose(self) -> ComposeResult:
        yield Static("", id="security-notice")
        yield EdgesTable(id="edges")
        yield PodSecurityTable(id="pod-security")

    @property
    def edges(self) -> EdgesTable:
        return self.query_one("#edges", EdgesTable)

    @property
    def pods(self) -> PodSecurityTable:
        return self.query_one("#pod-security", PodSecurityTable)

    @property
    def notice_text(self) -> str:
        return self._notice.plain

    def show(self, view: MeshView, mesh: Mesh | None, recent: RecentFailures | None = None) -> None:
        line = notice(mesh, view.edges, view.pod_security)
        if line.plain != self._notice.plain:
            self._notice = line
            self.query_one("#security-notice", Static).update(line)
        self.edges.show(view.edges, mesh, secured=secured(mesh, view.edges), recent=recent)
        pods = self.pods
        # A plaintext mesh without policies has nothing per pod: the notice says why.
        pods.display = has_security(view.pod_security)
        if pods.display:
            ttl = mesh.security.cert_ttl if mesh is not None and mesh.security else None
            pods.show(view.pod_security, ttl)
