"""The sidecar template: one pre-imported process per mesh that forks its sidecars.

Every sidecar runs the same program. Started as `python -m meshdev sidecar`, each spends ~0.4 s
of CPU importing it (pydantic's models alone ~0.13 s) and keeps ~27 MB of its own; twenty of
them starting at once queue for the machine's cores. The template imports it once, moves the
heap out of the collector's reach (gc.freeze, so that no collection writes to the shared pages)
and forks one sidecar per request: the child serves within milliseconds and shares the
interpreter and the imported code copy-on-write with the template and its siblings.

From outside a forked sidecar looks as an exec'd one does (procscan.py and `meshdev down`
rely on it): it leads its own session and process group, its output goes to its pod's log, the
environment it is given is written over the template's own in /proc/PID/environ (the labels
are what `down` and `status` read), and its command line over the template's (`-m meshdev
sidecar --config FILE`, as exec'd; room for it is the template's last, blank, argument).

The template starts the pods' apps too (fork, then exec of the app's command), so that the
control plane never forks: its event loop (uvloop's spawn) waits for each child to exec, which
on a busy machine held it for ~45 ms per app. Whether the exec succeeded comes back on a pipe
that closes at exec, without the template waiting for it.

Protocol on stdin/stdout, one JSON object a line:

    -> {"id": 1, "argv": [...], "env": {...}, "config": PATH, "log": PATH, "cwd": PATH}
    -> {"id": 2, "exec": [...], "env": {...}, "log": PATH, "cwd": PATH}
    <- {"id": 1, "pid": 1234}          or  {"id": 1, "error": "why"}
    <- {"exited": 1234, "returncode": -9}   (Popen's convention: -N for a death by signal N)

At EOF on stdin (the runtime that started it is gone) the template exits; the pods it
started run on, found by their labels as any leftover. At SIGTERM (`down` stops the template
with the pods) it waits up to 3 s for its pods to end, so that their exit codes still arrive.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Labels are written first, so a crowded environment loses other variables, never these.
_LABEL_PREFIX = "MESHDEV_"
# What Python ignores and an exec'd program expects at its default (Popen's restore_signals).
_RESTORED_SIGNALS = ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
# A child that could not exec its program (after writing why on its error pipe).
_EXEC_FAILED = 127
# How long a SIGTERM'd template waits for its pods to end (`down` stops them at the same time)
# so that their exit codes still reach the runtime; after that it goes, and they are orphans.
_STOP_WAIT_S = 3.0


def main() -> None:
    # Its arguments (`--mesh NAME` and a blank one) are not read: they are for `ps`, and room
    # for the command lines its sidecars write over them.
    # What every sidecar runs, imported once here; uvloop too (serve() picks it at run time),
    # and what a sidecar would import lazily on its first bind (the idna codec).
    from meshdev.sidecar.main import serve

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401
    import encodings.ascii
    import encodings.idna  # noqa: F401

    # Objects that live as long as the template are shared by every child: kept out of the
    # collector's generations, no collection in a child touches (and so copies) their pages.
    gc.collect()
    gc.freeze()
    with contextlib.suppress(BrokenPipeError):  # the runtime went away mid-answer: as at EOF
        _Template(serve).run()


class _Template:
    def __init__(self, serve: Callable[[str, str], None]) -> None:
        self.serve = serve
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        # Programs being exec'd: their error pipe -> (request id, pid, what it said so far).
        self.starting: dict[int, tuple[int, int, bytes]] = {}
        # Exits of those, held until their start is answered (an answer comes first).
        self.early_exits: dict[int, int] = {}
        self.children: set[int] = set()
        # When SIGTERM came: from then on it starts nothing and waits for its children.
        self.stop_by: float | None = None

    def _on_sigterm(self, *_: object) -> None:
        if self.stop_by is None:
            self.stop_by = time.monotonic() + _STOP_WAIT_S

    def run(self) -> None:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        inbox = b""
        while True:
            wait = None
            if self.stop_by is not None:
                wait = self.stop_by - time.monotonic()
                if not self.children or wait <= 0:
                    return
            try:
                readable, _, _ = select.select([0, self.wake_r, *self.starting], [], [], wait)
            except InterruptedError:
                continue
            for fd in readable:
                if fd in self.starting:
                    self._exec_progress(fd)
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self._reap()
            if 0 in readable:
                chunk = os.read(0, 65536)
                if not chunk:
                    return
                inbox += chunk
                *lines, inbox = inbox.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._handle(json.loads(line))

    def _reap(self) -> None:
        starting = {pid for _, pid, _ in self.starting.values()}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)  # -N for signal N, as Popen.returncode
            self.children.discard(pid)
            if pid in starting:
                self.early_exits[pid] = code
            else:
                _send({"exited": pid, "returncode": code})

    def _exec_progress(self, fd: int) -> None:
        """The error pipe of a program being exec'd: closed empty when the exec succeeded,
        or the reason it failed."""
        request_id, pid, said = self.starting[fd]
        chunk = os.read(fd, 4096)
        if chunk:
            self.starting[fd] = (request_id, pid, said + chunk)
            return
        del self.starting[fd]
        os.close(fd)
        if said:
            self.early_exits.pop(pid, None)  # a start that failed has no exit to report
            _send({"id": request_id, "error": said.decode(errors="replace")})
            return
        _send({"id": request_id, "pid": pid})
        if pid in self.early_exits:
            _send({"exited": pid, "returncode": self.early_exits.pop(pid)})

    def _handle(self, req: dict[str, Any]) -> None:
        if self.stop_by is not None:
            _send({"id": req["id"], "error": "the sidecar template is stopping"})
            return
        try:
            # Opened before the fork so that a bad path is an answer, not a silent death.
            log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            _send({"id": req["id"], "error": f"cannot open {req['log']}: {exc}"})
            return
        errors_r, errors_w = os.pipe2(os.O_CLOEXEC) if "exec" in req else (-1, -1)
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (log, errors_r, errors_w):
                if fd >= 0:
                    os.close(fd)
            _send({"id": req["id"], "error": f"fork: {exc}"})
            return
        if pid == 0:
            if "exec" in req:
                self._exec_child(req, log, errors_w)  # never returns
            self._sidecar_child(req, log)  # never returns
        os.close(log)
        self.children.add(pid)
        if "exec" in req:
            os.close(errors_w)
            self.starting[errors_r] = (req["id"], pid, b"")
        else:
            _send({"id": req["id"], "pid": pid})

    def _become_pod_process(self, req: dict[str, Any], log: int, keep: int = -1) -> None:
        """In a child: its own session, the signals and files a fresh process has, its
        output to its log, its folder."""
        os.setsid()  # its own session and group: stopping the pod stops what it forks
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # Nothing of the template's (its pipes, other children's) leaks into a pod.
        if keep >= 0:
            os.closerange(3, keep)
            os.closerange(keep + 1, _max_fd())
        else:
            os.closerange(3, _max_fd())
        os.chdir(req["cwd"])

    def _sidecar_child(self, req: dict[str, Any], log: int) -> None:
        code = 1
        try:
            self._become_pod_process(req, log)
            env: dict[str, str] = req["env"]
            os.environ.clear()
            os.environ.update(env)
            relabel(req["argv"], env)
            self.serve(req["config"], env.get("MESHDEV_ADMIN_TOKEN", ""))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _exec_child(self, req: dict[str, Any], log: int, errors: int) -> None:
        try:
            self._become_pod_process(req, log, keep=errors)
            for name in _RESTORED_SIGNALS:
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            argv: list[str] = req["exec"]
            os.execvpe(argv[0], argv, req["env"])
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(errors, str(exc).encode() or type(exc).__name__.encode())
        os._exit(_EXEC_FAILED)


def _send(message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(1, data) :]


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 1024


def relabel(argv: list[str], env: dict[str, str]) -> None:
    """Write `argv` and `env` over this process's command line and environment as /proc shows
    them (/proc/PID/cmdline and /proc/PID/environ read those memory areas, which a forked child
    inherits from its parent unchanged). Each area keeps its size: what does not fit is left
    out (labels come first), and the rest is zeros.

    The C library's environ still points into that area: it is rebuilt first (os.environ's
    putenv copies each variable), so getenv() in C code never reads the overwritten bytes."""
    for key, value in env.items():
        os.putenv(key, value)  # every entry moved to the heap, even unchanged ones
    text = Path("/proc/self/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()
    arg_start, arg_end, env_start, env_end = (int(f) for f in fields[45:49])
    # The kernel shows the whole area when its last byte is zero: empty arguments at the end
    # are what `ps` shows as trailing blanks.
    args = b"".join(a.encode() + b"\0" for a in argv)
    items = sorted(env.items(), key=lambda kv: not kv[0].startswith(_LABEL_PREFIX))
    environ = b""
    for key, value in items:
        entry = f"{key}={value}".encode() + b"\0"
        if len(environ) + len(entry) <= env_end - env_start:
            environ += entry
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        if len(args) <= arg_end - arg_start:
            mem.seek(arg_start)
            mem.write(args.ljust(arg_end - arg_start, b"\0"))
        mem.seek(env_start)
        mem.write(environ.ljust(env_end - env_start, b"\0"))


if __name__ == "__main__":
    main()
