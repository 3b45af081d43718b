"""`meshdev load`: run the load generator from the command line and print its result."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from contextlib import suppress

from meshdev.loadgen import (
    LoadGenerator,
    LoadResult,
    LoadSpec,
    LoadSpecError,
    format_result,
    progress_line,
)

EXIT_OK = 0  # every finished request got a 2xx or 3xx
# Some request did not: a 4xx (404 of a path the mesh does not route, 429 of a rate limit, 403
# of a policy), a 5xx, or no HTTP response at all (refused, reset, timeout, ...). Strict on
# purpose: a script or CI step asks "did the mesh serve this?"; a fault demo expects failures
# and reads the table, which says how many of each kind there were.
EXIT_FAILED_REQUESTS = 1
EXIT_USAGE = 2


def load_command(
    url: str,
    rps: float,
    duration: float,
    concurrency: int | None,
    path_mix: list[tuple[str, float]] | None,
    headers: list[tuple[str, str]],
    method: str,
    as_json: bool,
    progress: bool,
) -> int:
    """Run the load, print the table (or JSON) on stdout; the exit code says whether every
    request succeeded (2xx/3xx), and stderr which kinds did not."""
    try:
        spec = LoadSpec(
            url,
            rps=rps,
            duration=duration,
            concurrency=concurrency,
            paths=tuple(path_mix) if path_mix else None,
            headers=tuple(headers),
            method=method.upper(),
        )
    except LoadSpecError as exc:
        print(f"meshdev load: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from meshdev.common.loop import run

    result = run(_run(spec, progress and sys.stderr.isatty()))
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(format_result(result))
    outcomes = result.outcomes
    failed = outcomes.total - outcomes.ok
    if not failed:
        return EXIT_OK
    kinds = ", ".join(f"{count} {label}" for label, count in outcomes.failures())
    print(
        f"meshdev load: {failed} of {outcomes.total} requests got no 2xx/3xx ({kinds})",
        file=sys.stderr,
    )
    return EXIT_FAILED_REQUESTS


async def _run(spec: LoadSpec, show_progress: bool) -> LoadResult:
    gen = LoadGenerator(spec)
    gen.start()
    loop = asyncio.get_running_loop()
    stopping: asyncio.Task[LoadResult] | None = None

    def interrupt() -> None:
        # Ctrl-C ends the run early but still reports what was measured.
        nonlocal stopping
        if stopping is None:
            stopping = asyncio.create_task(gen.stop())

    with suppress(NotImplementedError):  # no signal handlers on Windows' loop
        loop.add_signal_handler(signal.SIGINT, interrupt)
    ticker = asyncio.create_task(_progress(gen)) if show_progress else None
    try:
        result = await gen.wait()
    finally:
        with suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
        if ticker is not None:
            ticker.cancel()
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
    return result


async def _progress(gen: LoadGenerator) -> None:
    previous = gen.snapshot()
    while True:
        await asyncio.sleep(1.0)
        current = gen.snapshot()
        sys.stderr.write("\r\x1b[K" + progress_line(previous, current))
        sys.stderr.flush()
        previous = current
