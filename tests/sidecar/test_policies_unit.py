"""Pure-logic checks of the policy modules (no sockets): balancers, retry rules and backoff,
the token bucket, fault decisions and the route tables."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from meshdev.common.backoff import Backoff
from meshdev.common.envoy_names import LbPolicy
from meshdev.common.sidecar_config import (
    Fault,
    FaultAbort,
    FaultDelay,
    HeaderMatch,
    RateLimit,
    RetryPolicy,
    RouteMatch,
)
from meshdev.sidecar.filters.fault import (
    check_runtime_entry,
    decide_abort,
    decide_delay,
    effective_fault,
)
from meshdev.sidecar.filters.ratelimit import TokenBucket
from meshdev.sidecar.router.retry import Failure, RetryRules
from meshdev.sidecar.router.table import HostIndex, Matcher, RouteTable, WeightedPick
from meshdev.sidecar.upstream.balancer import (
    HealthEpoch,
    LeastRequest,
    Random,
    RingHash,
    RoundRobin,
    make_balancer,
)


class FakeHost:
    def __init__(self, key: str) -> None:
        self.key = key
        self.ejected = False
        self.rq_active = 0


def hosts(n: int) -> list[FakeHost]:
    return [FakeHost(f"10.0.0.{i}:80") for i in range(n)]


# --- balancers ---------------------------------------------------------------------------


def test_round_robin_cycles_and_skips_ejected_hosts() -> None:
    hs = hosts(3)
    epoch = HealthEpoch()
    rr = RoundRobin(hs, epoch)
    first = [rr.pick() for _ in range(6)]
    assert Counter(h.key for h in first if h) == {h.key: 2 for h in hs}
    hs[1].ejected = True
    epoch.bump()
    picked = {rr.pick() for _ in range(10)}
    assert picked == {hs[0], hs[2]}


class Tally:
    def __init__(self) -> None:
        self.value = 0


@pytest.mark.parametrize("policy", ["round_robin", "least_request", "random", "ring_hash"])
def test_under_half_healthy_every_policy_panics_onto_all_hosts(policy: LbPolicy) -> None:
    hs = hosts(4)
    epoch = HealthEpoch()
    panics = Tally()
    lb = make_balancer(policy, hs, epoch, panics)
    keys = [f"user-{i}" for i in range(200)]
    # Half healthy is not under Envoy's 50 %: the ejected half is skipped, nothing counted.
    hs[0].ejected = hs[1].ejected = True
    epoch.bump()
    assert {lb.pick(k) for k in keys} == {hs[2], hs[3]}
    assert panics.value == 0
    # One in four healthy: every host is picked again, and each pick is a panic.
    hs[2].ejected = True
    epoch.bump()
    assert {lb.pick(k) for k in keys} == set(hs)
    assert panics.value == len(keys)
    hs[0].ejected = hs[1].ejected = hs[2].ejected = False
    epoch.bump()
    lb.pick("x")
    assert panics.value == len(keys)


def test_a_cluster_without_hosts_is_in_panic_with_nothing_to_pick() -> None:
    panics = Tally()
    assert RoundRobin([], HealthEpoch(), panics).pick() is None
    assert panics.value == 1


def test_least_request_prefers_the_idle_host_three_times_in_four() -> None:
    hs = hosts(2)
    hs[0].rq_active = 5
    lr = LeastRequest(hs, HealthEpoch(), rand=random.Random(7).random)
    n = 4000
    idle = sum(1 for _ in range(n) if lr.pick() is hs[1])
    # Two draws with replacement: the busy host wins only when both draws land on it.
    sigma = math.sqrt(n * 0.75 * 0.25)
    assert abs(idle - 0.75 * n) < 5 * sigma


def test_random_balancer_covers_only_healthy_hosts() -> None:
    hs = hosts(4)
    hs[2].ejected = True
    rb = Random(hs, HealthEpoch(), rand=random.Random(1).random)
    seen = Counter(rb.pick() for _ in range(2000))
    assert set(seen) == {hs[0], hs[1], hs[3]}


def test_ring_hash_is_sticky_and_moves_only_keys_of_an_ejected_host() -> None:
    hs = hosts(4)
    epoch = HealthEpoch()
    ring = RingHash(hs, epoch)
    keys = [f"user-{i}" for i in range(400)]
    before = {k: ring.pick(k) for k in keys}
    assert all(ring.pick(k) is before[k] for k in keys)
    assert len(set(before.values())) == 4
    victim = hs[1]
    victim.ejected = True
    epoch.bump()
    after = {k: ring.pick(k) for k in keys}
    for k in keys:
        if before[k] is victim:
            assert after[k] is not victim
        else:
            assert after[k] is before[k]
    # A rebuilt ring (another sidecar, another process) maps keys the same way.
    victim.ejected = False
    assert {k: RingHash(hs, HealthEpoch()).pick(k) for k in keys} == before


# --- retry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_on", "status", "expected"),
    [
        (("5xx",), 500, True),
        (("5xx",), 503, True),
        (("5xx",), 404, False),
        (("gateway-error",), 502, True),
        (("gateway-error",), 504, True),
        (("gateway-error",), 500, False),
        (("retriable-4xx",), 409, True),
        (("retriable-4xx",), 429, False),
        (("reset",), 503, False),
        (("connect-failure",), 503, False),
    ],
)
def test_retry_on_status(retry_on: tuple[str, ...], status: int, expected: bool) -> None:
    rules = RetryRules(RetryPolicy(attempts=2, retry_on=retry_on))
    assert rules.retry_status(status) is expected


def test_retriable_status_codes() -> None:
    rules = RetryRules(
        RetryPolicy(attempts=1, retry_on=("retriable-status-codes",), retriable_status_codes=(418,))
    )
    assert rules.retry_status(418)
    assert not rules.retry_status(500)


@pytest.mark.parametrize(
    ("retry_on", "failure", "expected"),
    [
        ("5xx", Failure.RESET, True),
        ("5xx", Failure.PER_TRY_TIMEOUT, True),
        ("gateway-error", Failure.CONNECT_FAILURE, True),
        ("reset", Failure.RESET, True),
        ("reset", Failure.PER_TRY_TIMEOUT, True),
        ("reset", Failure.CONNECT_FAILURE, True),
        ("connect-failure", Failure.CONNECT_FAILURE, True),
        ("connect-failure", Failure.RESET, False),
        ("connect-failure", Failure.PER_TRY_TIMEOUT, False),
        ("retriable-4xx", Failure.RESET, False),
    ],
)
def test_retry_on_failures(retry_on: str, failure: Failure, expected: bool) -> None:
    rules = RetryRules(RetryPolicy(attempts=1, retry_on=(retry_on,)))
    assert rules.retry_failure(failure) is expected


def test_backoff_is_full_jitter_doubling_up_to_ten_times_base() -> None:
    top = Backoff(0.025, 0.25, rand=lambda: 0.999999)
    ceilings = [top.next_delay() for _ in range(6)]
    assert ceilings == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.25, 0.25], rel=1e-4)
    bottom = Backoff(0.025, 0.25, rand=lambda: 0.0)
    assert all(bottom.next_delay() == 0.0 for _ in range(6))
    rng = random.Random(3)
    sampled = Backoff(0.025, 0.25, rand=rng.random)
    for ceiling in (0.025, 0.05, 0.1, 0.2, 0.25, 0.25, 0.25):
        assert 0 <= sampled.next_delay() < ceiling


# --- rate limit ----------------------------------------------------------------------------


def test_token_bucket_allows_burst_then_refills_at_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(RateLimit(requests_per_second=10, burst=3), clock=lambda: now[0])
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.05  # half a token
    assert not bucket.try_take()
    now[0] += 0.05
    assert bucket.try_take()
    assert not bucket.try_take()
    now[0] += 100  # refill is capped at the burst
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]


# --- faults --------------------------------------------------------------------------------


def fixed(value: float) -> float:
    return value


def test_fault_percentages_and_header_overrides() -> None:
    fault = Fault(
        abort=FaultAbort(status=500, percent=50), delay=FaultDelay(fixed=0.2, percent=100)
    )
    spec = effective_fault(fault, "backend", "items", {})
    assert spec is not None
    assert decide_abort(spec, {}, rand=lambda: 0.49) == 500
    assert decide_abort(spec, {}, rand=lambda: 0.51) is None
    assert decide_abort(spec, {"x-envoy-fault-abort-request": "418"}, rand=lambda: 0.1) == 418
    # The header percentage can only lower the route's percentage.
    headers = {"x-envoy-fault-abort-request": "418", "x-envoy-fault-abort-request-percentage": "90"}
    assert decide_abort(spec, headers, rand=lambda: 0.6) is None
    assert decide_delay(spec, {}, rand=lambda: 0.99) == pytest.approx(0.2)
    assert decide_delay(spec, {"x-envoy-fault-delay-request": "50"}) == pytest.approx(0.05)


def test_fault_headers_do_nothing_on_a_route_without_that_fault() -> None:
    assert effective_fault(None, "backend", "items", {}) is None
    spec = effective_fault(Fault(delay=FaultDelay(fixed=0.1, percent=100)), "b", "r", {})
    assert spec is not None
    assert decide_abort(spec, {"x-envoy-fault-abort-request": "503"}, rand=lambda: 0.0) is None


def test_runtime_keys_switch_a_fault_on_and_override_numbers() -> None:
    runtime = {"fault.http.backend.items.abort.abort_percent": "100"}
    spec = effective_fault(None, "backend", "items", runtime)
    assert spec is not None
    assert decide_abort(spec, {}, rand=lambda: 0.99) == 503
    other = effective_fault(None, "backend", "other", runtime)
    assert other is None
    # Global keys change configured faults but switch nothing on by themselves.
    glob = {"fault.http.abort.http_status": "502", "fault.http.abort.abort_percent": "100"}
    assert effective_fault(None, "backend", "items", glob) is None
    configured = effective_fault(Fault(abort=FaultAbort(status=500, percent=1)), "b", "r", glob)
    assert configured is not None
    assert decide_abort(configured, {}, rand=lambda: 0.99) == 502
    # A route-scoped key beats the global one.
    both = {**glob, "fault.http.b.r.abort.http_status": "429"}
    scoped = effective_fault(Fault(abort=FaultAbort(status=500, percent=1)), "b", "r", both)
    assert scoped is not None
    assert decide_abort(scoped, {}, rand=lambda: 0.5) == 429


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("fault.http.abort.abort_percent", "101"),
        ("fault.http.abort.http_status", "700"),
        ("fault.http.abort.http_status", "50x"),
        ("fault.http.delay.fixed_duration_ms", "-1"),
        ("fault.http.x.abort.abort_percent", "5"),
        ("upstream.use_retry", "1"),
        ("fault.http.v.r.abort.bogus", "1"),
    ],
)
def test_bad_runtime_entries_are_rejected(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        check_runtime_entry(key, value)


def test_good_runtime_entries_pass() -> None:
    check_runtime_entry("fault.http.abort.abort_percent", "12.5")
    check_runtime_entry("fault.http.backend.items.delay.fixed_duration_ms", "300")
    check_runtime_entry("fault.http.backend.items.abort.http_status", "")


# --- routing -------------------------------------------------------------------------------


def test_host_index_precedence_and_ports() -> None:
    index = HostIndex(
        [
            (("backend",), "backend"),
            (("*.example.com",), "suffix"),
            (("*.api.example.com",), "longer-suffix"),
            (("shop.*",), "prefix"),
            (("*",), "any"),
        ]
    )
    assert index.lookup("backend") == "backend"
    assert index.lookup("Backend:8080") == "backend"
    assert index.lookup("x.api.example.com") == "longer-suffix"
    assert index.lookup("x.example.com:80") == "suffix"
    assert index.lookup("shop.local") == "prefix"
    assert index.lookup("unknown") == "any"
    assert HostIndex([(("a",), 1)]).lookup("b") is None


def route(**match: object) -> Matcher:
    return Matcher(RouteMatch.model_validate(match))


def test_path_matchers() -> None:
    assert route(prefix="/items").matches("GET", "/items/1?x=1", {})
    assert not route(prefix="/items").matches("GET", "/item", {})
    assert route(path="/items").matches("GET", "/items?x=1", {})
    assert not route(path="/items").matches("GET", "/items/1", {})
    rx = route(regex=r"/items/\d+")
    assert rx.matches("GET", "/items/42?q", {})
    assert not rx.matches("GET", "/items/42/x", {})  # a full match, not a search
    assert route().matches("POST", "/anything", {})
    assert not route(methods=["POST"]).matches("GET", "/", {})


def test_header_matchers_and_invert() -> None:
    def hm(**kw: object) -> Matcher:
        return route(headers=[HeaderMatch.model_validate({"name": "X-Canary", **kw})])

    assert hm(exact="1").matches("GET", "/", {"x-canary": "1"})
    assert not hm(exact="1").matches("GET", "/", {"x-canary": "2"})
    assert hm(prefix="ab").matches("GET", "/", {"x-canary": "abc"})
    assert hm(regex="a.c").matches("GET", "/", {"x-canary": "abc"})
    assert not hm(regex="a.c").matches("GET", "/", {"x-canary": "abcd"})
    assert hm(present=True).matches("GET", "/", {"x-canary": ""})
    assert not hm(present=True).matches("GET", "/", {})
    assert hm(present=True, invert=True).matches("GET", "/", {})
    assert hm(exact="1", invert=True).matches("GET", "/", {"x-canary": "2"})
    # Envoy: a missing header fails a value match even when inverted.
    assert not hm(exact="1", invert=True).matches("GET", "/", {})


def test_first_match_wins() -> None:
    table = RouteTable([(route(prefix="/a"), "first"), (route(prefix="/"), "second")])
    assert table.match("GET", "/a/b", {}) == "first"
    assert table.match("GET", "/b", {}) == "second"
    assert RouteTable([(route(prefix="/a"), "x")]).match("GET", "/b", {}) is None


def test_weighted_pick_follows_weights() -> None:
    rng = random.Random(11)
    pick = WeightedPick([("v1", 90), ("v2", 10), ("never", 0)], rand=rng.random)
    n = 10_000
    counts = Counter(pick.pick() for _ in range(n))
    assert set(counts) == {"v1", "v2"}
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(counts["v2"] - 0.1 * n) < 5 * sigma
