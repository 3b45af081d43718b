"""Trace and span ids: drawn in bulk, of their width, never zero (nor a trace id's half), and
not shared with a forked child."""

from __future__ import annotations

import os

import pytest

from meshdev.sidecar.tracing import ids
from meshdev.sidecar.tracing.ids import new_span_id, new_trace_id


def test_new_ids_are_hex_of_their_width_and_unique() -> None:
    # Over several refills of the pools (512 ids each).
    traces = [new_trace_id() for _ in range(1200)]
    spans = [new_span_id() for _ in range(1200)]
    assert all(len(t) == 32 and int(t[:16], 16) and int(t[16:], 16) for t in traces)
    assert all(len(s) == 16 and int(s, 16) for s in spans)
    assert len(set(traces)) == len(traces) and len(set(spans)) == len(spans)


def test_ids_keep_their_leading_zeros_and_none_has_a_zero_half(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Draws of zeros but for the last byte of each 8, and not even that in bytes 8-15 of
    # every 32: every other id of both widths has a zero (half), and is dropped.
    def draw(n: int) -> bytes:
        return bytes(1 if i % 8 == 7 and i % 32 != 15 else 0 for i in range(n))

    monkeypatch.setattr(ids, "_random_bytes", draw)
    monkeypatch.setattr(ids, "SPAN_IDS", [])
    monkeypatch.setattr(ids, "TRACE_IDS", [])
    assert ids.new_span_id() == "0" * 15 + "1"
    assert len(ids.SPAN_IDS) == 512 - 128 - 1
    assert ids.new_trace_id() == "0" * 15 + "1" + "0" * 15 + "1"
    assert len(ids.TRACE_IDS) == 512 // 2 - 1
    assert all(t[:16] != "0" * 16 != t[16:] for t in ids.TRACE_IDS)


def test_a_forked_child_draws_other_ids() -> None:
    new_span_id()  # the parent's pool is full
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_span_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 16).decode()
    os.close(read)
    os.close(write)
    assert len(child) == 16 and child != new_span_id()
