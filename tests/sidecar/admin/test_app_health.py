"""`GET /app-health`: the sidecar asks its own app, beside its inbound listener, so a readiness
probe works where that listener refuses the prober (STRICT mTLS, authorization policies)."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from tests.sidecar.helpers import sidecar, simple_config, upstreams
from tests.sidecar.tls.meshtls import callee_config
from tests.support import LOCALHOST


async def _get(admin_port: int, query: str) -> tuple[int, str]:
    url = f"http://{LOCALHOST}:{admin_port}/app-health{query}"
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        return resp.status, await resp.text()


async def test_the_app_is_probed_directly_behind_a_strict_listener() -> None:
    async with upstreams("app") as (app,):
        # STRICT, and no certificate yet: nothing without one gets through the listener.
        async with sidecar(callee_config(app, mtls="STRICT")) as sc:
            port = sc.admin_port
            status, body = await _get(port, "?path=" + quote("/healthz"))
            assert status == 200, body
            assert "answered 200" in body
            assert app.seen_targets[-1] == "/healthz"
            status, body = await _get(port, "?path=" + quote("/healthz?status=503"))
            assert status == 503
            assert "answered 503" in body
            # No path: the app's port accepting a connection is ready (gRPC, tcp apps).
            assert (await _get(port, ""))[0] == 200
            # A path that would break the request line is refused, not sent.
            assert (await _get(port, "?path=healthz"))[0] == 400
            assert (await _get(port, "?path=" + quote("/a b")))[0] == 400
        await app.stop()
        async with sidecar(callee_config(app, mtls="STRICT")) as sc:
            status, body = await _get(sc.admin_port, "?path=/healthz")
            assert status == 503
            assert str(app.port) in body


async def test_a_sidecar_without_an_app_says_so() -> None:
    async with upstreams("b1") as ups, sidecar(simple_config(ups)) as sc:
        status, body = await _get(sc.admin_port, "?path=/healthz")
        assert status == 400
        assert "no app" in body
