"""`GET /app-health`: the sidecar probes its own app, straight to the app's port (Istio's
probe rewrite, pilot-agent's /app-health/...).

A readiness probe from outside the pod reaches the app through the inbound listener only while
that listener takes plaintext from anyone: under STRICT mTLS the probe has no certificate, and
under an ALLOW policy no identity. Istio sends such probes to its agent, which asks the app
from inside the pod; this is that. `?path=/healthz` asks that path over HTTP/1.1 (any 2xx is
ready); without a path, the app's port accepting a connection is (a gRPC or tcp app).
"""

from __future__ import annotations

import asyncio
import re

from meshdev.common.sidecar_config import SidecarConfig

# Well under the prober's own timeout, so a hung app reads as "not ready", not as no answer.
PROBE_TIMEOUT = 1.0
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


class ProbeRefused(Exception):
    """The probe cannot be made as asked (a bad path, no app in this pod)."""


def app_endpoint(config: SidecarConfig) -> tuple[str, int]:
    """Where the pod's app listens: its inbound listener's cluster's endpoint."""
    for lst in config.listeners:
        if lst.kind == "inbound" and lst.cluster is not None:
            cluster = config.cluster(lst.cluster)
            if cluster is not None and cluster.endpoints:
                ep = cluster.endpoints[0]
                return ep.address, ep.port
    raise ProbeRefused("this sidecar has no app (no inbound listener)")


async def probe(address: str, port: int, path: str | None) -> tuple[bool, str]:
    """(ready, what happened in words)."""
    if path is not None and (not path.startswith("/") or any(c in path for c in " \r\n")):
        raise ProbeRefused(f"path must start with / and hold no spaces: {path!r}")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(address, port)
            try:
                if path is None:
                    return True, f"{address}:{port} accepts connections"
                writer.write(
                    f"GET {path} HTTP/1.1\r\nHost: {address}:{port}\r\n"
                    "User-Agent: meshdev-app-health\r\nConnection: close\r\n\r\n".encode()
                )
                line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return False, f"no answer from {address}:{port} within {PROBE_TIMEOUT:g}s"
    except OSError as exc:
        return False, f"{address}:{port}: {exc.strerror or exc}"
    match = _STATUS_LINE.match(line)
    if match is None:
        return False, f"{address}:{port}{path} answered no HTTP/1.x status line"
    status = int(match.group(1))
    return 200 <= status < 300, f"{address}:{port}{path} answered {status}"
