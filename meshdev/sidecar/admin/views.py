"""Read-only views of the data plane's live state, and the seam the admin API talks through.

The admin API (admin/server.py) never touches the proxy's internals: it asks a `ControlSurface` for
these plain snapshots and hands it new configs and runtime overrides. Tests drive the admin
API with an in-memory fake of this protocol; the real one is the proxy's live state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from meshdev.common.breaker_view import BreakerView
from meshdev.common.sidecar_config import SidecarConfig
from meshdev.common.trace_wire import SpansAnswer
from meshdev.common.workload_certs import WorkloadCerts
from meshdev.sidecar.stats.store import Store


@dataclass(frozen=True, slots=True)
class HostView:
    """One endpoint of a cluster as the balancer and outlier detector see it now."""

    cluster: str
    address: str
    port: int
    pod: str
    ejected: bool
    # Seconds until an ejected host returns (0 when not ejected).
    ejected_for: float
    ejection_count: int
    consecutive_5xx: int
    rq_active: int
    cx_active: int
    rq_total: int
    rq_error: int
    rq_success: int


class ControlSurface(Protocol):
    """What the admin API may read from and do to the running data plane."""

    @property
    def config(self) -> SidecarConfig: ...

    @property
    def stats(self) -> Store: ...

    def apply(self, config: SidecarConfig) -> None:
        """Swap to `config` atomically; requests in flight finish on the old one."""

    async def settle(self) -> None:
        """Return once what the last swaps left in flight that the control plane must not
        outrun has finished (`DataPlane.settle`: plaintext requests of pools that turned TLS
        on), or its limit has passed. POST /config answers after it."""

    def hosts(self) -> list[HostView]: ...

    def breakers(self) -> list[BreakerView]: ...

    def runtime(self) -> dict[str, str]:
        """Current runtime overrides (Envoy's runtime layer: POST /runtime_modify)."""

    def set_runtime(self, values: dict[str, str]) -> None:
        """Merge overrides; an empty string removes a key. Raises ValueError for a bad key/value."""


class CertsSurface(Protocol):
    """The workload certificate, for POST /certs, GET /certs and /ready (the sidecar's
    tls/identity.py); an admin API without one takes no certificates."""

    def install_certs(self, certs: WorkloadCerts) -> list[str]:
        """Make `certs` the ones new handshakes use; answers why not (empty: installed)."""

    def certs(self) -> dict[str, object]:
        """Envoy's /certs answer: the certificates in use, never the key."""

    def not_ready(self) -> str | None:
        """Why the sidecar cannot serve yet (say, TLS is asked for and no certificate came)."""


class SpansSurface(Protocol):
    """The recent spans (the tracer's ring, sidecar/tracing/), for GET /spans."""

    def spans(self, since: int) -> SpansAnswer:
        """The spans numbered `since` and up that the ring still holds (common/trace_wire)."""
