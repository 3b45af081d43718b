"""Probes both runtimes share: is a sidecar ready, does an app answer its health path."""

from __future__ import annotations

import asyncio
import contextlib

from meshdev.runtime import loopback

# gRPC's standard health check (grpc.health.v1.Health/Check) with an empty request: one
# uncompressed message of length 0.
GRPC_HEALTH_PATH = "/grpc.health.v1.Health/Check"
_GRPC_HEALTH_CALL: dict[str, str] = {"content-type": "application/grpc", "te": "trailers"}
_GRPC_EMPTY_MESSAGE = b"\x00\x00\x00\x00\x00"


async def http_status(
    url: str, timeout: float = 1.0, *, grpc_health: bool = False
) -> tuple[int | None, str]:
    """GET url (straight to the address: no proxy from the environment) and return (status,
    what happened, in words for a "not ready" message); status is None when no usable answer
    came. Raises nothing for anything the peer does: a probe of a user's app that answers
    garbage means "not ready", with the reason in the words.

    `grpc_health`: call gRPC's health check at url instead (through a sidecar, which speaks
    HTTP/2 to a gRPC app): a gRPC server resets a plain GET, but answers this one with 200
    whether or not it implements the health service (grpc-status then says which).
    """
    try:
        if grpc_health:
            answer = await loopback.request(
                "POST", url, body=_GRPC_EMPTY_MESSAGE, headers=_GRPC_HEALTH_CALL, timeout=timeout
            )
        else:
            answer = await loopback.request("GET", url, timeout=timeout)
    except TimeoutError:
        return None, f"no answer within {timeout:g}s"
    except OSError as exc:
        return None, str(exc) or type(exc).__name__
    except loopback.MalformedResponse as exc:
        return None, f"answered, but not well-formed HTTP: {exc}"
    except loopback.ResponseTooLarge as exc:
        # A probe needs only the status, which was well-formed: the body stays unread.
        return exc.status, f"answered {exc.status} (its body over the cap left unread)"
    return answer.status, f"answered {answer.status}"


async def http_ok(url: str, timeout: float = 1.0) -> bool:
    """A 2xx answer to GET url (see http_status). Raises nothing for anything the peer does:
    unreachable, too slow or malformed is False."""
    status, _ = await http_status(url, timeout)
    return status is not None and 200 <= status < 300


async def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Something accepts a TCP connection at host:port within `timeout`. Raises nothing."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def tcp_relayed(
    host: str, port: int, settle: float = 0.3, timeout: float = 1.0
) -> tuple[bool, str]:
    """Whether a tcp_proxy at host:port (a sidecar's inbound listener for a tcp app) relays to
    its app, and what happened in words. The proxy accepts whatever its app does and closes
    at once when it cannot connect to the app, so a connection still open after `settle`
    seconds (or one the app already spoke on, as MySQL greets) was relayed. Raises nothing."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return False, str(exc) or type(exc).__name__
    try:
        data = await asyncio.wait_for(reader.read(1), settle)
    except TimeoutError:
        return True, "relayed"
    except OSError as exc:
        return False, f"reset by the sidecar ({exc})"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if data:
        return True, "relayed (the app spoke first)"
    return False, "closed by the sidecar: its app does not accept connections yet"
