"""When workload certificates are renewed, as Istio does it: at half their life (its
SECRET_GRACE_PERIOD_RATIO, 0.5), so a renewal that fails has the other half to be retried.

Nothing here needs `cryptography`: the control plane imports it whatever the mesh, and pays for
the CA's imports only when a mesh asks for TLS.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

# Istio's default workload certificate life (DEFAULT_WORKLOAD_CERT_TTL): 24 h.
DEFAULT_CERT_TTL = 24 * 3600.0
GRACE = 0.5
# A sleep of hours is cut into steps this long that each look at the wall clock: the event
# loop's clock stops while a laptop is suspended, a certificate's end does not.
WALL_CLOCK_STEP = 60.0
# A failed push is retried after delays drawn up to this cap (full jitter from `RETRY_BASE`).
RETRY_BASE = 0.5
RETRY_CAP = 30.0


def renew_at(issued: datetime, expires: datetime) -> datetime:
    """When a certificate issued at `issued` (the moment it was made, not its backdated
    not_before) and ending at `expires` is renewed."""
    return issued + (expires - issued) * GRACE


async def sleep_until(when: datetime, step: float = WALL_CLOCK_STEP) -> None:
    """Return at `when` by the wall clock (or at once when it has passed)."""
    while (left := (when - datetime.now(UTC)).total_seconds()) > 0:
        await asyncio.sleep(min(left, step))
