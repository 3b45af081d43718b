"""What the requests of a load came to, in the four kinds a reader of a mesh tells apart.

A 4xx is an answer, but not one the load was after: a path the mesh does not route (404), a
local rate limit (429) or an authorization denial (403) are mesh behaviours the user wants to
see, so they are never counted as ok. The kinds of every finished request add up to 100 %.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcomes:
    ok: int  # 2xx and 3xx
    client: int  # 4xx
    server: int  # 5xx, and any status outside 200-499 (no well-behaved server sends one)
    errors: int  # no HTTP response at all: refused, reset, timed out, malformed

    @property
    def total(self) -> int:
        return self.ok + self.client + self.server + self.errors

    def percent(self, count: int) -> float:
        """`count`'s share of the finished requests; 0 when none finished yet."""
        return 100.0 * count / self.total if self.total else 0.0

    def short(self) -> str:
        """`ok 96.6%`, then each other kind that happened: `4xx 3.0%  5xx 0.2%  err 0.2%`."""
        if not self.total:
            return "none finished"
        parts = [f"ok {self.percent(self.ok):.1f}%"]
        for label, count in self.failures():
            parts.append(f"{label} {self.percent(count):.1f}%")
        return "  ".join(parts)

    def failures(self) -> list[tuple[str, int]]:
        """The kinds other than ok that happened at least once, as (label, count)."""
        kinds = (("4xx", self.client), ("5xx", self.server), ("err", self.errors))
        return [(label, count) for label, count in kinds if count]


def outcomes(status: Mapping[int, int], errors: int) -> Outcomes:
    """Responses by status (as LoadResult.status) and the count of requests without one."""
    ok = client = server = 0
    for code, n in status.items():
        if 200 <= code < 400:
            ok += n
        elif 400 <= code < 500:
            client += n
        else:
            server += n
    return Outcomes(ok, client, server, errors)
