"""Relaying an upgraded stream (WebSocket): the upstream's 101 goes to the client, then both
connections' raw bytes are spliced until either side closes or the stream idles.

Everything before the 101 is an ordinary request's (routing, filters, breakers, retries, the
per-try and route timeouts: forward.py); this module is what follows it, Envoy's way:
- the route timeout covers the handshake only: an upgraded stream lives as long as it moves
  bytes, and `stream_idle_timeout` (per cluster, Envoy's default 300 s) closes it when it does
  not, flagged `SI`;
- when either side closes, the other is closed after what was already sent to it (no
  half-close; see sidecar/http/raw.py), and the stream is logged once it ends, with the bytes
  sent to the client and its whole duration.
"""

from __future__ import annotations

from meshdev.sidecar.http import RawEnd, ResponseWriter, Splice
from meshdev.sidecar.proxy.accesslog import (
    DOWNSTREAM_CONNECTION_TERMINATION,
    STREAM_IDLE_TIMEOUT,
    Record,
)
from meshdev.sidecar.proxy.headers import HeaderView
from meshdev.sidecar.router.deadline import Deadline, Deadlines


async def relay_upgraded(
    w: ResponseWriter,
    rec: Record,
    tunnel: RawEnd,
    resp_headers: list[tuple[str, str]],
    out: list[tuple[str, str]],
    route_timer: Deadline | None,
    deadlines: Deadlines,
    idle_timeout: float,
) -> None:
    """Send the 101 (`out`: its headers as they go downstream, `resp_headers`: as the upstream
    sent them) and splice the client's connection to `tunnel` until the stream ends."""
    if route_timer is not None:
        # The route timeout covers the handshake only. It cannot have fired unseen: its sweep
        # is a loop callback, and nothing has waited since the 101 arrived.
        deadlines.disarm(route_timer)
    out.append(("upgrade", HeaderView(resp_headers).get("upgrade") or "websocket"))
    try:
        down = await w.switch_protocols(out)
    except ConnectionResetError:
        # The client left as the 101 arrived.
        tunnel.transport.abort()
        rec.add_flag(DOWNSTREAM_CONNECTION_TERMINATION)
        return
    splice = Splice(down, tunnel, idle_timeout)
    try:
        await splice.wait()
    finally:
        # A no-op when both sides closed; when the handler is cancelled (the sidecar stops),
        # both connections are reset.
        splice.close()
        rec.bytes_sent = tunnel.received
    if splice.idle:
        rec.add_flag(STREAM_IDLE_TIMEOUT)
