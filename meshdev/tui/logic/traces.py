"""The Traces view's words and drawings, without Textual: a trace's line in the list, its
waterfall, why it failed (each response flag by the mesh.yaml field behind it, as the route
detail explains a route's), and which trace Enter on a failing route or event opens."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from rich.text import Text

from meshdev.config.model import Mesh
from meshdev.telemetry.aggregation.trace_store import ORDERS, Order, example_trace
from meshdev.telemetry.aggregation.traces import Span, Trace, TraceNode
from meshdev.telemetry.aggregation.view import Event, RouteStats
from meshdev.tui.logic import format as fmt
from meshdev.tui.logic.explain import Cause, explain

ORDER_TITLES = {
    "newest": "newest first",
    "slowest": "slowest first",
    "failed": "failed only, newest first",
}
BAR_WIDTH = 40
NAME_WIDTH = 34


def bar_width(box_width: int) -> int:
    """The waterfall's bar for a box this wide: what the name and the numbers leave (about 30
    cells after the bar), within 10..80."""
    return max(10, min(80, box_width - NAME_WIDTH - 1 - 30))


def next_order(order: Order) -> Order:
    return ORDERS[(ORDERS.index(order) + 1) % len(ORDERS)]


def clock(start_us: int) -> str:
    millis = int(start_us // 1000 % 1000)
    return time.strftime("%H:%M:%S", time.localtime(start_us / 1e6)) + f".{millis:03d}"


def ms(us: int) -> str:
    return fmt.ms(us / 1000)


def status_cell(trace: Trace) -> Text:
    status = str(trace.status) if trace.status is not None else fmt.DASH
    out = Text(status, style="bold red" if (trace.status or 0) >= 500 else "green")
    for flag in trace.flags:
        out.append(" ")
        out.append(flag, style="bold red" if flag != "DI" else "yellow")
    if trace.failed and not trace.flags and (trace.status or 0) < 500:
        out.append(" hop failed", style="yellow")
    return out


def services_path(trace: Trace) -> str:
    return f" {fmt.ARROW_RIGHT} ".join(trace.services) or "?"


def summary(trace: Trace) -> str:
    """One line: what, when, how long, through whom."""
    root = trace.route or "?"
    return (
        f"{root}  {services_path(trace)}  {ms(trace.duration_us)}  "
        f"{_n(trace.span_count, 'span')}, {_n(trace.hops, 'hop')}"
    )


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def destination(span: Span) -> str:
    """The service a span's request was for: a CLIENT span's cluster's service (`backend`
    for `backend.v1`); a SERVER span's own (its cluster is the app, `inbound|8080`)."""
    if span.kind == "CLIENT" and span.cluster:
        return span.cluster.split(".", 1)[0]
    return span.service


def span_label(span: Span) -> str:
    """`frontend out backend.v1` (frontend's sidecar calling a backend v1 pod), `backend in`
    (a backend pod's sidecar receiving a request)."""
    if span.kind == "CLIENT":
        return f"{span.service} out {span.cluster or span.name}".strip()
    if span.kind == "SERVER":
        return f"{span.service} in"
    return f"{span.service} {span.name}".strip()


def bar(offset_us: int, width_us: int, total_us: int, width: int = BAR_WIDTH) -> str:
    """The span's place in the trace as a bar of `width` cells: at least one cell wide, so a
    span of a few µs still shows where it was."""
    if total_us <= 0:
        return "#" + " " * (width - 1)
    left = min(width - 1, int(offset_us * width / total_us))
    length = max(1, round(width_us * width / total_us))
    length = min(length, width - left)
    return " " * left + "#" * length + " " * (width - left - length)


def waterfall(trace: Trace, width: int = BAR_WIDTH) -> Text:
    """Every span on a line: indented name, the bar, start offset, duration, status, flags."""
    out = Text()
    for row in trace.rows():
        s = row.span
        indent = "  " * min(row.depth, 8)
        name = f"{indent}{span_label(s)}"
        if len(name) > NAME_WIDTH:
            name = name[: NAME_WIDTH - 1] + "…"
        out.append(f"{name:<{NAME_WIDTH}} ", style="dim" if row.orphan else "")
        style = "bold red" if s.failed else "cyan"
        out.append(bar(row.offset_us, row.width_us, trace.duration_us, width), style=style)
        out.append(f" +{ms(row.offset_us):>7} {ms(s.duration_us):>7} ")
        status = str(s.status) if s.status is not None else fmt.DASH
        out.append(f"{status:>3}", style="bold red" if (s.status or 0) >= 500 else "green")
        if s.flags:
            out.append(" " + ",".join(s.flags), style="bold red")
        attempt = s.tags.get("retry.attempt", "")
        if attempt and attempt != "1":
            out.append(f" try {attempt}", style="yellow")
        if row.orphan:
            out.append(" (parent missing)", style="dim italic")
        out.append("\n")
    out.rstrip()
    return out


def causes(trace: Trace, mesh: Mesh | None) -> list[tuple[Span, Cause]]:
    """Each failed span's flags explained by mesh.yaml, once per (destination, route, flag);
    and where a 5xx came from when no proxy flagged it: the deepest span that has it (a
    SERVER span's app answered so; a CLIENT span's upstream did, untraced)."""
    seen: set[tuple[str, str, str]] = set()
    out: list[tuple[Span, Cause]] = []
    stack = list(reversed(trace.roots))
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))
        out.extend(_hidden_by_retries(node, mesh, seen))
        span = node.span
        if not span.failed:
            continue
        vhost = destination(span)
        flags = [f for f in span.flags if f != "DI"]
        for flag in flags:
            key = (vhost, span.route, flag)
            if key not in seen:
                seen.add(key)
                out.append((span, explain(mesh, vhost, span.route, flag)))
        status = span.status or 0
        if flags or status < 500 or any(c.span.failed for c in node.children):
            continue
        who = f"{span.service}'s app" if span.kind == "SERVER" else f"upstream {span.cluster}"
        key = (who, "", str(status))
        if key not in seen:
            seen.add(key)
            meaning = f"answered so by {who} itself (the mesh passed it on)"
            out.append((span, Cause("", str(status), meaning, ())))
    return out


RETRIED = "retried"


def _hidden_by_retries(
    node: TraceNode, mesh: Mesh | None, seen: set[tuple[str, str, str]]
) -> list[tuple[Span, Cause]]:
    """Tries of one request (CLIENT children of one span, to one destination and route) that
    failed before a later one succeeded: the caller never saw them, the route's retries hid
    them. Said once per destination and route, with the retry policy that did it."""
    tries: dict[tuple[str, str], list[Span]] = {}
    for child in node.children:
        if child.span.kind == "CLIENT":
            tries.setdefault((destination(child.span), child.span.route), []).append(child.span)
    out: list[tuple[Span, Cause]] = []
    for (vhost, route), spans in tries.items():
        failed = [s for s in spans if s.failed]
        last = spans[-1]  # children are in start order
        key = (vhost, route, RETRIED)
        if not failed or last.failed or key in seen:
            continue
        seen.add(key)
        fields = explain(mesh, vhost, route, "URX").fields
        n = len(failed)
        meaning = (
            f"{n} failed {'try was' if n == 1 else 'tries were'} retried; the caller got "
            f"{last.status if last.status is not None else 'an answer'} from the last"
        )
        status = str(failed[0].status) if failed[0].status is not None else "no answer"
        out.append((failed[0], Cause(RETRIED, status, meaning, fields)))
    return out


def detail_text(trace: Trace, mesh: Mesh | None, width: int = BAR_WIDTH) -> Text:
    out = Text()
    out.append(f"trace {trace.trace_id}", style="bold")
    out.append(f"  {clock(trace.start_us)}\n", style="dim")
    out.append(f"  {summary(trace)}   status ")
    out.append_text(status_cell(trace))
    out.append("\n")
    if trace.orphans:
        out.append(
            f"  {trace.orphans} span(s) whose parent never arrived are shown at the root\n",
            style="yellow",
        )
    if trace.truncated:
        out.append(f"  {trace.truncated} more spans were not kept\n", style="yellow")
    out.append("\n")
    out.append("Waterfall", style="bold underline")
    out.append("\n")
    out.append_text(waterfall(trace, width))
    out.append("\n\n")
    slowest = trace.slowest
    if slowest is not None:
        out.append("Slowest: ", style="bold")
        out.append(
            f"{span_label(slowest)}, {ms(trace.slowest_self_us)} of its own "
            f"(of {ms(trace.duration_us)} in all)\n\n"
        )
    out.append("Why it failed, and what in mesh.yaml causes it", style="bold underline")
    out.append("\n")
    found = causes(trace, mesh)
    for span, cause in found:
        where = span_label(span)
        out.append(f"  {where}: ", style="bold")
        if cause.flag == RETRIED:
            out.append(cause.headline(fmt.ARROW), style="bold yellow")
        elif cause.flag:
            out.append(cause.headline(fmt.ARROW), style="bold red")
        else:
            out.append(f"{cause.status} without a flag", style="bold red")
        out.append(f"\n      {cause.meaning}\n", style="italic")
        for extra in cause.fields[1:]:
            out.append(f"      also: {extra}\n", style="dim")
    if not found:
        out.append("  nothing failed", style="green")
    out.rstrip()
    return out


def trace_for_route(traces: Sequence[Trace], route: RouteStats) -> Trace | None:
    """Enter on a failing route: its newest failed trace, else its newest trace at all."""
    return example_trace(traces, route=route.route, service=route.vhost) or example_trace(
        traces, route=route.route, service=route.vhost, failed=False
    )


def trace_for_events(traces: Sequence[Trace], events: Iterable[Event]) -> Trace | None:
    """The newest failure event that names a cluster (a breaker, an ejection): the newest
    failed trace through that cluster."""
    for event in reversed(list(events)):
        if event.cluster:
            found = example_trace(traces, cluster=event.cluster)
            if found is not None:
                return found
    return None
