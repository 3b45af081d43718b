"""Waiting for a pod to serve: its sidecar's /ready on the published admin port, and its app's
health through the published inbound port, i.e. through the sidecar's inbound listener to the
app, the way mesh traffic reaches it. Meanwhile a caller-given check watches for exits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from meshdev.common.envoy_names import ServiceProtocol
from meshdev.runtime.base import Container
from meshdev.runtime.readiness import GRPC_HEALTH_PATH, http_status, tcp_relayed

PROBE_INTERVAL_S = 0.05
EXIT_CHECK_INTERVAL_S = 0.25
_PROBE_TIMEOUT_S = 2.0
# What the sidecar answers itself while its app does not accept connections (yet).
_NOT_UP = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Probe:
    admin_url: str
    inbound_url: str  # "" for the gateway: it has no app
    health_path: str | None
    # A tcp app is not asked over HTTP: its inbound listener relays a connection to it or not.
    protocol: ServiceProtocol = "http"
    # The inbound listener refuses an outside prober (STRICT mTLS, authorization policies):
    # the sidecar asks its app itself (its admin /app-health, Istio's probe rewrite).
    through_sidecar_admin: bool = False


class NotReady(Exception):
    """The deadline passed; `waiting` is the container that had not answered."""

    def __init__(self, waiting: Container, why: str) -> None:
        super().__init__(why)
        self.waiting = waiting
        self.why = why


async def _get(url: str) -> tuple[int | None, str]:
    # The app behind the sidecar is the user's and may answer anything: http_status turns
    # every such answer into "not ready" with its reason, which NotReady then carries.
    return await http_status(url, _PROBE_TIMEOUT_S)


async def _app(probe: Probe, health: str) -> tuple[int | None, str]:
    if probe.through_sidecar_admin:
        query = f"?path={quote(probe.health_path, safe='/')}" if probe.health_path else ""
        return await _get(f"{probe.admin_url}/app-health{query}")
    if probe.protocol == "tcp":
        where = urlsplit(probe.inbound_url)
        ok, why = await tcp_relayed(where.hostname or "", where.port or 0, timeout=_PROBE_TIMEOUT_S)
        # As an answer the app gave itself: any status but the sidecar's own 502-504.
        return (200 if ok else None), why
    if probe.protocol == "grpc" and probe.health_path is None:
        # A gRPC app resets a plain GET; any answer to its health check means it serves.
        return await http_status(
            probe.inbound_url + GRPC_HEALTH_PATH, _PROBE_TIMEOUT_S, grpc_health=True
        )
    return await _get(probe.inbound_url + health)


def _app_ok(status: int | None, health_path: str | None) -> bool:
    if status is None:
        return False
    if health_path is None:
        # No health path: any answer the app gave itself means its port accepts connections.
        return status not in _NOT_UP
    return 200 <= status < 300


async def wait_ready(
    probe: Probe, timeout: float, check_exits: Callable[[], Awaitable[None]]
) -> None:
    """Returns once both answer; raises NotReady at the deadline, or whatever `check_exits`
    raises (it runs every EXIT_CHECK_INTERVAL_S and once more at the deadline). Nothing a
    probed peer does raises here: unreachable, slow or garbage is "not ready yet", and the
    last such reason is NotReady's `why`."""
    deadline = time.monotonic() + timeout
    next_exit_check = 0.0
    sidecar_ok, app_ok = False, not probe.inbound_url
    sidecar_why = app_why = "no answer yet"
    health = probe.health_path or "/"
    while True:
        sidecar_probe = _get(f"{probe.admin_url}/ready") if not sidecar_ok else None
        app_probe = _app(probe, health) if not app_ok else None
        if sidecar_probe is not None and app_probe is not None:
            (s_status, sidecar_why), (a_status, app_why) = await asyncio.gather(
                sidecar_probe, app_probe
            )
            sidecar_ok = s_status is not None and 200 <= s_status < 300
            app_ok = _app_ok(a_status, probe.health_path)
        elif sidecar_probe is not None:
            s_status, sidecar_why = await sidecar_probe
            sidecar_ok = s_status is not None and 200 <= s_status < 300
        elif app_probe is not None:
            a_status, app_why = await app_probe
            app_ok = _app_ok(a_status, probe.health_path)
        if sidecar_ok and app_ok:
            return
        now = time.monotonic()
        if now >= next_exit_check or now >= deadline:
            next_exit_check = now + EXIT_CHECK_INTERVAL_S
            await check_exits()
        if now >= deadline:
            if not sidecar_ok:
                raise NotReady("sidecar", f"the sidecar's /ready: {sidecar_why}")
            what = "port" if probe.protocol == "tcp" else health
            if probe.protocol == "grpc" and probe.health_path is None:
                what = GRPC_HEALTH_PATH
            raise NotReady(
                "app", f"the app's {what} through the sidecar's inbound listener: {app_why}"
            )
        await asyncio.sleep(PROBE_INTERVAL_S)
