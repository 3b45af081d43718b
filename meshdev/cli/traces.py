"""`meshdev traces`: the recent traces of a running mesh.

The mesh's `meshdev up` keeps them (observability/trace_history.py: every sidecar's spans,
read once a second), and serves them as a sidecar serves its ring; without a live `up` (a
mesh left running with `--keep`), every sidecar's own ring (GET /spans,
meshdev/common/trace_wire.py), which holds only its last few hundred spans, is read instead.
The spans are joined by trace id (telemetry/aggregation/traces.py) and printed as a table,
newest first, or JSON (the shape is documented in docs/traces.md and made by `trace_json`,
which the tests pin).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from meshdev.common import trace_wire as tw
from meshdev.telemetry.aggregation.trace_store import Order, TraceStore
from meshdev.telemetry.aggregation.traces import Trace
from meshdev.telemetry.io.source import ProxyTarget
from meshdev.telemetry.io.spans import NodeCursor, collect

DEFAULT_LIMIT = 20
# Said under a table read from the sidecars' rings: why it may be short.
RINGS_ONLY = (
    "(read from the sidecars' own rings, each its last 256 spans; the mesh's `meshdev up` "
    "keeps 500 traces while it runs)"
)
# Table columns that are cut to fit: the root route and the services path.
_ROUTE_WIDTH = 28
_PATH_WIDTH = 36


def gather(
    targets: Sequence[ProxyTarget], token: str | None = None
) -> tuple[TraceStore, dict[str, NodeCursor]]:
    """Every target's spans, read once (blocking: the CLI's event loop runs only for it);
    `token`: the targets are a session's trace history, which asks for it."""
    from meshdev.common.loop import run

    return run(collect(targets, token=token))


def clock_text(start_us: int) -> str:
    seconds = start_us / 1e6
    millis = int(start_us // 1000 % 1000)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


def ms_text(us: int) -> str:
    ms = us / 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def status_text(trace: Trace) -> str:
    status = str(trace.status) if trace.status is not None else "-"
    flags = ",".join(trace.flags)
    text = f"{status} {flags}" if flags else status
    if trace.failed and not flags and (trace.status or 0) < 500:
        text += " (a hop failed)"
    return text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(traces: Sequence[Trace]) -> str:
    header = ("TIME", "TRACE", "ROUTE", "SERVICES", "MS", "SPANS", "STATUS")
    rows = [
        (
            clock_text(t.start_us),
            t.trace_id[:12],
            _cut(t.route or "?", _ROUTE_WIDTH),
            _cut(" > ".join(t.services) or "?", _PATH_WIDTH),
            ms_text(t.duration_us),
            str(t.span_count),
            status_text(t),
        )
        for t in traces
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {4, 5}  # numbers
    lines = []
    for r in [header, *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def span_json(trace: Trace) -> list[dict[str, Any]]:
    out = []
    for row in trace.rows():
        s = row.span
        attempt = s.tags.get(tw.TAG_ATTEMPT, "")
        out.append(
            {
                "id": s.span_id,
                "parent_id": s.parent_id,
                "kind": s.kind or None,
                "service": s.service,
                "name": s.name,
                "node": s.node,
                "depth": row.depth,
                "orphan": row.orphan,
                "start_us": s.start_us,
                "offset_ms": row.offset_us / 1000,
                "duration_ms": s.duration_us / 1000,
                "self_ms": row.self_us / 1000,
                "status": s.status,
                "flags": list(s.flags),
                "failed": s.failed,
                "route": s.route or None,
                "cluster": s.cluster or None,
                "attempt": int(attempt) if attempt.isdigit() else None,
                "tags": dict(s.tags),
            }
        )
    return out


def trace_json(trace: Trace) -> dict[str, Any]:
    root = trace.root
    slowest = trace.slowest
    return {
        "trace_id": trace.trace_id,
        "start_us": trace.start_us,
        "start": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(trace.start_us / 1e6))
        + f".{trace.start_us % 1_000_000:06d}Z",
        "duration_ms": trace.duration_us / 1000,
        "root": {
            "service": root.service if root else None,
            "name": root.name if root else None,
            "route": trace.route or None,
        },
        "services": list(trace.services),
        "hops": trace.hops,
        "span_count": trace.span_count,
        "status": trace.status,
        "flags": list(trace.flags),
        "failed": trace.failed,
        "orphans": trace.orphans,
        "truncated": trace.truncated,
        "slowest": (
            {
                "id": slowest.span_id,
                "service": slowest.service,
                "name": slowest.name,
                "self_ms": trace.slowest_self_us / 1000,
            }
            if slowest is not None
            else None
        ),
        "spans": span_json(trace),
    }


def problems(outcomes: Mapping[str, NodeCursor]) -> list[str]:
    """One line per sidecar that did not answer (a missing /spans is said once, below)."""
    return [f"{node}: {c.error}" for node, c in outcomes.items() if c.outcome == "error"]


def empty_reason(outcomes: Mapping[str, NodeCursor], mesh_file: str, ingress: str | None) -> str:
    """Why there is nothing to show, and what to do about it."""
    answered = [n for n, c in outcomes.items() if c.outcome == "ok"]
    missing = [n for n, c in outcomes.items() if c.outcome == "missing"]
    if not outcomes:
        return f"no sidecar to ask: is `meshdev up {mesh_file}` running?"
    if not answered and not missing:
        return (
            f"no sidecar answered: is `meshdev up {mesh_file}` still running? "
            f"(`meshdev status {mesh_file}` tells)"
        )
    if not answered:
        return (
            "no sidecar of this mesh keeps spans (GET /spans answered 404): they run a "
            "meshdev older than tracing, or are Envoys that send spans to a collector"
        )
    where = ingress.rstrip("/") if ingress else "http://127.0.0.1:8000"
    return (
        "no traces yet: send a request through the mesh, e.g. "
        f"`curl {where}/` or `meshdev load {where}/ --rps 5 --duration 5s`; "
        "requests are traced as `tracing: {sampling: N}` in mesh.yaml says "
        "(a percent, 100 unless set)"
    )


def pick(store: TraceStore, *, slow: bool, failed: bool, limit: int) -> list[Trace]:
    order: Order = "slowest" if slow else "newest"
    return store.select(order, limit=limit, failed_only=failed)
