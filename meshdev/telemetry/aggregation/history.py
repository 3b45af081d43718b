"""Ring buffers of recent values per key, for sparklines and trip timelines."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

DEFAULT_LENGTH = 60


class History:
    """The last `length` values of each key; a key missing from a round is forgotten.

    `begin` starts a round, `push` adds this round's value of a key and returns the series
    (oldest first), `end` drops the keys not pushed in the round, so a route or cluster that
    leaves the config does not hold memory forever and starts afresh if it comes back.
    """

    __slots__ = ("_length", "_round", "_series")

    def __init__(self, length: int = DEFAULT_LENGTH) -> None:
        if length < 1:
            raise ValueError("history length must be at least 1")
        self._length = length
        self._series: dict[Hashable, deque[float]] = {}
        self._round: set[Hashable] = set()

    def begin(self) -> None:
        self._round = set()

    def push(self, key: Hashable, value: float) -> tuple[float, ...]:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = deque(maxlen=self._length)
        series.append(value)
        self._round.add(key)
        return tuple(series)

    def end(self) -> None:
        if len(self._round) != len(self._series):
            for key in [k for k in self._series if k not in self._round]:
                del self._series[key]

    def __len__(self) -> int:
        return len(self._series)
