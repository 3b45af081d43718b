"""Random trace and span ids, drawn in bulk.

A sampled request needs one or two fresh ids. Drawn one at a time (`getrandbits`, `to_bytes`,
`hex`: three calls, three objects) an id cost ~1,700 instructions; hexed in bulk from
`os.urandom` and split by `bytes.hex`'s separator, all in C, ~850 (callgrind, a 64-bit id). The
request path takes one with `SPAN_IDS.pop() if SPAN_IDS else new_span_id()` (the same for trace
ids): a list's pop, no Python call, until the pool is empty.

Neither id is ever all zeros (both formats reserve that for "none"), nor is either half of a
trace id: a 128-bit id whose high half is zero is read back in its 64-bit form (context.py),
and a root span takes its trace id's low half as its own id (span.py), as Zipkin's tracers do.

A forked process must not hand out its parent's ids (every sidecar of the process runtime is
forked from one template): the pools are emptied in a fork's child.
"""

from __future__ import annotations

import os
from typing import Final

# Filled in bulk and emptied from the end; refilled when empty.
SPAN_IDS: Final[list[str]] = []
TRACE_IDS: Final[list[str]] = []

# Ids a refill draws: 4 KB of randomness a time for span ids; a sidecar at 20,000 sampled
# requests a second refills ~40 times a second.
_BATCH: Final = 512
_ZERO16: Final = "0" * 16
_random_bytes = os.urandom


def _draw(pool: list[str], size: int) -> str:
    """Refill `pool` with ids of `size` bytes and take one."""
    drawn = _random_bytes(size * _BATCH).hex(" ", size)
    ids = drawn.split()
    if _ZERO16 in drawn:
        # One in ~2^57 draws: drop every id with a zero half (any run of 16 zeros is looked
        # at, aligned or not, so the test above stays one C call).
        ids = [i for i in ids if _ZERO16 not in (i[:16], i[16:])]
    pool[:] = ids
    return pool.pop()


def new_span_id() -> str:
    """16 hex digits, never all zeros."""
    return SPAN_IDS.pop() if SPAN_IDS else _draw(SPAN_IDS, 8)


def new_trace_id() -> str:
    """32 hex digits (128 bits, as W3C requires and Envoy's trace_id_128bit makes), neither
    half all zeros."""
    return TRACE_IDS.pop() if TRACE_IDS else _draw(TRACE_IDS, 16)


def _forget() -> None:
    SPAN_IDS.clear()
    TRACE_IDS.clear()


os.register_at_fork(after_in_child=_forget)
