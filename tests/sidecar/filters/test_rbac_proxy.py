"""Authorization through a real sidecar on loopback: an inbound listener with policies in front
of a real app answers Envoy's RBAC denial (403 `RBAC: access denied`, flag `RBAC`, its
details, `http.inbound.rbac.*`), to HTTP/1.1, HTTP/2, gRPC and WebSocket callers alike, and a
hot swap's policies hold from the next request on.

Principals: the peer's identity comes from its TLS certificate, which another part builds;
these tests replace the pipeline's `peer_principal` look-up (the seam) with one returning the
principal a test sets, so the listener stays plaintext."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from meshdev.sidecar.proxy import pipeline
from tests.sidecar.helpers import Upstream, client, get, log_lines, sidecar, stat, upstreams
from tests.sidecar.http2.grpcapp import call, channel, grpc_server
from tests.sidecar.http2.h2client import H2Client
from tests.sidecar.proxy.wsapp import ws_app
from tests.support import LOCALHOST, WAIT, free_port, wait_until

DENIED = b"RBAC: access denied"
FRONTEND = "cluster.local/ns/test/sa/frontend"


def inbound(
    app_port: int,
    policies: list[dict[str, Any]],
    *,
    port: int | None = None,
    version: int = 1,
    access_log: str = "off",
    cluster: dict[str, Any] | None = None,
    listener: dict[str, Any] | None = None,
) -> SidecarConfig:
    """A sidecar with one inbound listener `inbound` in front of the app at `app_port`."""
    c: dict[str, Any] = {
        "name": "inbound|8080",
        "endpoints": [{"address": LOCALHOST, "port": app_port, "pod": "app-0"}],
        **(cluster or {}),
    }
    return SidecarConfig.model_validate(
        {
            "version": version,
            "mesh": "test",
            "node": "app-0",
            "admin": {"address": LOCALHOST, "port": free_port()},
            "access_log": access_log,
            "listeners": [
                {
                    "name": "inbound",
                    "kind": "inbound",
                    "address": LOCALHOST,
                    "port": port or free_port(),
                    "cluster": "inbound|8080",
                    "authorization": policies,
                    **(listener or {}),
                }
            ],
            "clusters": [c],
        }
    )


def allow(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "action": "ALLOW", "rules": list(rules)}


def deny(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "action": "DENY", "rules": list(rules)}


def port_of(sc: Sidecar) -> int:
    return sc.config.listeners[0].port


def url(sc: Sidecar) -> str:
    return f"http://{LOCALHOST}:{port_of(sc)}"


@asynccontextmanager
async def guarded(
    policies: list[dict[str, Any]], access_log: str = "off"
) -> AsyncIterator[tuple[Upstream, Sidecar, aiohttp.ClientSession]]:
    async with (
        upstreams("app") as (app,),
        sidecar(inbound(app.port, policies, access_log=access_log)) as sc,
        client() as s,
    ):
        yield app, sc, s


async def statuses(s: aiohttp.ClientSession, base: str, *requests: tuple[str, str]) -> list[int]:
    return [(await get(s, base, path, method=method))[0] for method, path in requests]


async def raw_status(port: int, target: str) -> int:
    """The status of one HTTP/1.1 request sent byte for byte (no client normalizes it)."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), WAIT)
        await asyncio.wait_for(reader.read(), WAIT)
        return int(line.split()[1])
    finally:
        writer.close()


# -- HTTP/1.1 ------------------------------------------------------------------------------


async def test_a_denied_request_gets_envoys_403_and_an_allowed_one_passes(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with guarded([allow("public", {"paths": ["/public/*"]})], str(log)) as (app, sc, s):
        status, headers, body = await get(s, url(sc), "/public/items")
        assert status == 200
        status, headers, body = await get(s, url(sc), "/private")
        assert (status, body) == (403, DENIED)
        assert headers["content-type"] == "text/plain"
        assert app.seen_targets == ["/public/items"]
        assert stat(sc, "http.inbound.rbac.allowed") == 1
        assert stat(sc, "http.inbound.rbac.denied") == 1
        assert stat(sc, "http.inbound.downstream_rq_403") == 1
    lines = log_lines(log)
    assert [(line[2], line[4], line[5], line[-1]) for line in lines] == [
        ("/public/items", "200", "-", "-"),
        ("/private", "403", "RBAC", "rbac_access_denied_matched_policy[none]"),
    ]


async def test_deny_beats_allow_and_names_its_policy(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    policies = [allow("everyone", {}), deny("no-admin", {"paths": ["/admin", "/admin/*"]})]
    async with guarded(policies, str(log)) as (app, sc, s):
        assert await statuses(s, url(sc), ("GET", "/items"), ("GET", "/admin/users")) == [200, 403]
        assert app.hits == 1
    assert log_lines(log)[1][-1] == "rbac_access_denied_matched_policy[no-admin]"


async def test_without_an_allow_policy_only_denies_refuse() -> None:
    async with guarded([deny("no-delete", {"methods": ["DELETE"]})]) as (app, sc, s):
        got = await statuses(s, url(sc), ("GET", "/a"), ("POST", "/a"), ("DELETE", "/a"))
        assert got == [200, 200, 403]
        assert app.hits == 2


async def test_allow_nothing_refuses_every_request() -> None:
    async with guarded([allow("allow-nothing")]) as (app, sc, s):
        got = await statuses(s, url(sc), ("GET", "/"), ("POST", "/x"), ("HEAD", "/"))
        assert got == [403, 403, 403]
        assert app.hits == 0
        assert stat(sc, "http.inbound.rbac.denied") == 3
        assert stat(sc, "http.inbound.rbac.allowed") == 0


async def test_methods_paths_and_not_paths() -> None:
    rule = {"methods": ["GET"], "paths": ["/api/*", "/health"], "not_paths": ["/api/secret"]}
    async with guarded([allow("reads", rule)]) as (app, sc, s):
        got = await statuses(
            s,
            url(sc),
            ("GET", "/api/items"),
            ("GET", "/health?verbose=1"),  # the query is no part of the path
            ("GET", "/api/items?next=/api/secret"),
            ("POST", "/api/items"),
            ("GET", "/api/secret"),
            ("GET", "/other"),
        )
        assert got == [200, 200, 200, 403, 403, 403]
        assert app.hits == 3


async def test_a_path_written_to_slip_past_a_deny_is_denied() -> None:
    async with guarded([deny("no-admin", {"paths": ["/admin", "/admin/*"]})]) as (app, sc, _):
        for target in ("/public/../admin", "/%61dmin/keys", "/x/%2e%2e/admin/keys"):
            assert await raw_status(port_of(sc), target) == 403, target
        assert await raw_status(port_of(sc), "/public/admin") == 200
        assert app.seen_targets == ["/public/admin"]


async def test_a_listener_without_policies_has_no_rbac_stats() -> None:
    async with guarded([]) as (app, sc, s):
        assert (await get(s, url(sc)))[0] == 200
        names = {c.name for c in sc.stats.counters()}
        assert "http.inbound.downstream_rq_total" in names
        assert not any(".rbac." in n for n in names)
        assert app.hits == 1


# -- principals (through the seam) ---------------------------------------------------------


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """The principal every connection's peer has from now on: `peer["principal"]`."""
    current: dict[str, str | None] = {"principal": None}
    monkeypatch.setattr(pipeline, "peer_principal", lambda transport: current["principal"])
    return current


async def test_principals_decide_through_the_listener(peer: dict[str, str | None]) -> None:
    policies = [allow("from-frontend", {"principals": [FRONTEND]})]
    async with guarded(policies) as (app, sc, s):
        base = url(sc)
        assert (await get(s, base))[0] == 403  # plaintext: no principal
        peer["principal"] = "cluster.local/ns/test/sa/other"
        assert (await get(s, base))[0] == 403
        peer["principal"] = FRONTEND
        assert (await get(s, base))[0] == 200
        assert app.hits == 1


async def test_requiring_any_principal_refuses_plaintext(peer: dict[str, str | None]) -> None:
    async with guarded([deny("require-mtls", {"not_principals": ["*"]})]) as (app, sc, s):
        assert (await get(s, url(sc)))[0] == 403
        peer["principal"] = FRONTEND
        assert (await get(s, url(sc)))[0] == 200
        assert app.hits == 1


async def test_the_peer_is_read_from_the_requests_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seam receives the transport of the very connection the request came on."""
    seen: list[tuple[str, int]] = []

    def principal(transport: asyncio.BaseTransport) -> str | None:
        seen.append(transport.get_extra_info("sockname"))
        return None

    monkeypatch.setattr(pipeline, "peer_principal", principal)
    async with guarded([allow("p", {"not_principals": ["x"]})]) as (_, sc, s):
        assert (await get(s, url(sc)))[0] == 200
        c = await H2Client.open(LOCALHOST, port_of(sc))
        try:
            assert (await c.request("/")).status == 200
        finally:
            await c.close()
        assert seen == [(LOCALHOST, port_of(sc))] * 2


async def test_a_listener_whose_rules_name_no_principal_never_looks_the_peer_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def principal(transport: asyncio.BaseTransport) -> str | None:
        raise AssertionError("looked up")

    monkeypatch.setattr(pipeline, "peer_principal", principal)
    async with guarded([allow("p", {"paths": ["/ok"]})]) as (_, sc, s):
        assert await statuses(s, url(sc), ("GET", "/ok"), ("GET", "/no")) == [200, 403]


# -- HTTP/2, gRPC, WebSocket -----------------------------------------------------------------


async def test_an_http2_stream_is_checked_per_request() -> None:
    async with guarded([allow("public", {"paths": ["/public/*"]})]) as (app, sc, _):
        c = await H2Client.open(LOCALHOST, port_of(sc))
        try:
            ok, refused = await asyncio.gather(c.request("/public/a"), c.request("/private"))
        finally:
            await c.close()
        assert ok.status == 200
        assert (refused.status, bytes(refused.body)) == (403, DENIED)
        assert refused.headers["content-type"] == "text/plain"
        assert app.seen_targets == ["/public/a"]


async def test_a_grpc_caller_gets_permission_denied() -> None:
    rule = {"methods": ["POST"], "paths": ["/test.Echo/Unary"]}
    async with (
        grpc_server() as app,
        sidecar(inbound(app.port, [allow("unary-only", rule)], cluster={"http2": True})) as sc,
        channel(port_of(sc)) as ch,
    ):
        answer, _ = await call(ch, "Unary", b"hello")
        assert answer == b"hello"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(ch, "Flaky", b"")
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "RBAC: access denied"
        assert app.calls == {"Unary": 1}
        assert stat(sc, "http.inbound.rbac.denied") == 1
        # Envoy's gRPC local reply: an HTTP 200, its grpc-status counted on the route.
        assert stat(sc, "http.inbound.downstream_rq_200") == 2
        assert stat(sc, "vhost.inbound.route.inbound.grpc.7") == 1


async def test_a_grpc_local_reply_is_trailers_only() -> None:
    async with (
        grpc_server() as app,
        sidecar(inbound(app.port, [allow("nothing")], cluster={"http2": True})) as sc,
    ):
        c = await H2Client.open(LOCALHOST, port_of(sc))
        try:
            sid = c.start(
                "/test.Echo/Unary",
                method="POST",
                headers=[("content-type", "application/grpc"), ("te", "trailers")],
                end=False,
            )
            await c.send_body(sid, b"\x00\x00\x00\x00\x00")
            a = await c.answer(sid)
        finally:
            await c.close()
        assert a.status == 200
        assert a.headers["grpc-status"] == "7"
        assert a.headers["grpc-message"] == "RBAC: access denied"
        assert a.headers["content-type"] == "application/grpc"
        assert (bytes(a.body), a.trailers) == (b"", None)
        assert app.calls == {}


async def test_a_websocket_upgrade_is_checked_like_any_request() -> None:
    async with ws_app() as app:
        policies = [allow("sockets", {"paths": ["/ws"]})]
        async with sidecar(inbound(app.port, policies)) as sc, client() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await s.ws_connect(url(sc) + "/ws/stall")
            assert info.value.status == 403
            async with s.ws_connect(url(sc) + "/ws") as ws:
                await ws.send_str("hello")
                assert (await ws.receive(timeout=WAIT)).data == "hello"
            assert app.accepted == 1
            assert stat(sc, "http.inbound.rbac.denied") == 1
            assert stat(sc, "http.inbound.rbac.allowed") == 1
            # Envoy counts the refused upgrade too, and nothing stays active.
            assert stat(sc, "http.inbound.downstream_cx_upgrades_total") == 2
            await wait_until(
                lambda: stat(sc, "http.inbound.downstream_cx_upgrades_active") == 0,
                "both upgrades to end",
            )


# -- hot swap --------------------------------------------------------------------------------


async def test_a_hot_swap_changes_the_policies_for_the_next_request() -> None:
    async with guarded([allow("reads", {"methods": ["GET"]})]) as (app, sc, s):
        base, p = url(sc), port_of(sc)
        assert await statuses(s, base, ("GET", "/"), ("POST", "/")) == [200, 403]

        sc.apply(inbound(app.port, [deny("no-gets", {"methods": ["GET"]})], port=p, version=2))
        assert await statuses(s, base, ("GET", "/"), ("POST", "/")) == [403, 200]

        sc.apply(inbound(app.port, [], port=p, version=3))
        assert await statuses(s, base, ("GET", "/"), ("POST", "/")) == [200, 200]
        # Counters continue across swaps; a listener without policies no longer counts.
        assert stat(sc, "http.inbound.rbac.allowed") == 2
        assert stat(sc, "http.inbound.rbac.denied") == 2
        assert app.hits == 4


# -- tcp_proxy listeners: compiled for the tcp proxy to check ---------------------------------


async def test_a_tcp_proxy_listener_gets_its_policies_compiled_for_connections() -> None:
    """The check itself belongs to the tcp proxy (sidecar/tcp/): this is what it reads."""
    proxy = {"stat_prefix": "inbound|6379", "clusters": [{"cluster": "inbound|8080", "weight": 1}]}
    policies = [allow("from-frontend", {"principals": [FRONTEND]})]
    cfg = inbound(free_port(), policies, listener={"tcp_proxy": proxy})
    async with sidecar(cfg) as sc:
        entry = sc.plane.current.tcp_listeners["inbound"]
        assert entry.rbac is not None
        assert entry.rbac.engine.check_connection(FRONTEND) is None
        assert entry.rbac.engine.check_connection(None) == "rbac_access_denied_matched_policy[none]"
        names = {c.name for c in sc.stats.counters()}
        assert {"tcp.inbound|6379.rbac.allowed", "tcp.inbound|6379.rbac.denied"} <= names
        assert not any(n.startswith("http.") and ".rbac." in n for n in names)
