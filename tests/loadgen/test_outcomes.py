"""What a load's requests came to: ok is 2xx/3xx only; 4xx, 5xx and errors are apart."""

from __future__ import annotations

from meshdev.loadgen import LoadSpec, format_result, outcomes, run_load
from tests.loadgen.test_loadgen import Reply, Target


def test_4xx_is_not_ok_and_each_kind_is_counted_apart() -> None:
    o = outcomes({200: 5, 204: 1, 301: 2, 404: 3, 429: 4, 503: 2, 600: 1}, errors=2)
    assert (o.ok, o.client, o.server, o.errors) == (8, 7, 3, 2)
    assert o.total == 20
    assert o.short() == "ok 40.0%  4xx 35.0%  5xx 15.0%  err 10.0%"


def test_only_the_kinds_that_happened_are_said() -> None:
    assert outcomes({200: 3}, errors=0).short() == "ok 100.0%"
    assert outcomes({404: 3}, errors=0).short() == "ok 0.0%  4xx 100.0%"
    assert outcomes({}, errors=0).short() == "none finished"


async def test_meshdev_load_s_table_says_a_run_of_404s_was_not_ok() -> None:
    # Its `errors` line counts requests without an answer only: all 404s read as "none".
    target = await Target(routes={"/gone": Reply(404), "/slow-down": Reply(429)}).start()
    try:
        spec = LoadSpec(target.url, rps=100, duration=0.2, paths=(("/gone", 3), ("/slow-down", 1)))
        result = await run_load(spec)
    finally:
        await target.close()
    o = result.outcomes
    assert o.ok == 0 and o.client == result.requests > 0
    lines = format_result(result).splitlines()
    assert f"outcome    0.0% ok: 0 2xx/3xx, {result.requests} 4xx, 0 5xx, 0 errors" in lines
    assert lines[-1].split() == ["errors", "none"]
