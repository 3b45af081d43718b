"""Talking to the Docker engine: connecting, running SDK calls off the event loop, and turning
transport failures into messages a user can act on.

Every blocking SDK call goes through `call`, so a vanished engine always reads the same way
("the Docker engine stopped answering: ..."), while the engine's own answers (`APIError`:
conflicts, not found, port taken) reach the caller, which knows what they mean there.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import warnings
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException

from meshdev.runtime.base import RuntimeFailure

P = ParamSpec("P")
T = TypeVar("T")

# Pods start in parallel and each start is a handful of calls; the SDK's default pool of 10
# connections would make the rest open and drop throwaway connections.
MAX_POOL_SIZE = 32
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect(timeout: int = 30) -> docker.DockerClient:
    """A client of an engine that answered a ping, or RuntimeFailure saying none answers.

    The CLI can call this to choose the process runtime when no engine is there."""
    failure: str | None = None
    # docker-py leaves the socket of a failed connect open; collect it now, warning ignored,
    # instead of letting a ResourceWarning surface somewhere unrelated later.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=timeout, max_pool_size=MAX_POOL_SIZE)
            client.ping()
        except (DockerException, OSError) as exc:
            failure = short(exc)
        if failure is not None:
            gc.collect()
    if failure is not None:
        raise RuntimeFailure(
            f"no Docker engine answers at {engine_address()} ({failure}); start Docker, "
            "or run with --runtime process"
        )
    return client


def short(exc: BaseException) -> str:
    """One line of an SDK error: the engine's explanation when there is one."""
    if isinstance(exc, APIError) and exc.explanation:
        return str(exc.explanation)
    # requests and urllib3 nest the cause in their args: ConnectionError(ProtocolError(
    # "Connection aborted.", ConnectionResetError(...))); the innermost says what happened.
    inner: BaseException = exc
    for _ in range(5):
        nested = next((a for a in inner.args if isinstance(a, BaseException)), None)
        if nested is None:
            break
        inner = nested
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0]


def stopped(exc: BaseException) -> RuntimeFailure:
    return RuntimeFailure(f"the Docker engine stopped answering: {short(exc)}")


def refused(what: str, exc: APIError) -> RuntimeFailure:
    return RuntimeFailure(f"Docker refused to {what}: {short(exc)}")


# Engine calls get threads of their own: the loop's default pool has cpu+4 threads, and a mesh
# starting in parallel keeps more calls than that in flight (starts take up to a second each),
# which would queue the quick ones behind them. Threads are made on demand only.
_POOL = ThreadPoolExecutor(max_workers=MAX_POOL_SIZE, thread_name_prefix="meshdev-docker")


async def call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one blocking SDK call in a thread; transport failures become RuntimeFailure."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_POOL, functools.partial(fn, *args, **kwargs))
    except APIError:
        raise
    except (DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise stopped(exc) from exc


async def gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Await every one (no thread keeps working behind an error), then raise the first error."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]  # no exception left: all are T
