"""The inbound and ingress listeners, and the access log's lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshdev.common.sidecar_config import SidecarConfig
from tests.sidecar.helpers import (
    client,
    endpoint,
    get,
    listener_url,
    log_lines,
    sidecar,
    simple_config,
    stat,
    upstreams,
)
from tests.support import LOCALHOST, free_port


async def test_inbound_listener_forwards_to_the_local_app() -> None:
    async with upstreams("app") as (app,):
        cfg = SidecarConfig.model_validate(
            {
                "version": 1,
                "mesh": "test",
                "node": "frontend-0",
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
                "clusters": [{"name": "inbound|app", "endpoints": [endpoint(app)]}],
            }
        )
        async with sidecar(cfg) as sc, client() as s:
            status, headers, _ = await get(
                s, listener_url(sc, "inbound"), "/hello?x=1", host="frontend"
            )
            assert status == 200
            assert headers["x-upstream"] == "app"
            assert app.seen_targets == ["/hello?x=1"]
            assert app.seen_headers[0]["host"] == "frontend"
            assert stat(sc, "cluster.inbound|app.upstream_rq_200") == 1
            assert stat(sc, "http.inbound.downstream_rq_2xx") == 1


async def test_ingress_picks_a_virtual_host_by_path_then_its_routes_apply(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with upstreams("web", "api-v1", "api-v2") as (web, v1, v2):
        cfg = SidecarConfig.model_validate(
            {
                "version": 1,
                "mesh": "test",
                "node": "ingress",
                "admin": {"address": LOCALHOST, "port": free_port()},
                "access_log": str(log),
                "listeners": [
                    {
                        "name": "ingress",
                        "kind": "ingress",
                        "address": LOCALHOST,
                        "port": free_port(),
                        "routes": [
                            {"name": "api", "match": {"prefix": "/api"}, "virtual_host": "api"},
                            {"name": "web", "match": {"prefix": "/"}, "virtual_host": "web"},
                        ],
                    }
                ],
                "virtual_hosts": [
                    {
                        "name": "api",
                        "domains": ["api"],
                        "routes": [
                            {
                                "name": "canary",
                                "match": {"headers": [{"name": "x-canary", "present": True}]},
                                "clusters": [{"cluster": "api-v2", "weight": 1}],
                            },
                            {
                                "name": "items",
                                "match": {"prefix": "/api/items"},
                                "clusters": [{"cluster": "api-v1", "weight": 1}],
                            },
                        ],
                    },
                    {
                        "name": "web",
                        "domains": ["web"],
                        "routes": [{"name": "all", "clusters": [{"cluster": "web", "weight": 1}]}],
                    },
                ],
                "clusters": [
                    {"name": "web", "endpoints": [endpoint(web)]},
                    {"name": "api-v1", "endpoints": [endpoint(v1)]},
                    {"name": "api-v2", "endpoints": [endpoint(v2)]},
                ],
            }
        )
        async with sidecar(cfg) as sc, client() as s:
            base = listener_url(sc, "ingress")
            host = "localhost:8000"
            assert (await get(s, base, "/", host=host))[1]["x-upstream"] == "web"
            assert (await get(s, base, "/api/items/1", host=host))[1]["x-upstream"] == "api-v1"
            canary = {"x-canary": "yes"}
            got = await get(s, base, "/api/items/1", host=host, headers=canary)
            assert got[1]["x-upstream"] == "api-v2"
            # The api service has no route for this path: NR, even though ingress matched.
            assert (await get(s, base, "/api/other", host=host))[0] == 404
            assert stat(sc, "http.ingress.no_route") == 1
            assert stat(sc, "vhost.api.route.items.upstream_rq_total") == 1
        lines = log_lines(log)
        assert [(line[2], line[4], line[5], line[9]) for line in lines] == [
            ("/", "200", "-", "all"),
            ("/api/items/1", "200", "-", "items"),
            ("/api/items/1", "200", "-", "canary"),
            ("/api/other", "404", "NR", "-"),
        ]
        first = lines[0]
        assert first[0].startswith("[") and first[0].endswith("Z]")
        assert first[1:4] == ['"GET', "/", 'HTTP/1.1"']
        assert first[8] == "1"
        assert first[10] == f"{LOCALHOST}:{web.port}"
        assert len(first[11]) == 36  # the generated x-request-id
        assert lines[3][10] == "-"


async def test_access_log_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        upstreams("a") as (a,),
        sidecar(simple_config([a], access_log="stdout")) as sc,
        client() as s,
    ):
        await get(s, listener_url(sc), "/logged", headers={"x-request-id": "rid-1"})
    [line] = [x for x in capsys.readouterr().out.splitlines() if "/logged" in x]
    fields = line.split()
    assert fields[4:6] == ["200", "-"]
    assert int(fields[6]) > 0  # body bytes
    assert fields[8:] == ["1", "main", f"{LOCALHOST}:{a.port}", "rid-1", "-"]
