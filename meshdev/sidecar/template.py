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

Protocol on stdin/stdout, one JSON object a line:

    -> {"id": 1, "argv": [...], "env": {...}, "config": PATH, "log": PATH, "cwd": PATH}
    <- {"id": 1, "pid": 1234}          or  {"id": 1, "error": "why"}
    <- {"exited": 1234, "returncode": -9}   (Popen's convention: -N for a death by signal N)

At EOF on stdin (the runtime that started it is gone) the template exits; the sidecars it
forked run on, found by their labels as any leftover.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

# Labels are written first, so a crowded environment loses other variables, never these.
_LABEL_PREFIX = "MESHDEV_"


def main() -> None:
    # What every sidecar runs, imported once here; uvloop too (serve() picks it at run time).
    from meshdev.sidecar.main import serve

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

    # Objects that live as long as the template are shared by every child: kept out of the
    # collector's generations, no collection in a child touches (and so copies) their pages.
    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    inbox = b""
    while True:
        try:
            readable, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            _reap()
        if 0 in readable:
            chunk = os.read(0, 65536)
            if not chunk:
                return
            inbox += chunk
            *lines, inbox = inbox.split(b"\n")
            for line in lines:
                if line.strip():
                    _handle(json.loads(line), serve, (wake_r, wake_w))


def _send(message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(1, data) :]


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)  # -N for signal N, as Popen.returncode
        _send({"exited": pid, "returncode": code})


def _handle(req: dict[str, Any], serve: Any, wake: tuple[int, int]) -> None:
    try:
        # Opened before the fork so that a bad path is an answer, not a child's silent death.
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        _send({"id": req["id"], "error": f"cannot open {req['log']}: {exc}"})
        return
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(log)
        _send({"id": req["id"], "error": f"fork: {exc}"})
        return
    if pid == 0:
        _child(req, log, serve, wake)  # never returns
    os.close(log)
    _send({"id": req["id"], "pid": pid})


def _child(req: dict[str, Any], log: int, serve: Any, wake: tuple[int, int]) -> None:
    code = 1
    try:
        os.setsid()  # its own session and group: stopping the pod stops what it forks
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in wake:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(req["cwd"])
        env: dict[str, str] = req["env"]
        os.environ.clear()
        os.environ.update(env)
        relabel(req["argv"], env)
        serve(req["config"], env.get("MESHDEV_ADMIN_TOKEN", ""))
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
