"""The headers each hop puts on an answer, through chained sidecars as in the mesh (gateway or
caller -> the app's sidecar -> the app): `x-envoy-upstream-service-time` and
`x-envoy-attempt-count` replace what came from upstream, so the client gets one of each, the
outermost hop's; the attempt count only from a virtual host that includes it, as in Envoy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientSession

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from tests.sidecar.helpers import (
    COUNTED,
    Upstream,
    client,
    dead_endpoint,
    listener_url,
    sidecar,
    simple_config,
    upstreams,
)
from tests.support import LOCALHOST, free_port

SERVICE_TIME = "x-envoy-upstream-service-time"
ATTEMPTS = "x-envoy-attempt-count"
RETRY_ONCE: dict[str, Any] = {"retries": {"attempts": 1, "retry_on": ["5xx"]}}


@dataclass
class Stamped(Upstream):
    """An app answering with both headers already set, as an upstream proxy would."""

    def _headers(self) -> dict[str, str]:
        return {**super()._headers(), SERVICE_TIME: "424242", ATTEMPTS: "7"}


@asynccontextmanager
async def stamped() -> AsyncIterator[Stamped]:
    app = Stamped("app")
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def app_sidecar(app: Upstream) -> SidecarConfig:
    """The app's own sidecar: Istio's inbound listener, everything to the local app."""
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "mesh": "test",
            "node": "backend-0",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "access_log": "off",
            "listeners": [
                {
                    "name": "inbound",
                    "kind": "inbound",
                    "address": LOCALHOST,
                    "port": free_port(),
                    "cluster": "inbound|app",
                }
            ],
            "clusters": [
                {
                    "name": "inbound|app",
                    "endpoints": [{"address": LOCALHOST, "port": app.port, "pod": app.name}],
                }
            ],
        }
    )


def calling(inner: Sidecar, listener: str, **kwargs: Any) -> SidecarConfig:
    """A sidecar whose service `backend` is `inner`'s listener."""
    lst = next(x for x in inner.config.listeners if x.name == listener)
    ep = {"address": lst.address, "port": lst.port, "pod": "inner"}
    return simple_config([], cluster={"endpoints": [ep]}, **kwargs)


async def answer(
    s: ClientSession, sc: Sidecar, path: str = "/"
) -> tuple[int, dict[str, list[str]]]:
    """Status and every value of the two headers (a dict of one value each would hide a
    repeated header)."""
    url = listener_url(sc) + path
    async with s.get(url, headers={"Host": "backend"}) as resp:
        await resp.read()
        return resp.status, {h: resp.headers.getall(h, []) for h in (SERVICE_TIME, ATTEMPTS)}


async def test_two_hops_give_one_service_time_the_outer_hops() -> None:
    async with (
        stamped() as app,
        sidecar(app_sidecar(app)) as inner,
        sidecar(calling(inner, "inbound")) as outer,
        client() as s,
    ):
        status, got = await answer(s, outer)
    assert status == 200
    [value] = got[SERVICE_TIME]
    assert value != "424242" and int(value) < 10_000
    # Without include_attempt_count_in_response neither hop adds one; the app's passes
    # through untouched, as Envoy leaves it.
    assert got[ATTEMPTS] == ["7"]


async def test_no_attempt_count_without_the_flag() -> None:
    async with (
        upstreams("app") as (app,),
        sidecar(simple_config([app], route=RETRY_ONCE)) as inner,
        sidecar(calling(inner, "outbound", route=RETRY_ONCE)) as outer,
        client() as s,
    ):
        app.script.append("503")
        status, got = await answer(s, outer)
        assert (status, app.hits) == (200, 2)
        assert got[ATTEMPTS] == []
        assert len(got[SERVICE_TIME]) == 1


async def test_with_the_flag_one_attempt_count_the_outer_hops() -> None:
    async with (
        upstreams("app") as (app,),
        sidecar(simple_config([app], route=RETRY_ONCE, vhost=COUNTED)) as inner,
        sidecar(calling(inner, "outbound", vhost=COUNTED)) as outer,
        client() as s,
    ):
        # The inner hop retries once (its count is 2); the outer one tried once.
        app.script.append("503")
        status, got = await answer(s, outer)
        assert (status, app.hits) == (200, 2)
        assert got[ATTEMPTS] == ["1"]
        assert len(got[SERVICE_TIME]) == 1
        # Asked of the inner hop directly, its own count.
        app.script.append("503")
        assert (await answer(s, inner))[1][ATTEMPTS] == ["2"]


async def test_the_flag_replaces_an_upstreams_attempt_count() -> None:
    async with stamped() as app, sidecar(simple_config([app], vhost=COUNTED)) as sc, client() as s:
        status, got = await answer(s, sc)
    assert status == 200
    assert got[ATTEMPTS] == ["1"]
    assert len(got[SERVICE_TIME]) == 1 and got[SERVICE_TIME] != ["424242"]


async def test_local_replies_carry_the_attempt_count_only_with_the_flag() -> None:
    dead = {"endpoints": [dead_endpoint()]}
    for vhost, want in ((None, []), (COUNTED, ["2"])):
        cfg = simple_config(
            [],
            route={"retries": {"attempts": 1, "retry_on": ["connect-failure"]}},
            cluster=dead,
            vhost=vhost,
        )
        async with sidecar(cfg) as sc, client() as s:
            status, got = await answer(s, sc)
        assert status == 503
        assert got[ATTEMPTS] == want
        # A local reply has no upstream answer to time.
        assert got[SERVICE_TIME] == []
