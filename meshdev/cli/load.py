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

EXIT_OK = 0
EXIT_FAILED_REQUESTS = 1  # some request got no HTTP response (refused, reset, timeout, ...)
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
    """Run the load, print the table (or JSON) on stdout; the exit code says if all answered."""
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
    return EXIT_FAILED_REQUESTS if result.error_count else EXIT_OK


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
