"""The header: which mesh, which file, which config version, and how the last reload went;
plus the red banner of a rejected save (of the mesh file, or of a service's code that did not
roll out), which stays until a save applies."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from meshdev.telemetry.aggregation.view import MeshView


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    mesh: str
    file: str
    runtime: str
    version: int
    ingress: str | None
    reload: str  # the last reload's summary, or what is happening now
    reload_ok: bool = True
    reload_at: float | None = None
    stale: int = 0  # sidecars whose numbers are old
    sidecars: int = 0


def header_facts(
    view: MeshView | None,
    *,
    mesh: str,
    reload: str,
    file: str = "",
    runtime: str = "",
    version: int = 0,
    ingress: str | None = None,
    reload_ok: bool = True,
    reload_at: float | None = None,
) -> HeaderFacts:
    """What the session controller knows (the mesh, the last reload), with the view's count
    of live sidecars. Watching proxies there is no file, runtime or config version."""
    sidecars = view.sidecars if view is not None else ()
    stale = sum(1 for s in sidecars if s.stale or not s.connected)
    return HeaderFacts(
        mesh=mesh,
        file=file,
        runtime=runtime,
        version=version,
        ingress=ingress,
        reload=reload,
        reload_ok=reload_ok,
        reload_at=reload_at,
        stale=stale,
        sidecars=len(sidecars),
    )


def header_text(facts: HeaderFacts) -> Text:
    """Two lines, most important first, each cut with an ellipsis rather than wrapped."""
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(" meshdev ", style="bold reverse")
    line.append(f" {facts.mesh}", style="bold")
    if facts.file:  # watching proxies (`meshdev watch`): no mesh file, no config version
        line.append(f"  v{facts.version}", style="bold cyan")
    if facts.sidecars:
        live = facts.sidecars - facts.stale
        style = "green" if not facts.stale else "bold yellow"
        line.append(f"  sidecars {live}/{facts.sidecars} live", style=style)
    if facts.runtime:
        line.append(f"  {facts.runtime}", style="dim")
    if facts.ingress:
        line.append(f"  {facts.ingress}", style="underline")
    line.append("\n")
    line.append(" reload: ", style="dim")
    line.append(facts.reload, style="green" if facts.reload_ok else "bold red")
    if facts.reload_at is not None:
        line.append(time.strftime(" at %H:%M:%S", time.localtime(facts.reload_at)), style="dim")
    if facts.file:
        line.append(f"  {facts.file}", style="dim")
    return line


class MeshHeader(Static):
    def __init__(self, facts: HeaderFacts, *, id: str | None = None) -> None:
        super().__init__(header_text(facts), id=id)
        self.facts = facts

    def set_facts(self, facts: HeaderFacts) -> None:
        if facts != self.facts:
            self.facts = facts
            # Its height is fixed by the stylesheet: no layout pass for a new text.
            self.update(header_text(facts), layout=False)


# ReloadBanner.about for the mesh file's own errors (a service name is a DNS label: no clash).
MESH_FILE = "mesh file"


def banner_text(file: str, version: int, errors: Sequence[str]) -> Text:
    return _banner(f"{file} not applied; still serving v{version}. Fix and save:", errors)


def roll_banner_text(service: str, errors: Sequence[str]) -> Text:
    return _banner(
        f"{service}'s new code not rolled out; its old pods keep serving. Fix and save:", errors
    )


def _banner(headline: str, errors: Sequence[str]) -> Text:
    text = Text(f" {headline}\n", style="bold")
    for error in errors:
        text.append(f"   {error}\n")
    text.rstrip()
    return text


class ReloadBanner(Static):
    """Hidden while the last save applied; red, with the located errors, while it did not."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.errors: tuple[str, ...] = ()
        # What it tells of: MESH_FILE, or the service whose code did not roll out. The last
        # failure shows; a success clears only its own.
        self.about: str | None = None
        self.display = False

    def show_errors(self, file: str, version: int, errors: Sequence[str]) -> None:
        self._show(MESH_FILE, errors, banner_text(file, version, errors))

    def show_roll_failure(self, service: str, errors: Sequence[str]) -> None:
        self._show(service, errors, roll_banner_text(service, errors))

    def _show(self, about: str, errors: Sequence[str], text: Text) -> None:
        self.errors = tuple(errors)
        self.about = about
        self.update(text)
        self.display = True

    def clear(self, about: str = MESH_FILE) -> None:
        if self.about not in (None, about):
            return
        self.errors = ()
        self.about = None
        self.display = False
