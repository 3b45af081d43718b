"""Who calls whom, end to end with the real data plane: a caller sidecar reaches a callee over
mutual TLS, the callee's RBAC filter refuses some requests and a STRICT listener refuses a
plaintext connection, and the views count exactly that (as each sidecar's client sees it,
every interval in exactly one view), with the callee's certificate from its GET /certs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from meshdev.common.sidecar_config import SidecarConfig
from meshdev.sidecar.main import Sidecar
from meshdev.telemetry.aggregation.mesh import Aggregator
from meshdev.telemetry.aggregation.view import MeshView
from meshdev.telemetry.io.client import SidecarClient
from meshdev.testing.certs import TestCA, spiffe
from tests.sidecar.helpers import Upstream
from tests.support import LOCALHOST, free_port, wait_until

INTERVAL = 0.05
CALLER, CALLEE = spiffe("caller"), spiffe("callee")
TTL = timedelta(hours=6)


def callee_config(app: Upstream) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "mesh": "test",
            "node": "callee-0",
            "service": "callee",
            "spiffe_id": CALLEE,
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": [
                {
                    "name": "inbound",
                    "kind": "inbound",
                    "address": LOCALHOST,
                    "port": free_port(),
                    "cluster": "inbound|app",
                    "mtls": "STRICT",
                    "authorization": [
                        {"name": "no-admin", "action": "DENY", "rules": [{"paths": ["/admin*"]}]}
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "inbound|app",
                    "endpoints": [{"address": LOCALHOST, "port": app.port}],
                }
            ],
            "access_log": "off",
        }
    )


def caller_config(callee_port: int) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "mesh": "test",
            "node": "caller-0",
            "service": "caller",
            "spiffe_id": CALLER,
            "admin": {"address": LOCALHOST, "port": free_port()},
            "listeners": [
                {"name": "outbound", "kind": "outbound", "address": LOCALHOST, "port": free_port()}
            ],
            "virtual_hosts": [
                {
                    "name": "callee",
                    "domains": ["callee"],
                    "routes": [{"name": "all", "clusters": [{"cluster": "callee", "weight": 1}]}],
                }
            ],
            "clusters": [
                {
                    "name": "callee",
                    "endpoints": [{"address": LOCALHOST, "port": callee_port, "pod": "callee-0"}],
                    "tls": {"spiffe_ids": [CALLEE]},
                }
            ],
            "access_log": "off",
        }
    )


@dataclass
class Watch:
    """One sidecar's client, each of whose snapshots becomes a view (with its interval)."""

    node: str
    aggregator: Aggregator = field(default_factory=Aggregator)
    client: SidecarClient | None = None
    views: list[tuple[MeshView, float]] = field(default_factory=list)
    seen: int = 0

    def changed(self) -> None:
        client = self.client
        if client is not None and client.snapshots != self.seen:
            self.seen = client.snapshots
            state = client.state(time.monotonic())
            dt = state.latest.interval_s if state.latest is not None else 0.0
            self.views.append((self.aggregator.build([state], time.time()), dt))

    def denied(self, edge: str) -> int:
        return round(
            sum(e.denied_per_s * dt for v, dt in self.views for e in v.edges if e.key == edge)
        )

    def requests(self, edge: str) -> int:
        return round(sum(e.rps * dt for v, dt in self.views for e in v.edges if e.key == edge))

    def rbac(self) -> tuple[int, int]:
        pods = [(p, dt) for v, dt in self.views for p in v.pod_security]
        return (
            round(sum((p.rbac_allowed_per_s or 0) * dt for p, dt in pods)),
            round(sum((p.rbac_denied_per_s or 0) * dt for p, dt in pods)),
        )

    def refused(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v, _ in self.views:
            for p in v.pod_security:
                for kind, n in p.tls_failures.items():
                    out[kind] = out.get(kind, 0) + n
        return out


@asynccontextmanager
async def secured_pair() -> AsyncIterator[tuple[Sidecar, Sidecar, Watch, Watch]]:
    ca = TestCA.create()
    app = await Upstream("app").start()
    callee = Sidecar(callee_config(app), token="t")
    await callee.start()
    caller = Sidecar(caller_config(callee.listener_port("inbound")), token="t")
    await caller.start()
    now = datetime.now(UTC)
    assert callee.install_certs(ca.issue(CALLEE, not_before=now, not_after=now + TTL)) == []
    assert caller.install_certs(ca.issue(CALLER)) == []
    watches = [Watch("caller-0"), Watch("callee-0")]
    tasks = []
    async with aiohttp.ClientSession() as session:
        for watch, sc in zip(watches, (caller, callee), strict=True):
            client = SidecarClient(
                watch.node,
                f"http://{LOCALHOST}:{sc.admin_port}",
                session,
                interval=INTERVAL,
                on_change=watch.changed,
            )
            watch.client = client
            tasks.append(asyncio.create_task(client.run()))
        try:
            await wait_until(
                lambda: all(
                    w.client is not None and w.client.connected and w.client.topology is not None
                    for w in watches
                ),
                "both streams",
            )
            yield caller, callee, watches[0], watches[1]
        finally:
            for task in tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await caller.stop(grace=0.1)
            await callee.stop(grace=0.1)
            await app.stop()


async def test_mtls_rbac_and_certificates_of_real_sidecars_add_up_in_the_views() -> None:
    async with secured_pair() as (caller, callee, by_caller, by_callee):
        proxy = f"http://{LOCALHOST}:{caller.listener_port('outbound')}"
        async with aiohttp.ClientSession() as s:
            statuses = []
            for path in ["/items"] * 6 + ["/admin/users"] * 3:
                async with s.get(proxy + path, headers={"Host": "callee"}) as resp:
                    await resp.read()
                    statuses.append(resp.status)
        # Plaintext straight at the STRICT inbound listener: refused, no answer.
        reader, writer = await asyncio.open_connection(LOCALHOST, callee.listener_port("inbound"))
        writer.write(b"GET /items HTTP/1.1\r\nhost: callee\r\n\r\n")
        await writer.drain()
        with suppress(OSError, asyncio.IncompleteReadError):
            assert await reader.read() == b""
        writer.close()

        await wait_until(
            lambda: (
                by_caller.requests("caller->callee") == 9
                and by_caller.denied("caller->callee") == 3
                and by_callee.rbac() == (6, 3)
                and by_callee.refused() == {"no_filter_chain_match": 1}
            ),
            "every request, denial and refusal in the views",
        )

    assert statuses == [200] * 6 + [403] * 3
    caller_view = by_caller.views[-1][0]
    (edge,) = caller_view.edges
    assert (edge.source, edge.destination, edge.mode, edge.tls_failures) == (
        "caller",
        "callee",
        "mtls",
        {},
    )
    callee_view = by_callee.views[-1][0]
    (pod,) = callee_view.pod_security
    assert (pod.node, pod.service, pod.mtls, pod.spiffe_id) == (
        "callee-0",
        "callee",
        "STRICT",
        CALLEE,
    )
    # The handshakes it took: the caller's pooled connection (one, or a few).
    assert pod.handshakes_per_s is not None
    assert pod.cert is not None and pod.cert.spiffe_id == CALLEE
    assert pod.cert.lifetime_s == pytest.approx(TTL.total_seconds(), abs=1)
    assert 0 <= TTL.total_seconds() - pod.cert.expires_in_s < 60
