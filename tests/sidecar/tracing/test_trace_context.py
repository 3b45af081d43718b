"""Trace context on the wire: W3C traceparent, B3 single and multi, read and written; what is
malformed is ignored, never an error."""

from __future__ import annotations

import random

import pytest

from meshdev.sidecar.tracing.context import (
    PROPAGATION_HEADERS,
    extract,
    inject,
    without_propagation,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


def test_traceparent_gives_trace_parent_and_decision() -> None:
    got = extract([("traceparent", f"00-{TRACE}-{SPAN}-01")])
    assert got is not None
    assert (got.trace_id, got.parent_id, got.sampled, got.b3_multi) == (TRACE, SPAN, True, False)
    off = extract([("traceparent", f"00-{TRACE}-{SPAN}-00")])
    assert off is not None and off.sampled is False


def test_traceparent_of_a_later_version_reads_its_four_known_fields() -> None:
    got = extract([("traceparent", f"01-{TRACE}-{SPAN}-03-whatever")])
    assert got is not None and got.trace_id == TRACE and got.sampled is True


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{TRACE}-{SPAN}",  # no flags
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has four fields exactly
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent
        f"00-{TRACE[:-1]}g-{SPAN}-01",  # not hex
        f"00-{TRACE[:16]}-{SPAN}-01",  # W3C trace ids are 32 digits
        f"00-{TRACE}-{SPAN}-zz",
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    got = extract([("traceparent", value)])
    # Nothing is read from it, but it is there (to be replaced going upstream).
    assert got is not None
    assert (got.trace_id, got.parent_id, got.sampled) == (None, None, None)


def test_a_malformed_traceparent_falls_back_to_b3() -> None:
    got = extract([("traceparent", "nonsense"), ("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)])
    assert got is not None and got.trace_id == TRACE and got.sampled is None


def test_traceparent_wins_over_b3() -> None:
    other = "a" * 32
    got = extract([("b3", f"{other}-{SPAN}-0"), ("traceparent", f"00-{TRACE}-{SPAN}-01")])
    assert got is not None and got.trace_id == TRACE and got.sampled is True


@pytest.mark.parametrize(
    ("value", "sampled", "parent"),
    [
        (f"{TRACE}-{SPAN}", None, SPAN),
        (f"{TRACE}-{SPAN}-1", True, SPAN),
        (f"{TRACE}-{SPAN}-d", True, SPAN),
        (f"{TRACE}-{SPAN}-0", False, SPAN),
        (f"{TRACE}-{SPAN}-1-{'1' * 16}", True, SPAN),
    ],
)
def test_b3_single(value: str, sampled: bool | None, parent: str) -> None:
    got = extract([("b3", value)])
    assert got is not None
    assert (got.trace_id, got.parent_id, got.sampled, got.b3_multi) == (
        TRACE,
        parent,
        sampled,
        False,
    )


def test_b3_single_decision_only() -> None:
    for value, sampled in (("0", False), ("1", True), ("d", True)):
        got = extract([("b3", value)])
        assert got is not None and got.trace_id is None and got.sampled is sampled


@pytest.mark.parametrize(
    "value",
    ["x", f"{TRACE}", f"{TRACE}-{SPAN}-7", f"{TRACE}-zz", f"{TRACE}-{SPAN}-1-bad", "a-b-c-d-e"],
)
def test_a_malformed_b3_single_is_ignored(value: str) -> None:
    got = extract([("b3", value)])
    assert got is not None
    assert (got.trace_id, got.parent_id, got.sampled) == (None, None, None)


def test_b3_multi() -> None:
    got = extract([("x-b3-traceid", TRACE.upper()), ("x-b3-spanid", SPAN), ("x-b3-sampled", "1")])
    assert got is not None and (got.trace_id, got.parent_id, got.sampled) == (TRACE, SPAN, True)
    for value, sampled in (("0", False), ("true", True), ("false", False), ("maybe", None)):
        got = extract([("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", value)])
        assert got is not None and got.sampled is sampled


def test_b3_debug_flag_means_sampled() -> None:
    got = extract(
        [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "0"), ("x-b3-flags", "1")]
    )
    assert got is not None and got.sampled is True


def test_b3_multi_with_half_the_ids_keeps_only_the_decision() -> None:
    got = extract([("x-b3-traceid", TRACE), ("x-b3-sampled", "0")])
    assert got is not None and got.trace_id is None and got.sampled is False
    for headers in ([("x-b3-traceid", TRACE)], [("x-b3-traceid", "x"), ("x-b3-spanid", SPAN)]):
        got = extract(headers)
        assert got is not None and got.trace_id is None and got.sampled is None


def test_64_bit_trace_ids_stay_64_bit_whichever_header_carries_them() -> None:
    short = "a3ce929d0e0e4736"
    via_b3 = extract([("x-b3-traceid", short), ("x-b3-spanid", SPAN)])
    via_w3c = extract([("traceparent", f"00-{'0' * 16}{short}-{SPAN}-01")])
    assert via_b3 is not None and via_w3c is not None
    assert via_b3.trace_id == via_w3c.trace_id == short


def test_no_context_at_all() -> None:
    assert extract([]) is None
    assert extract([("host", "x"), ("tracestate", "a=b"), ("x-request-id", "r")]) is None
    # A stray parent id alone says nothing, but is still there to be replaced.
    got = extract([("x-b3-parentspanid", SPAN)])
    assert got is not None and (got.trace_id, got.sampled) == (None, None)


def test_random_headers_never_crash_the_parser() -> None:
    rng = random.Random(7)
    names = ["traceparent", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags"]
    alphabet = "0123456789abcdefABCDEF-xz \t"
    for _ in range(3000):
        headers = [
            (rng.choice(names), "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 70))))
            for _ in range(rng.randint(0, 4))
        ]
        got = extract(headers)
        if got is not None and got.trace_id is not None:
            assert len(got.trace_id) in (16, 32) and got.parent_id is not None


def test_inject_writes_w3c_and_b3_single() -> None:
    out: list[tuple[str, str]] = []
    inject(out, TRACE, SPAN, "1111111111111111")
    assert out == [
        ("traceparent", f"00-{TRACE}-{SPAN}-01"),
        ("b3", f"{TRACE}-{SPAN}-1-1111111111111111"),
    ]


def test_inject_writes_b3_multi_when_the_caller_used_it_and_pads_short_ids() -> None:
    out: list[tuple[str, str]] = []
    inject(out, "a3ce929d0e0e4736", SPAN, None, b3_multi=True)
    assert dict(out) == {
        "traceparent": f"00-{'0' * 16}a3ce929d0e0e4736-{SPAN}-01",
        "b3": f"a3ce929d0e0e4736-{SPAN}-1",
        "x-b3-traceid": "a3ce929d0e0e4736",
        "x-b3-spanid": SPAN,
        "x-b3-sampled": "1",
    }


def test_the_callers_b3_multi_headers_are_noticed() -> None:
    for headers in (
        [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)],
        [("traceparent", f"00-{TRACE}-{SPAN}-01"), ("x-b3-sampled", "1")],
        [("x-b3-spanid", "bad")],
    ):
        got = extract(headers)
        assert got is not None and got.b3_multi
    got = extract([("b3", f"{TRACE}-{SPAN}-1")])
    assert got is not None and not got.b3_multi


def test_what_inject_writes_reads_back() -> None:
    out: list[tuple[str, str]] = []
    inject(out, TRACE, SPAN, None)
    got = extract(out)
    assert got is not None and (got.trace_id, got.parent_id, got.sampled) == (TRACE, SPAN, True)


def test_without_propagation_keeps_tracestate_and_the_rest() -> None:
    headers = [(name, "v") for name in sorted(PROPAGATION_HEADERS)]
    headers += [("tracestate", "a=b"), ("x-request-id", "r")]
    assert without_propagation(headers) == [("tracestate", "a=b"), ("x-request-id", "r")]
