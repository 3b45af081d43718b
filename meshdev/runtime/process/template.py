"""The runtime's side of the sidecar template (meshdev/sidecar/template.py): start it, ask it to
fork sidecars and start apps, and follow their exits through it.

What the template starts is not this process's child, so its exit code reaches here only as
the template's message; a `ForkedProcess` stands in for asyncio's Process with what the runtime
uses of one (pid, returncode, wait). Should the template die first, its pods run on as
orphans: they are then watched by polling, and an exit seen that way has no code to report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from meshdev.runtime.base import RuntimeFailure
from meshdev.runtime.process import procscan
from meshdev.runtime.process.logtail import tail

ROLE = "sidecar-template"
# How often an orphan's liveness is checked once the template is gone.
_ORPHAN_POLL_S = 0.1


class StartRefused(OSError):
    """The template could not start what it was asked to (its program missing, say)."""


class ForkedProcess:
    """A sidecar the template forked: what the runtime reads of an asyncio Process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        # Set when it has ended, whether or not its code is known.
        self.finished = asyncio.Event()

    def _ended(self, returncode: int | None) -> None:
        self.returncode = returncode
        self.finished.set()

    async def wait(self) -> int | None:
        await self.finished.wait()
        return self.returncode


class SidecarTemplate:
    """One template process and the sidecars it forked."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._forked: dict[int, ForkedProcess] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="template")

    @classmethod
    async def start(
        cls, mesh: str, env: dict[str, str], cwd: Path, log: Path, room: int
    ) -> SidecarTemplate:
        """Start the template of `mesh`; it imports while the first requests queue in its pipe.
        `room`: bytes its command line and environment keep free for a sidecar's own (the
        sidecar's config path, its pod's labels), which are written over them."""
        env = {
            **env,
            procscan.ENV_MESH: mesh,
            procscan.ENV_ROLE: ROLE,
            "MESHDEV_TEMPLATE_ROOM": " " * room,
        }
        argv = [sys.executable, "-m", "meshdev.sidecar.template", "--mesh", mesh, " " * room]
        with log.open("ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=out,
                    start_new_session=True,  # out of the terminal's Ctrl-C, as the pods are
                )
            except OSError as exc:
                raise RuntimeFailure(f"cannot start the sidecar template: {exc}") from None
        return cls(proc, log)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and not self._reader.done()

    async def fork_sidecar(
        self, *, argv: list[str], env: dict[str, str], config: Path, log: Path, cwd: Path
    ) -> ForkedProcess:
        """A sidecar serving `config`, showing `argv` as its command line."""
        return await self._request(
            {"argv": argv, "env": env, "config": str(config), "log": str(log), "cwd": str(cwd)}
        )

    async def spawn(
        self, *, argv: list[str], env: dict[str, str], log: Path, cwd: Path
    ) -> ForkedProcess:
        """A program (a pod's app), as Popen starts one; OSError when it cannot be."""
        return await self._request({"exec": argv, "env": env, "log": str(log), "cwd": str(cwd)})

    async def _request(self, request: dict[str, Any]) -> ForkedProcess:
        assert self.proc.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        answer: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            self.proc.stdin.write(json.dumps({"id": request_id, **request}).encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            pass  # gone: the reader fails the answer with what its log says
        try:
            return await answer
        finally:
            self._pending.pop(request_id, None)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                self._dispatch(json.loads(line))
        finally:
            await self._lost()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exited" in message:
            forked = self._forked.pop(message["exited"], None)
            if forked is not None:
                forked._ended(message["returncode"])
            return
        answer = self._pending.get(message["id"])
        if answer is None or answer.done():
            return
        if "error" in message:
            answer.set_exception(StartRefused(message["error"]))
            return
        forked = ForkedProcess(message["pid"])
        self._forked[forked.pid] = forked
        answer.set_result(forked)

    async def _lost(self) -> None:
        """The template ended: fail what waits for it, and watch its orphans by polling."""
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
        lines = "\n".join(f"    {ln}" for ln in tail(self.log, 12)) or "    (no output)"
        why = RuntimeFailure(
            f"the sidecar template exited with code {self.proc.returncode}; last lines of its "
            f"log ({self.log}):\n{lines}"
        )
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(why)
        orphans = self._forked
        self._forked = {}
        while orphans:
            for pid in [pid for pid in orphans if not procscan.alive(pid)]:
                orphans.pop(pid)._ended(None)
            await asyncio.sleep(_ORPHAN_POLL_S)

    async def close(self) -> None:
        """Stop the template and wait for it; its sidecars must have been stopped before (the
        watch of orphans ends here)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # it exits at EOF
        await procscan.terminate([self.proc.pid], grace=2.0)
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
