"""`meshdev up`'s session inside the dashboard: starting it, following mesh.yaml, tearing down.

Workers run the session's steps and post typed messages (messages.py); the handlers here
show them on the start-up screen, the reload banner, the header and the events panel.
"""

from __future__ import annotations

import gc
import re

from textual import on, work

from meshdev.control import ReloadReport
from meshdev.runtime.base import RuntimeFailure
from meshdev.tui.app_live import LiveApp
from meshdev.tui.messages import (
    ReloadApplied,
    ReloadRejected,
    RetryStart,
    StartupFailed,
    StartupFinished,
    StartupLine,
    TornDown,
)
from meshdev.tui.widgets.startup import StartupScreen

# Say-lines the typed reload messages already report; the events panel shows them once.
_REPORTED = re.compile(r"^(applied v\d+ |v\d+ failed: |.*: not applied, still serving |  )")


class SessionApp(LiveApp):
    def _startup_title(self) -> str:
        assert self.session is not None
        s = self.session
        return f"meshdev up: {s.mesh.name} ({s.mesh_file}) on the {s.runtime.kind} runtime"

    # -- starting ----------------------------------------------------------------------------

    @work(group="startup", exclusive=True, exit_on_error=False, description="meshdev up")
    async def _start_session(self) -> None:
        assert self.session is not None
        try:
            report = await self.session.start()
        except RuntimeFailure as exc:
            self.post_message(StartupFailed(str(exc)))
            return
        if report.ok:
            self.post_message(StartupFinished(report))
        else:
            self.post_message(StartupFailed(report.summary()))

    def say(self, line: str) -> None:
        """Where the session's progress lines go (thread-safe, like post_message)."""
        self.post_message(StartupLine(line))
        if self.session is not None:
            self._check_rejected()

    def _check_rejected(self) -> None:
        # Session.follow_file reports a rejected save through `say` and `last_reload`
        # (on_report only gets applied ones): a new last_reload without sidecar counts is one.
        assert self.session is not None
        last = self.session.last_reload
        if last is self._seen_reload:
            return
        self._seen_reload = last
        if last is not None and last.get("ok") is False and "sidecars" not in last:
            errors = tuple(str(e) for e in last.get("errors", ()))
            self.post_message(ReloadRejected(int(last.get("version", 0)), errors))

    @on(StartupLine)
    def _startup_line(self, message: StartupLine) -> None:
        if isinstance(self.screen, StartupScreen):
            self.screen.add_line(message.text)
        elif not _REPORTED.match(message.text):
            self._event("info", message.text)

    @on(StartupFailed)
    def _startup_failed(self, message: StartupFailed) -> None:
        if isinstance(self.screen, StartupScreen):
            self.screen.show_failure(message.cause)
        self._event("error", f"meshdev up failed: {message.cause}")

    @on(RetryStart)
    def _retry(self) -> None:
        self._start_session()

    @on(StartupFinished)
    def _startup_finished(self, message: StartupFinished) -> None:
        assert self.session is not None
        self.started = True
        self.dashboard.commands = self.commands
        if isinstance(self.screen, StartupScreen):
            self.pop_screen()
        self._reloaded(message.report.summary(), ok=True)
        self._set_targets()
        self._run_telemetry()
        if self.session.watch:
            self._follow()
        self.set_interval(self.pods_every, self._poll_pods)
        self._poll_pods()
        gc.freeze()  # as at start (app.py): the session's objects live as long as the app
        self._show_pods()

    # -- reloads -----------------------------------------------------------------------------

    @work(group="follow", exclusive=True, exit_on_error=False, description="following the file")
    async def _follow(self) -> None:
        assert self.session is not None

        def applied(report: ReloadReport) -> None:
            self.post_message(ReloadApplied(report))

        await self.session.follow_file(applied)

    @on(ReloadApplied)
    def _reload_applied(self, message: ReloadApplied) -> None:
        report = message.report
        if report.ok:
            self.dashboard.clear_banner()
            self.notify(report.summary(), title="mesh.yaml reloaded", timeout=4)
            self._set_targets()
            self._show_pods()
        else:
            self._show_banner(report.version, report.errors)
        self._reloaded(report.summary(), ok=report.ok)

    @on(ReloadRejected)
    def _reload_rejected(self, message: ReloadRejected) -> None:
        self._show_banner(message.version, message.errors)
        count = len(message.errors)
        errors = f"{count} error" + ("" if count == 1 else "s")
        self._reloaded(f"not applied ({errors})", ok=False, kind="rejected")
        for error in message.errors:
            self._event("rejected", error)

    def _show_banner(self, version: int, errors: tuple[str, ...]) -> None:
        assert self.session is not None
        self.dashboard.show_banner(self.session.mesh_file.name, version, errors)

    def _reloaded(self, text: str, *, ok: bool, kind: str = "reload") -> None:
        self.reload_text, self.reload_ok, self.reload_at = text, ok, self.clock()
        self.dashboard.show_facts(self._facts())
        self._event(kind if ok or kind != "reload" else "rejected", text)

    def _set_targets(self) -> None:
        if self.session is not None:
            pods = self.session.control.pods.values()
            self.source.set_targets([(p.name, p.started.admin_url) for p in pods])

    # -- tearing down ------------------------------------------------------------------------

    @work(group="teardown", exclusive=True, exit_on_error=False, description="tear down")
    async def _tear_down(self) -> None:
        assert self.session is not None
        if self.commands is not None:
            await self.commands.stop_load()
        if self.keep:
            where = self.session.mesh_file
            text = f"--keep: the mesh keeps running; `meshdev down {where}` removes it"
        else:
            removed = await self.session.stop()
            text = f"removed {len(removed)} processes/containers"
        self.torn_down = True
        self.post_message(TornDown(text))

    @on(TornDown)
    def _torn_down(self, message: TornDown) -> None:
        self.exit_text = message.text
        # Quitting after a failed start is still a failed `meshdev up`.
        code = 0 if self.started else 1
        self.exit(code, return_code=code, message=message.text)
