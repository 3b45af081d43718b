"""A sidecar scoped to its app's `calls:` (Istio's Sidecar egress hosts): a service outside
them is Envoy's no route (404, NR) with a body, a detail and one log line saying why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from meshdev.common.sidecar_config import Egress, SidecarConfig
from meshdev.sidecar.router.scope import EgressScope
from tests.sidecar.helpers import (
    Upstream,
    client,
    endpoint,
    get,
    listener_url,
    log_lines,
    outbound_config,
    sidecar,
    simple_config,
    stat,
    upstreams,
)

EGRESS = Egress(service="frontend", calls=("backend",), hidden=("ratings", "frontend"))


def test_hidden_names_a_mesh_service_outside_the_calls_however_it_is_written() -> None:
    scope = EgressScope(EGRESS, "shop")
    for authority in ("ratings", "RATINGS:80", "ratings.shop", "ratings.shop:9080"):
        assert scope.hidden(authority) == "ratings"
    # Called, or no service of the mesh at all: nothing to explain beyond Envoy's NR.
    assert scope.hidden("backend") is None
    assert scope.hidden("example.com") is None
    assert scope.hidden("ratings.othermesh") is None
    assert scope.why("ratings") == "no route: ratings is not in frontend's calls"
    assert " " not in scope.details("ratings")


def scoped(config: SidecarConfig) -> SidecarConfig:
    return config.model_copy(update={"egress": EGRESS})


async def test_a_call_outside_the_calls_gets_404_nr_saying_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "access.log"
    async with upstreams("backend") as (backend,):
        cfg = scoped(simple_config([backend], access_log=str(log)))
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc)
            assert (await get(s, base, "/items", host="backend"))[0] == 200
            with caplog.at_level(logging.WARNING, logger="meshdev.sidecar.router"):
                for _ in range(3):
                    status, _, body = await get(s, base, "/stars", host="ratings:80")
                    assert status == 404
                    assert body == b"no route: ratings is not in frontend's calls\n"
            # A host that is no service of the mesh: Envoy's bare NR, as before.
            status, _, body = await get(s, base, "/", host="example.com")
            assert (status, body) == (404, b"")
            assert stat(sc, "http.outbound.no_route") == 4
        assert backend.hits == 1
    # Said once per config, not once per request.
    said = [r.getMessage() for r in caplog.records if "calls" in r.getMessage()]
    assert said == [
        "no route: ratings is not in frontend's calls (services.frontend.calls in the mesh "
        "file); answered 404 NR: add it there to route to it"
    ]
    lines = log_lines(log)
    assert [(line[4], line[5], line[-1]) for line in lines] == [
        ("200", "-", "-"),
        ("404", "NR", "route_not_found[ratings_not_in_frontend_calls]"),
        ("404", "NR", "route_not_found[ratings_not_in_frontend_calls]"),
        ("404", "NR", "route_not_found[ratings_not_in_frontend_calls]"),
        ("404", "NR", "-"),
    ]


def two_services(backend: Upstream, ratings: Upstream, calls: tuple[str, ...]) -> SidecarConfig:
    """backend and ratings each on a route `main`; the vhosts of those in `calls` only."""
    vhosts = [
        {
            "name": name,
            "domains": [name],
            "routes": [{"name": "main", "clusters": [{"cluster": name, "weight": 1}]}],
        }
        for name in calls
    ]
    clusters = [
        {"name": "backend", "endpoints": [endpoint(backend)]},
        {"name": "ratings", "endpoints": [endpoint(ratings)]},
    ]
    hidden = tuple(n for n in ("backend", "ratings") if n not in calls)
    cfg = outbound_config(clusters, vhosts)
    return cfg.model_copy(update={"egress": Egress(service="frontend", calls=calls, hidden=hidden)})


async def test_a_new_config_that_calls_it_routes_it() -> None:
    async with upstreams("backend", "ratings") as (backend, ratings):
        narrow = two_services(backend, ratings, ("backend",))
        async with sidecar(narrow) as sc, client() as s:
            base = listener_url(sc)
            assert (await get(s, base, "/", host="ratings"))[0] == 404
            wider = two_services(backend, ratings, ("backend", "ratings"))
            listeners = {"listeners": narrow.listeners, "admin": narrow.admin, "version": 2}
            sc.apply(wider.model_copy(update=listeners))
            status, headers, _ = await get(s, base, "/", host="ratings")
            assert (status, headers["x-upstream"]) == (200, "ratings")
