"""meshdev's load generator: open-loop constant-rate HTTP/1.1 load with HDR-style percentiles.

Python API::

    result = await run_load(LoadSpec("http://127.0.0.1:8000/", rps=200, duration=2.0))
    result.latency.quantile(0.99)                  # ms, from the intended send time

    gen = LoadGenerator(LoadSpec(url, rps=50))     # no duration: runs until stopped
    gen.start(); gen.set_rate(200); gen.pause(); gen.resume()
    gen.snapshot()                                 # a LoadResult, any time
    result = await gen.stop()

Request i is due at its intended time (t0 + i/rps at a constant rate) and its latency is
measured from then, so whatever delays it (a stalled target, the concurrency cap, a busy
generator) is in its latency. Latencies go into meshdev.common.histogram's log-linear
histogram (<= 1 % error); only requests that got an HTTP response are in them.

`LoadResult.to_json()`, printed by `meshdev load --json`, has this stable shape (version 1;
keys are only ever added). Times are milliseconds unless the key says `_s`; a latency value
is null when nothing was measured::

    {
      "version": 1,
      "url": "http://127.0.0.1:8000/", "method": "GET",
      "target_rps": 200.0,          # the rate asked for (the latest, if it was changed)
      "achieved_rps": 199.8,        # requests issued / time from the first due to the last issued
      "elapsed_s": 2.0012,          # first intended send -> last completion (or now, if running)
      "concurrency": 64,            # the cap on connections (= requests in flight)
      "running": false,
      "requests": 400,              # finished: responses + errors_total
      "responses": 398,             # got an HTTP response, whatever its status
      "errors_total": 2,
      "in_flight": 0, "queued": 0,  # non-zero only in snapshots of a running load
      "cancelled": 0,               # due but never sent because the load was stopped
      "retried": 0,                 # resent once: a reused keep-alive connection was stale
      "send_lag_ms": {"mean": 0.4, "max": 1.1},   # actual minus intended send time
      "latency_ms": {"p50": 1.02, "p90": 1.5, "p95": 1.8, "p99": 4.1, "p99.9": 5.0,
                     "max": 5.0, "mean": 1.1},    # from the intended send time
      "service_time_ms": {...same keys...},       # from the actual send time
      "status": {"200": 390, "503": 8},
      "response_flags": {"UO": 8},  # Envoy's: from x-envoy-response-flags, plus UO for
                                    # `x-envoy-overloaded: true` and RL for x-envoy-ratelimited
      "errors": {"connect_refused": 2},
      "paths": {                    # only with a path mix, else {}
        "/items": {"requests": 360, "responses": 360, "latency_ms": {...},
                   "status": {"200": 360}, "errors": {}}
      }
    }

Error kinds (requests that got no response): connect_refused, connect_timeout, connect_error
(any other failure to connect), reset (connection reset by the server), closed (the server
closed the connection before a full response), timeout (no full response within the spec's
timeout, 10 s by default), protocol (a malformed response).
"""

from meshdev.loadgen.engine import LoadGenerator, run_load
from meshdev.loadgen.outcomes import Outcomes, outcomes
from meshdev.loadgen.recorder import SliceResult
from meshdev.loadgen.report import format_result, progress_line
from meshdev.loadgen.result import LoadResult
from meshdev.loadgen.spec import LoadSpec, LoadSpecError, parse_header, parse_path_mix

__all__ = [
    "LoadGenerator",
    "LoadResult",
    "LoadSpec",
    "LoadSpecError",
    "Outcomes",
    "SliceResult",
    "format_result",
    "outcomes",
    "parse_header",
    "parse_path_mix",
    "progress_line",
    "run_load",
]
