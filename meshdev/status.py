"""`meshdev status`: what runs for a mesh, asked of the runtime and of every sidecar.

The JSON form is a stable interface for scripts (documented in docs/status.md):

    {
      "mesh": "demo", "runtime": "process" | "docker" | null, "running": true,
      "file": "/abs/mesh.yaml" | null, "ingress_url": "http://127.0.0.1:8000/" | null,
      "version": 3,                 # the version the session last applied (null: no session)
      "last_reload": {...} | null,  # ok, version, serving, sidecars, elapsed_ms, errors, at
      "pods": [
        {"name": "backend-v1-0", "service": "backend", "subset": "v1", "protocol": "http",
         "state": "running", "ready": true, "address": "127.0.9.3",
         "admin_url": "http://127.0.9.3:15000", "config_version": 3, "config_hash": "9f2c...",
         "current": true, "detail": ""}
      ]
    }

`current` is true when the pod serves the content of the session's latest version (a sidecar
whose config did not change keeps its older version number with the same content).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from meshdev.runtime.base import PodState, Runtime


async def gather_status(
    mesh_name: str, runtime: Runtime | None, state: dict[str, Any] | None
) -> dict[str, Any]:
    pods: list[PodState] = await runtime.pod_states() if runtime is not None else []
    wanted = {p["name"]: p for p in (state or {}).get("pods", [])}
    # Straight to the loopback addresses: a user's HTTP_PROXY must not catch these.
    async with aiohttp.ClientSession(trust_env=False) as session:
        probes = await asyncio.gather(*(_probe(session, p.admin_url) for p in pods))
    rows = []
    for pod, (ready, dump) in zip(pods, probes, strict=True):
        expect = wanted.get(pod.pod, {})
        version = dump.get("version") if dump else None
        digest = dump.get("hash") if dump else None
        rows.append(
            {
                "name": pod.pod,
                "service": pod.service or None,
                "subset": pod.subset,
                "protocol": (expect.get("protocol") or _protocol(dump)) if pod.service else None,
                "state": pod.state,
                "ready": ready,
                "address": pod.address,
                "admin_url": pod.admin_url,
                "config_version": version,
                "config_hash": digest,
                "current": bool(digest) and digest == expect.get("config_hash"),
                "restarts": pod.restarts,
                "detail": pod.detail,
            }
        )
    return {
        "mesh": mesh_name,
        # As docs/status.md says: null when nothing of the mesh runs (an idle engine is no mesh).
        "runtime": runtime.kind if runtime is not None and rows else None,
        "running": bool(rows),
        "file": (state or {}).get("file"),
        "ingress_url": (state or {}).get("ingress_url"),
        "version": (state or {}).get("version"),
        "last_reload": (state or {}).get("last_reload"),
        "pods": rows,
    }


def _protocol(dump: dict[str, Any]) -> str | None:
    """The pod's service protocol as its sidecar serves it, when the session did not record
    it (a mesh left running by another meshdev): the inbound listener is a tcp_proxy for a tcp
    service, HTTP's connection manager otherwise (None when the sidecar did not say)."""
    config = dump.get("config")
    listeners = config.get("listeners") if isinstance(config, dict) else None
    if not isinstance(listeners, list):
        return None
    for lst in listeners:
        if isinstance(lst, dict) and lst.get("kind") == "inbound":
            return "tcp" if lst.get("tcp_proxy") else "http"
    return None


async def _probe(session: aiohttp.ClientSession, admin_url: str) -> tuple[bool, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with session.get(f"{admin_url}/ready", timeout=timeout) as resp:
            ready = resp.status == 200
        async with session.get(f"{admin_url}/config_dump", timeout=timeout) as resp:
            dump = await resp.json() if resp.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return False, {}
    return ready, dump if isinstance(dump, dict) else {}


def render_table(status: dict[str, Any]) -> str:
    lines = [
        f"mesh {status['mesh']} ({status['runtime'] or 'not running'})"
        + (f"  ingress {status['ingress_url']}" if status.get("ingress_url") else "")
        + (f"  version v{status['version']}" if status.get("version") else "")
    ]
    reload = status.get("last_reload")
    if reload:
        if reload.get("ok"):
            lines.append(
                f"last reload: applied v{reload['version']} to "
                f"{reload.get('serving')}/{reload.get('sidecars')} sidecars "
                f"in {reload.get('elapsed_ms')} ms"
            )
        else:
            lines.append("last reload: rejected")
            lines += [f"  {e}" for e in reload.get("errors", [])]
    if not status["pods"]:
        lines.append("no pods are running")
        return "\n".join(lines)
    header = ("POD", "STATE", "READY", "ADDRESS", "ADMIN", "CONFIG")
    rows = [header]
    for p in status["pods"]:
        cfg = "-" if p["config_version"] is None else f"v{p['config_version']}"
        if p["config_version"] is not None and status.get("version") and not p["current"]:
            cfg += " (stale)"
        rows.append(
            (
                p["name"],
                p["state"] + (f" ({p['detail']})" if p["detail"] else ""),
                "yes" if p["ready"] else "no",
                p["address"],
                p["admin_url"],
                cfg,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
