"""Running sums of one view, per route, cluster and host, filled from every sidecar's interval.

`Aggregator.build` makes them afresh for each view and touches them once per stat per sidecar,
so they are bare slotted classes: no checks, no properties beyond what the view reads.
"""

from __future__ import annotations

from meshdev.common.breaker_view import BreakerView
from meshdev.telemetry.aggregation.sidecar_interval import IntervalHistogram


def bump(d: dict[str, int], key: str, n: int) -> None:
    d[key] = d.get(key, 0) + n


def bump_flag(r: RouteTally, flag: str, n: int, inv: float) -> None:
    """`n` of `flag` in a sidecar's interval (`inv`: 1 / its length): counted, and as a rate
    per second summed over sidecars the way the route's rps is."""
    r.flags[flag] = r.flags.get(flag, 0) + n
    r.flag_rates[flag] = r.flag_rates.get(flag, 0.0) + n * inv


def success_pct(codes: dict[str, int], classes: dict[str, int]) -> float | None:
    """Non-5xx over all answers: from status codes, else from `_<class>xx` counts."""
    if codes:
        total = sum(codes.values())
        bad = sum(n for c, n in codes.items() if c[0] == "5")
    else:
        total = sum(classes.values())
        bad = classes.get("5", 0)
    return 100.0 * (total - bad) / total if total else None


class Side:
    """Requests and their statuses on one side of a route or cluster, summed over sidecars."""

    __slots__ = ("classes", "codes", "n", "n_codes", "rate", "rate_codes", "seen")

    def __init__(self) -> None:
        self.n = 0
        self.rate = 0.0
        self.seen = False  # a total counter moved (else the codes are all there is)
        self.n_codes = 0
        self.rate_codes = 0.0
        self.codes: dict[str, int] = {}
        self.classes: dict[str, int] = {}

    def total(self, inv: float, n: int) -> None:
        self.n += n
        self.rate += n * inv
        self.seen = True

    def code(self, inv: float, code: str, n: int) -> None:
        self.codes[code] = self.codes.get(code, 0) + n
        self.n_codes += n
        self.rate_codes += n * inv

    @property
    def requests(self) -> int:
        return self.n if self.seen else self.n_codes

    @property
    def rps(self) -> float:
        return self.rate if self.seen else self.rate_codes

    @property
    def success_pct(self) -> float | None:
        return success_pct(self.codes, self.classes)


class RouteTally:
    __slots__ = (
        "down",
        "flag_rates",
        "flags",
        "grpc",
        "hists",
        "prefer_down",
        "retry",
        "up",
        "upgrades",
        "upgrades_open",
    )

    def __init__(self) -> None:
        self.up = Side()
        self.down = Side()
        self.prefer_down = False  # a sidecar counts this route's downstream side
        self.retry = 0.0
        self.flags: dict[str, int] = {}
        self.flag_rates: dict[str, float] = {}  # per second, each sidecar's over its interval
        self.hists: list[IntervalHistogram] = []
        self.upgrades = 0  # upgrade requests in the interval
        self.upgrades_open = 0  # upgraded connections open now
        self.grpc: dict[str, int] = {}  # grpc-status -> calls in the interval

    @property
    def side(self) -> Side:
        return self.down if self.prefer_down else self.up


class ClusterTally:
    __slots__ = ("breakers", "bytes", "cx", "fail", "flags", "tcp", "trips", "up")

    def __init__(self) -> None:
        self.up = Side()
        self.trips = 0.0
        self.flags: dict[str, int] = {}
        self.breakers: list[tuple[str, BreakerView]] = []
        self.tcp = False  # a tcp_proxy relays to it: connections, not requests
        self.cx = 0.0  # connections opened per second
        self.bytes = 0.0  # bytes per second, both ways
        self.fail = 0.0  # connect failures per second


class HostTally:
    __slots__ = ("active", "count", "ejected_by", "error", "pod", "rate", "returns", "success")

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.rate = 0.0
        self.success = 0
        self.error = 0
        self.active = 0
        self.count = 0
        self.returns = 0.0
        self.ejected_by: list[str] = []
