"""Dashboard budgets: <= 10% of one core streaming 20 routes at 4 Hz; key press to frame <= 50 ms.

    .venv/bin/python benchmarks/dashboard_cpu.py [--seconds 20] [--live] [--json]
    .venv/bin/python benchmarks/dashboard_cpu.py --live --live-only --sidecars 7 --sidecars 41

1. CPU: the dashboard runs as its own process in a real pseudo-terminal (160x50), fed by
   `SampleSource` (20 routes, 4 views a second, every view different), and everything it
   draws is read and discarded by this process as a terminal would. Its CPU time (user +
   system, from /proc) over `--seconds` after a warm-up, as a share of one core.
2. Key to frame, end to end: in the same process and terminal, a key is written to the pty
   and the clock stops when the frame it causes has been written back (a text only that
   frame contains: switching between the pods and events tabs).
3. With --live, 1 again fed by the real TelemetrySource streaming from 7 sidecars' admin
   servers (benchmarks/telemetry_aggregate.py's mesh: 20 routes, 15 clusters, 40 hosts),
   with the frame budget and without: the whole dashboard process, telemetry included.
   `--sidecars 41` streams from issue 15's 41-pod mesh instead (40 routes, 20 clusters, 40
   hosts); `--live-only` runs only this part, for each `--sidecars` in turn, with key ->
   frame (pods and traffic tabs) in the run that paints every view.
4. The reference for 1: the same, every view painted, with meshdev's tables switched to
   DataTable's own row and cell painting (`FastDataTable.fast = False`; cells still cached
   per version, as meshdev painted before tui/tables/fast.py); reported as our CPU / its CPU.
5. Key to frame, Pilot: in-process `run_test`, the time `pilot.press()` takes until the app
   is idle again (key handled, screen refreshed), with the same 4 Hz stream running.

Results go to stdout (and as JSON with --json); record them in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZE = (160, 50)
HZ = 4.0
ROUTES = 20
WARMUP_S = 5.0
# Text only the frame after the key contains (tab "2" shows pods, tab "3" the events log).
KEY_MARKERS = (("2", b"Services and pods"), ("3", b"max_pending_requests 5/5 reached"))
# The live mesh has no breaker event to show: between the pods and traffic tabs instead.
LIVE_KEY_MARKERS = (("2", b"Services and pods"), ("1", b"breaker state now"))


class Counted:
    """A view source that counts the views it hands on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tick = 0
        self.documents = 0  # stream documents the clients received (TelemetrySource only)

    @property
    def interval(self) -> float:
        return float(self.inner.interval)

    @interval.setter
    def interval(self, seconds: float) -> None:
        self.inner.interval = seconds

    @property
    def targets(self) -> Any:
        return self.inner.targets

    def set_targets(self, targets: Any) -> None:
        self.inner.set_targets(targets)

    async def run(self, on_view: Callable[[Any], None]) -> None:
        def counted(view: Any) -> None:
            self.tick += 1
            clients = getattr(self.inner, "clients", None)
            if clients is not None:
                self.documents = sum(c.snapshots for c in clients().values())
            on_view(view)

        await self.inner.run(counted)


def child(share: float, stats: str) -> None:
    """The dashboard alone, as `meshdev up` would show it, fed by synthetic views."""
    sys.path.insert(0, str(ROOT))
    from meshdev.testing.sample_views import SampleSource
    from meshdev.tui.app import MeshdevApp
    from meshdev.tui.controllers import WatchController
    from meshdev.tui.logic.pacer import FramePacer
    from meshdev.tui.tables.fast import FastDataTable

    if os.environ.get("BENCH_GENERIC_TABLES"):
        FastDataTable.fast = False  # the reference: Textual's DataTable paints every cell

    source: SampleSource | Counted
    if ports := os.environ.get("BENCH_LIVE_PORTS"):
        from meshdev.telemetry.io.source import TelemetrySource

        nodes = json.loads(Path(ports).read_text())
        targets = [(node, f"http://127.0.0.1:{port}") for node, port in nodes.items()]
        source = Counted(TelemetrySource(targets, interval=1 / HZ))
    else:
        source = SampleSource(hz=float(os.environ.get("BENCH_HZ", HZ)), routes=ROUTES)
    pacer = FramePacer(share=share)
    app = MeshdevApp(source, WatchController("benchmark"), pacer=pacer)
    if profile := os.environ.get("BENCH_PROFILE"):
        # Where the dashboard's time goes: `python -m pstats FILE` afterwards.
        import cProfile

        cProfile.runctx("app.run()", globals(), {"app": app}, profile)
    else:
        app.run()
    Path(stats).write_text(
        json.dumps(
            {
                "views": source.tick,
                "painted": app.painted,
                "deferred": pacer.deferred,
                "documents": getattr(source, "documents", None),
            }
        )
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class Terminal:
    """A pty with the dashboard on its other side; `drain` reads like a terminal would."""

    def __init__(self, share: float, stats: Path, env_extra: dict[str, str]) -> None:
        master, slave = os.openpty()
        cols, rows = SIZE
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
        env.update(env_extra)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", "--share", str(share), "--stats", str(stats)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.fd = master
        self.bytes = 0

    def drain(self, seconds: float, until: bytes | None = None) -> bool:
        """Read output for up to `seconds`; True as soon as `until` was seen (if given)."""
        deadline = time.perf_counter() + seconds
        tail = b""
        while (left := deadline - time.perf_counter()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return False
            self.bytes += len(data)
            if until is not None:
                tail = (tail + data)[-(len(until) + 65536) :]
                if until in tail:
                    return True
        return until is None

    def press(self, key: str) -> None:
        os.write(self.fd, key.encode())

    def close(self, timeout: float = 30.0) -> None:
        self.press("q")
        deadline = time.perf_counter() + timeout
        # Keep reading: a child blocked on a full pty could never get to its exit.
        while self.proc.poll() is None and time.perf_counter() < deadline:
            self.drain(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


def measure_terminal(
    seconds: float,
    presses: int,
    share: float,
    env: dict[str, str] | None = None,
    markers: tuple[tuple[str, bytes], ...] = KEY_MARKERS,
) -> dict[str, Any]:
    stats = Path(tempfile.mkdtemp()) / "stats.json"
    term = Terminal(share, stats, env or {})
    try:
        term.drain(WARMUP_S)
        cpu0, wall0, bytes0 = _cpu_seconds(term.proc.pid), time.perf_counter(), term.bytes
        term.drain(seconds)
        cpu1, wall1 = _cpu_seconds(term.proc.pid), time.perf_counter()
        written = term.bytes - bytes0
        latencies: list[float] = []
        missed = 0
        for i in range(presses):
            key, marker = markers[i % len(markers)]
            term.drain(0.1)  # let the previous frame finish
            t0 = time.perf_counter()
            term.press(key)
            if term.drain(2.0, until=marker):
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                missed += 1
    finally:
        term.close()
    frames = json.loads(stats.read_text()) if stats.exists() else {}
    return {
        "frame_budget_share": share,
        "views_received": frames.get("views"),
        "views_painted": frames.get("painted"),
        # Over the whole run, warm-up included: whether the served sidecars kept their pace.
        "documents_received": frames.get("documents"),
        "cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 2),
        "cpu_seconds": round(cpu1 - cpu0, 3),
        "wall_seconds": round(wall1 - wall0, 2),
        "terminal_kib_per_s": round(written / 1024 / (wall1 - wall0), 1),
        "key_to_frame_pty_ms": _summary(latencies),
        "key_presses_missed": missed,
    }


async def measure_pilot(presses: int) -> dict[str, Any]:
    """Key sent through Pilot -> the first frame the app paints after handling it."""
    from textual.screen import Screen

    from meshdev.testing.sample_views import SampleSource
    from meshdev.tui.app import MeshdevApp
    from meshdev.tui.controllers import WatchController
    from meshdev.tui.screens.help import HelpScreen

    app = MeshdevApp(SampleSource(hz=HZ, routes=ROUTES), WatchController())
    expect: list[Callable[[], bool]] = []
    painted = asyncio.Event()
    display = app._display

    # App._display is where every frame goes to the terminal (a no-op write in headless
    # mode, but the frame is composed): the first one after the key's effect is the answer.
    def timed_display(screen: Screen[Any], renderable: Any) -> None:
        display(screen, renderable)
        if expect and expect[0]():
            expect.clear()
            painted.set()

    app._display = timed_display  # type: ignore[method-assign]
    steps: list[tuple[str, Callable[[], bool]]] = [
        ("2", lambda: app.dashboard.tabs.active == "pods"),
        ("3", lambda: app.dashboard.tabs.active == "events"),
        ("1", lambda: app.dashboard.tabs.active == "traffic"),
        ("question_mark", lambda: isinstance(app.screen, HelpScreen)),
        ("escape", lambda: app.screen is app.dashboard),
    ]
    latencies: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(1.0)
        for i in range(presses):
            key, done = steps[i % len(steps)]
            painted.clear()
            expect[:] = [done]
            t0 = time.perf_counter()
            press = asyncio.create_task(pilot.press(key))
            await asyncio.wait_for(painted.wait(), timeout=5)
            latencies.append((time.perf_counter() - t0) * 1000)
            await press
            await pilot.pause(0.05)
    return {"key_to_frame_pilot_ms": _summary(latencies)}


_FRAMES = ("cpu_pct_of_one_core", "views_received", "views_painted", "documents_received")


def measure_live(
    seconds: float, share: float, sidecars: int, presses: int, profile: str | None = None
) -> dict[str, dict[str, Any]]:
    """The dashboard fed by TelemetrySource streaming from `sidecars` sidecars' real admin
    servers (telemetry_aggregate.py serves them from a process of its own, not counted here);
    key -> frame measured in the run that paints every view."""
    ports = Path(tempfile.mkdtemp()) / "ports.json"
    script = str(ROOT / "benchmarks" / "telemetry_aggregate.py")
    server = subprocess.Popen(
        [sys.executable, script, "--sidecars", str(sidecars), "--serve", str(ports)]
    )
    try:
        deadline = time.monotonic() + 30
        while not ports.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {"BENCH_LIVE_PORTS": str(ports)}
        runs = {"budget": (share, 0), "every view": (1.0, presses)}
        if profile:
            runs = {"every view": (1.0, presses)}
            env["BENCH_PROFILE"] = profile
        keep = (*_FRAMES, "key_to_frame_pty_ms", "key_presses_missed")
        return {
            name: {
                k: v
                for k, v in measure_terminal(seconds, n, s, env, LIVE_KEY_MARKERS).items()
                if k in keep
            }
            for name, (s, n) in runs.items()
        }
    finally:
        server.terminate()
        server.wait(10)


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 2),
        "p95": round(p95, 2),
        "max": round(ordered[-1], 2),
    }


def live_only(
    seconds: float,
    presses: int,
    sizes: list[int],
    as_json: bool,
    load_before: float,
    profile: str | None = None,
) -> None:
    """--live --live-only: each mesh size in turn, in one run (their ratio is one machine's)."""
    from meshdev.tui.logic.pacer import FramePacer

    result: dict[str, Any] = {"hz": HZ, "terminal": f"{SIZE[0]}x{SIZE[1]}"}
    for n in sizes:
        where = f"{profile}.{n}" if profile else None
        result[f"live_{n}"] = measure_live(seconds, FramePacer().share, n, presses, where)
    result["cores"] = os.cpu_count()
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for n in sizes:
        for name, run in result[f"live_{n}"].items():
            line = (
                f"{n} sidecars, live ({name}): {run['cpu_pct_of_one_core']}% of one core, "
                f"painting {run['views_painted']} of {run['views_received']} views "
                f"({run['documents_received']} stream documents)"
            )
            pty = run.get("key_to_frame_pty_ms", {})
            if pty.get("n"):
                line += f"; key -> frame p50 {pty['p50']} ms, p95 {pty['p95']} ms"
            print(line)
    print(f"  machine: {result['cores']} cores, load average {result['load_avg_1m']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--live",
        action="store_true",
        help="also: fed by the real TelemetrySource from served sidecars (see --sidecars)",
    )
    parser.add_argument(
        "--sidecars",
        type=int,
        choices=(7, 41),
        action="append",
        help="--live's mesh (telemetry_aggregate.py's): 7 (20 routes) or 41 (40 routes, "
        "issue 15's 20 services x 2 + ingress); repeatable, default 7",
    )
    parser.add_argument(
        "--live-only", action="store_true", help="skip the SampleSource runs and Pilot"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="with --live-only: cProfile the dashboard process of the every-view run into "
        "FILE.<sidecars> (cProfile's own cost inflates the CPU figures of that run)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--share", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--stats", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.share, args.stats)
        return
    load_before = os.getloadavg()[0]
    # The frame budget `meshdev up` uses.
    sys.path.insert(0, str(ROOT))
    from meshdev.tui.logic.pacer import FramePacer

    if args.live_only:
        live_only(
            args.seconds, args.presses, args.sidecars or [7], args.json, load_before, args.profile
        )
        return
    paced = measure_terminal(args.seconds, args.presses, share=FramePacer().share)
    # The same without the frame budget: every view painted, whatever it costs; and the
    # reference, painting every view with Textual's own DataTable painting.
    unpaced = measure_terminal(args.seconds, 0, share=1.0)
    generic = measure_terminal(args.seconds, 0, share=1.0, env={"BENCH_GENERIC_TABLES": "1"})
    ratio = unpaced["cpu_pct_of_one_core"] / generic["cpu_pct_of_one_core"]
    result = {
        "routes": ROUTES,
        "hz": HZ,
        "terminal": f"{SIZE[0]}x{SIZE[1]}",
        "cores": os.cpu_count(),
        "load_avg_1m": round(max(load_before, os.getloadavg()[0]), 2),
        **paced,
        "unpaced": {k: unpaced[k] for k in _FRAMES},
        "reference_datatable_unpaced": {k: generic[k] for k in _FRAMES},
        "unpaced_cpu_vs_reference": round(ratio, 2),
        **asyncio.run(measure_pilot(args.presses)),
    }
    if args.live:
        result["live"] = measure_live(args.seconds, FramePacer().share, 7, 0)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"dashboard, {ROUTES} routes at {HZ:g} Hz in a {result['terminal']} pty")
    print(
        f"  CPU: {result['cpu_pct_of_one_core']}% of one core (budget 10%), painting "
        f"{result['views_painted']} of {result['views_received']} views"
    )
    un = result["unpaced"]
    print(
        f"  CPU without the frame budget: {un['cpu_pct_of_one_core']}%, painting "
        f"{un['views_painted']} of {un['views_received']} views"
    )
    ref = result["reference_datatable_unpaced"]
    print(
        f"  reference, Textual's DataTable painting: {ref['cpu_pct_of_one_core']}%, painting "
        f"{ref['views_painted']} of {ref['views_received']} views "
        f"(ours: {result['unpaced_cpu_vs_reference']}x its CPU)"
    )
    pty = result["key_to_frame_pty_ms"]
    pilot = result["key_to_frame_pilot_ms"]
    print(f"  key -> frame (pty):   p50 {pty.get('p50')} ms, p95 {pty.get('p95')} ms (budget 50)")
    print(f"  key -> frame (Pilot): p50 {pilot.get('p50')} ms, p95 {pilot.get('p95')} ms")
    if "live" in result:
        for name, run in result["live"].items():
            print(
                f"  live telemetry ({name}): {run['cpu_pct_of_one_core']}% of one core, "
                f"painting {run['views_painted']} of {run['views_received']} views"
            )
    print(f"  machine: {result['cores']} cores, load average {result['load_avg_1m']}")


if __name__ == "__main__":
    main()
