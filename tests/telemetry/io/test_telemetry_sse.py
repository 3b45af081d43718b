"""The SSE parser: events come out whole however the bytes were cut."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshdev.telemetry.io.sse import SSEEvent, SSEParser


def feed_all(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for c in chunks:
        events += parser.feed(c)
    return events + parser.close()


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points})
    pieces, start = [], 0
    for b in bounds:
        pieces.append(data[start:b])
        start = b
    pieces.append(data[start:])
    return pieces


def test_one_event_per_blank_line_with_json_data() -> None:
    docs = [{"seq": 0, "node": {"id": "a"}}, {"seq": 1, "node": {"id": "é"}}]
    stream = b"".join(f"data: {json.dumps(d)}\n\n".encode() for d in docs)
    events = feed_all([stream])
    assert [json.loads(e.data) for e in events] == docs
    assert {e.event for e in events} == {"message"}


def test_comments_are_ignored_and_fields_parsed() -> None:
    stream = (
        b": keep-alive\n\n"
        b"event: snapshot\nid: 7\nretry: 1500\ndata: x\n\n"
        b":another comment\ndata:no-space\n\n"
    )
    parser = SSEParser()
    events = parser.feed(stream)
    assert events == [SSEEvent("x", "snapshot", "7"), SSEEvent("no-space", "message", "7")]
    assert parser.retry_ms == 1500


def test_multi_line_data_joins_with_newlines() -> None:
    events = feed_all([b'data: {"a":\ndata:  1}\ndata\n\n'])
    # The second line keeps its second space; a bare `data` adds an empty line.
    assert events == [SSEEvent('{"a":\n 1}\n', "message", "")]


def test_event_without_data_is_not_dispatched() -> None:
    assert feed_all([b"event: ping\n\nid: 3\n\n"]) == []


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(newline: bytes) -> None:
    stream = b"data: one" + newline + newline + b"data: two" + newline + newline
    assert [e.data for e in feed_all([stream])] == ["one", "two"]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # A CR at the end of a chunk must not end the line twice when the LF follows.
    events = feed_all([b"data: a\r", b"\n\r", b"\n"])
    assert [e.data for e in events] == ["a"]


def test_multibyte_character_split_between_chunks() -> None:
    raw = "data: ünïcode ✓\n\n".encode()
    events = feed_all([raw[: raw.index(b"\xc3") + 1], raw[raw.index(b"\xc3") + 1 :]])
    assert [e.data for e in events] == ["ünïcode ✓"]


def test_bom_at_stream_start_is_dropped() -> None:
    assert [e.data for e in feed_all([b"\xef\xbb", b"\xbfdata: x\n\n"])] == ["x"]


def test_unfinished_event_at_close_is_dropped() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: done\n\ndata: half") == [SSEEvent("done")]
    assert parser.close() == []


def test_large_event_in_many_small_chunks() -> None:
    payload = json.dumps({"counters": {f"cluster.c{i}.upstream_rq_total": i for i in range(3000)}})
    raw = f"data: {payload}\n\n".encode()
    chunks = [raw[i : i + 1000] for i in range(0, len(raw), 1000)]
    events = feed_all(chunks)
    assert len(events) == 1 and json.loads(events[0].data) == json.loads(payload)


@given(
    st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00")), max_size=4
    ),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_any_cut_of_any_stream_gives_the_same_events(
    datas: list[str], points: list[int], newline: bytes
) -> None:
    raw = b"".join(b": c" + newline + b"data: " + d.encode() + newline + newline for d in datas)
    whole = feed_all([raw])
    assert [e.data for e in whole] == datas
    assert feed_all(cut(raw, points)) == whole


@pytest.mark.parametrize(
    "events",
    [
        [b"data: {}\n\n", b'data: {"a": 1}\n\n', b"data:x\n\n"],
        [b"id: 7\n\n", b"data: one\n\n", b"data:  two spaces\n\n", b"data:\n\n"],
        [b"data: a\n", b"data: b\n\n", b"data: c\n\n"],  # a pending line, then one whole
        [b"event: ping\n", b"data: p\n\n", b"data: q\n\n"],  # a pending event name
        [b"data: caf\xc3\xa9\n\n", b"data: \xff\n\n", b"data: r\r\n\r\n"],
    ],
)
def test_a_whole_event_to_a_chunk_reads_as_byte_by_byte(events: list[bytes]) -> None:
    # The chunks a sidecar sends (one event each) take a shortcut; it must not show.
    raw = b"".join(events)
    by_byte = feed_all([raw[i : i + 1] for i in range(len(raw))])
    assert feed_all(events) == by_byte
    assert feed_all([b": hello\n\n", *events]) == by_byte
