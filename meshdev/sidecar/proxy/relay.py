"""Relaying an upstream answer whose body is still arriving (or has none).

An answer that has arrived whole is written by the forward loop itself, in one write; this is
the other case: streamed with back-pressure both ways, keeping the upstream's content-length
when it gave one.
"""

from __future__ import annotations

from typing import Final

from meshdev.sidecar.http import ResponseWriter
from meshdev.sidecar.proxy.accesslog import UPSTREAM_CONNECTION_TERMINATION, Record
from meshdev.sidecar.upstream import UpstreamReset, UpstreamResponse

# Statuses whose answers have no body, so their content-length passes through as it is.
BODILESS: Final = frozenset({204, 304})


async def stream(
    w: ResponseWriter,
    rec: Record,
    resp: UpstreamResponse,
    out: list[tuple[str, str]],
    data: bytes | None,
) -> None:
    """Send `out` (the answer's head) and then the body as it arrives; `data` is not None
    when there is no body to send (a bodiless status, or HEAD)."""
    for k, v in resp.headers:
        if k == "content-length":
            out.append((k, v))
            break
    await w.start(rec.status, out)
    if data is not None:
        await w.end()
        return
    sent = 0
    try:
        async for chunk in resp:
            sent += len(chunk)
            await w.write(chunk)
    except UpstreamReset:
        # The upstream died mid-body: all Envoy can do is reset the downstream too.
        rec.bytes_sent = sent
        rec.add_flag(UPSTREAM_CONNECTION_TERMINATION)
        w.abort()
        return
    finally:
        # Cancelled while a slow client held back a write (route timeout, client gone):
        # the half-read upstream connection must not go back to the pool. A no-op when the
        # body arrived whole.
        resp.close()
    rec.bytes_sent = sent
    await w.end(resp.trailers)
