"""Probes both runtimes share: is a sidecar ready, does an app answer its health path."""

from __future__ import annotations

import asyncio
import contextlib

from meshdev.runtime import loopback


async def http_status(url: str, timeout: float = 1.0) -> tuple[int | None, str]:
    """GET url (straight to the address: no proxy from the environment) and return (status,
    what happened, in words for a "not ready" message); status is None when no usable answer
    came. Raises nothing for anything the peer does: a probe of a user's app that answers
    garbage means "not ready", with the reason in the words.
    """
    try:
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
