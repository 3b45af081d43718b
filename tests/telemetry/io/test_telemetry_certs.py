"""Certificates through the real admin API: GET /certs read now and then, not per interval,
and only of sidecars whose config names an identity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from meshdev.common.workload_certs import WorkloadCerts
from meshdev.sidecar.admin.server import AdminServer, start_admin
from meshdev.telemetry.aggregation.view import CertStatus, MeshView
from meshdev.telemetry.io import client as client_module
from meshdev.telemetry.io.source import TelemetrySource
from meshdev.testing.fake_surface import FakeSurface, make_config
from meshdev.testing.synthetic_sidecar import certs_answer, synthetic_spiffe_id
from tests.support import LOCALHOST, wait_until
from tests.telemetry.support import Clock

INTERVAL = 0.05
WALL = 1_700_000_000.0
ME = synthetic_spiffe_id("frontend")


@dataclass
class Certs:
    """A sidecar's certificate side: serves `answer` and counts the reads."""

    answer: dict[str, object] = field(default_factory=lambda: {"certificates": []})
    reads: int = 0

    def install_certs(self, certs: WorkloadCerts) -> list[str]:
        return ["not taken here"]

    def certs(self) -> dict[str, object]:
        self.reads += 1
        return self.answer

    def not_ready(self) -> None:
        return None


@asynccontextmanager
async def watching(
    surface: FakeSurface, certs: Certs, clock: Clock
) -> AsyncIterator[tuple[TelemetrySource, list[MeshView]]]:
    admin: AdminServer = await start_admin(
        surface, host=LOCALHOST, port=0, token="t0ken", server_info={}, certs=certs
    )
    source = TelemetrySource(
        [("frontend-0", f"http://{LOCALHOST}:{admin.port}")],
        interval=INTERVAL,
        clock=clock,
        wall_clock=lambda: WALL,
    )
    views: list[MeshView] = []
    task = asyncio.create_task(source.run(views.append))
    try:
        yield source, views
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await admin.close(grace=1.0)


def cert_of(view: MeshView) -> CertStatus | None:
    return view.pod_security[0].cert if view.pod_security else None


async def test_a_pods_certificate_is_read_rarely_and_its_renewal_seen() -> None:
    surface = FakeSurface(make_config(spiffe_id=ME))
    issued = WALL - 3600.0
    certs = Certs(certs_answer(ME, valid_from=issued, expires=issued + 86400.0))
    clock = Clock()
    async with watching(surface, certs, clock) as (source, views):
        await wait_until(lambda: any(cert_of(v) is not None for v in views), "a certificate")
        first = next(c for v in views if (c := cert_of(v)) is not None)
        assert first == CertStatus(ME, 86400.0 - 3600.0, 86400.0)
        client = source.clients()["frontend-0"]
        # Many intervals later (the monotonic clock has not moved): still the one read.
        seen = client.snapshots
        await wait_until(lambda: client.snapshots >= seen + 10, "ten more intervals")
        assert (client.cert_reads, certs.reads) == (1, 1)
        # The sidecar renewed it; CERTS_EVERY later the dashboard knows.
        renewed = WALL - 60.0
        certs.answer = certs_answer(ME, valid_from=renewed, expires=renewed + 86400.0)
        clock.advance(client_module.CERTS_EVERY)
        await wait_until(
            lambda: cert_of(views[-1]) == CertStatus(ME, 86400.0 - 60.0, 86400.0), "the renewal"
        )
        assert client.cert_reads == 2


async def test_a_sidecar_without_an_identity_is_never_asked() -> None:
    certs = Certs()
    clock = Clock()
    async with watching(FakeSurface(), certs, clock) as (source, views):
        await wait_until(lambda: "frontend-0" in source.clients(), "a client")
        client = source.clients()["frontend-0"]
        await wait_until(lambda: client.snapshots >= 3, "a few intervals")
        clock.advance(client_module.CERTS_EVERY)
        seen = client.snapshots
        await wait_until(lambda: client.snapshots >= seen + 3, "a few more")
    assert (client.cert_reads, certs.reads) == (0, 0)
    assert views[-1].pod_security[0].cert is None
    assert views[-1].pod_security[0].spiffe_id is None


async def test_an_identity_without_a_certificate_yet_shows_none() -> None:
    certs = Certs()  # installed nothing yet
    clock = Clock()
    async with watching(FakeSurface(make_config(spiffe_id=ME)), certs, clock) as (source, views):
        await wait_until(lambda: certs.reads >= 1 and len(views) >= 2, "a read")
        await wait_until(lambda: source.clients()["frontend-0"].snapshots >= 3, "intervals")
    pods = views[-1].pod_security
    assert (pods[0].spiffe_id, pods[0].cert) == (ME, None)
