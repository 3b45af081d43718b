"""Trace context on the wire: W3C Trace Context and Zipkin's B3, read and written.

Read, in this order of trust (the first valid one wins; a malformed header is ignored as if it
were absent, never an error):
- W3C `traceparent` (`00-<trace 32 hex>-<parent 16 hex>-<flags 2 hex>`, sampled = flags & 1),
  with its `tracestate` passed on untouched;
- B3 single `b3` (`<trace>-<span>[-<sampled>[-<parent>]]`, or a lone decision `0`/`1`/`d`);
- B3 multi `x-b3-traceid`, `x-b3-spanid`, `x-b3-sampled` (`1`/`0`/`true`/`false`),
  `x-b3-flags: 1` (debug, which means sampled).
B3 trace ids may be 64 or 128 bits. A 128-bit id whose high half is zero is the same trace as
its 64-bit form (Zipkin treats them so), so ids are kept in the short form then: every hop
names the trace alike whichever header it read.

Written (upstream): `traceparent` (the trace id left-padded to 32 hex) and B3's single `b3`
header, two headers for both families; the B3 multi headers too when the caller sent them
(an app that copies only those keeps working); `tracestate` stays as it came.
"""

from __future__ import annotations

from typing import Final

# The names the proxy replaces going upstream (tracestate passes through as it came).
PROPAGATION_HEADERS: Final = frozenset(
    {
        "traceparent",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    }
)
_HEX: Final = frozenset("0123456789abcdef")
_ZERO16: Final = "0" * 16


class Incoming:
    """What a request's headers say of its trace: any of the fields may be missing."""

    __slots__ = ("b3_multi", "parent_id", "sampled", "trace_id")

    def __init__(
        self,
        trace_id: str | None,
        parent_id: str | None,
        sampled: bool | None,
        b3_multi: bool = False,
    ) -> None:
        self.trace_id = trace_id
        # The caller's span: the parent of the span this hop makes.
        self.parent_id = parent_id
        # The caller's sampling decision; None: none was made.
        self.sampled = sampled
        # The caller sent B3's multi headers (x-b3-*): they are written upstream too.
        self.b3_multi = b3_multi


# Propagation headers that say nothing valid: read as no context, but still to be replaced.
_NOTHING: Final = Incoming(None, None, None)


def _is_hex(value: str, *lengths: int) -> bool:
    return len(value) in lengths and _HEX.issuperset(value)


def _trace_id(value: str) -> str | None:
    """A valid B3/W3C trace id in its canonical form, or None."""
    value = value.lower()
    if not _is_hex(value, 16, 32) or not value.strip("0"):
        return None
    if len(value) == 32 and value.startswith(_ZERO16):
        return value[16:]
    return value


def _span_id(value: str) -> str | None:
    value = value.lower()
    if not _is_hex(value, 16) or value == _ZERO16:
        return None
    return value


def parse_traceparent(value: str) -> Incoming | None:
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace, parent, flags = parts[0], parts[1], parts[2], parts[3]
    if not _is_hex(version.lower(), 2) or version.lower() == "ff":
        return None
    # Version 00 has exactly four fields; a later version may append more (W3C: read the
    # four known ones).
    if version == "00" and len(parts) != 4:
        return None
    if len(trace) != 32 or not _is_hex(flags.lower(), 2):
        return None
    trace_id, span_id = _trace_id(trace), _span_id(parent)
    if trace_id is None or span_id is None:
        return None
    return Incoming(trace_id, span_id, bool(int(flags, 16) & 1))


def _b3_sampled(value: str) -> bool | None:
    value = value.strip().lower()
    if value in ("1", "d", "true"):
        return True
    if value in ("0", "false"):
        return False
    return None


def parse_b3_single(value: str) -> Incoming | None:
    parts = value.strip().split("-")
    if len(parts) == 1:
        sampled = _b3_sampled(parts[0])
        return None if sampled is None else Incoming(None, None, sampled)
    if len(parts) > 4:
        return None
    trace_id, span_id = _trace_id(parts[0]), _span_id(parts[1])
    if trace_id is None or span_id is None:
        return None
    sampled = None
    if len(parts) >= 3:
        sampled = _b3_sampled(parts[2])
        if sampled is None:
            return None
    if len(parts) == 4 and _span_id(parts[3]) is None:
        return None
    return Incoming(trace_id, span_id, sampled)


def extract(headers: list[tuple[str, str]]) -> Incoming | None:
    """The trace context of a request's headers (names lower-case): None when none of the
    propagation headers is there; all fields None when those there are all malformed."""
    # One set look-up per header (a loop, not a comprehension: that would make a function
    # object per call); a first hop's request has none of them.
    present: list[tuple[str, str]] | None = None
    for item in headers:
        if item[0] in PROPAGATION_HEADERS:
            if present is None:
                present = [item]
            else:
                present.append(item)
    if present is None:
        return None
    traceparent = b3 = b3_trace = b3_span = b3_sampled = b3_flags = None
    for k, v in present:
        if k == "traceparent":
            if traceparent is None:
                traceparent = v
        elif k == "b3":
            if b3 is None:
                b3 = v
        elif k == "x-b3-traceid":
            b3_trace = v
        elif k == "x-b3-spanid":
            b3_span = v
        elif k == "x-b3-sampled":
            b3_sampled = v
        elif k == "x-b3-flags":
            b3_flags = v
    multi = b3_trace is not None or b3_span is not None or b3_sampled is not None
    found = _read(traceparent, b3, b3_trace, b3_span, b3_sampled, b3_flags)
    if multi:
        if found is _NOTHING:
            return Incoming(None, None, None, True)
        found.b3_multi = True
    return found


def _read(
    traceparent: str | None,
    b3: str | None,
    b3_trace: str | None,
    b3_span: str | None,
    b3_sampled: str | None,
    b3_flags: str | None,
) -> Incoming:
    if traceparent is not None:
        found = parse_traceparent(traceparent)
        if found is not None:
            return found
    if b3 is not None:
        found = parse_b3_single(b3)
        if found is not None:
            return found
    if b3_trace is None and b3_sampled is None and b3_flags is None:
        return _NOTHING
    sampled = True if b3_flags is not None and b3_flags.strip() == "1" else None
    if sampled is None and b3_sampled is not None:
        sampled = _b3_sampled(b3_sampled)
    trace_id = _trace_id(b3_trace) if b3_trace is not None else None
    span_id = _span_id(b3_span) if b3_span is not None else None
    if trace_id is None or span_id is None:
        # Ids half given or malformed: only a decision, if any, is worth keeping.
        return _NOTHING if sampled is None else Incoming(None, None, sampled)
    return Incoming(trace_id, span_id, sampled)


def inject(
    out: list[tuple[str, str]],
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    *,
    b3_multi: bool = False,
) -> None:
    """Append the headers that carry a sampled span `span_id` of `trace_id` upstream (the
    caller has dropped the incoming ones: PROPAGATION_HEADERS)."""
    out.append(("traceparent", f"00-{trace_id:0>32}-{span_id}-01"))
    if parent_id is None:
        out.append(("b3", f"{trace_id}-{span_id}-1"))
    else:
        out.append(("b3", f"{trace_id}-{span_id}-1-{parent_id}"))
    if b3_multi:
        out.append(("x-b3-traceid", trace_id))
        out.append(("x-b3-spanid", span_id))
        if parent_id is not None:
            out.append(("x-b3-parentspanid", parent_id))
        out.append(("x-b3-sampled", "1"))


def without_propagation(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`headers` without the ones `inject` writes."""
    drop = PROPAGATION_HEADERS
    return [(k, v) for k, v in headers if k not in drop]
