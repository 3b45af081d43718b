"""The ingress gateway's port on the host's loopback: free before anything is built (unless
our own gateway holds it), and a conflict when the gateway starts reads the same way."""

from __future__ import annotations

import asyncio
import errno
import socket

import docker
from docker.errors import APIError

from meshdev.runtime.base import RuntimeFailure
from meshdev.runtime.docker import engine
from meshdev.runtime.docker.names import role_of
from meshdev.runtime.docker.pods import LOOPBACK
from meshdev.runtime.docker.teardown import containers


def port_in_use(port: int) -> bool:
    # SO_REUSEADDR as the engine's port proxy sets it, so TIME_WAIT sockets of an earlier run
    # do not count as "in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def port_taken(port: int) -> RuntimeFailure:
    return RuntimeFailure(
        f"{LOOPBACK}:{port} is already in use (ingress.port in mesh.yaml); "
        "free it or change the port"
    )


def is_port_conflict(exc: APIError) -> bool:
    text = engine.short(exc).lower()
    return "address already in use" in text or "port is already allocated" in text


async def check_ingress_port(client: docker.DockerClient, mesh: str, port: int) -> None:
    """Fail before any build when the gateway's port is taken, unless by our own gateway."""
    if not await asyncio.to_thread(port_in_use, port):
        return
    for summary in await containers(client, mesh):
        if role_of(summary.get("Labels") or {}) == "ingress" and any(
            p.get("PublicPort") == port for p in summary.get("Ports") or ()
        ):
            return
    raise port_taken(port)
