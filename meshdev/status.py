"""`meshdev status`: what runs for a mesh, asked of the runtime and of every sidecar.

The JSON form is a stable interface for scripts (documented in docs/status.md):

    {
      "mesh": "demo", "runtime": "process" | "docker" | null, "running": true,
      "file": "/abs/mesh.yaml" | null, "ingress_url": "http://127.0.0.1:8000/" | null,
      "followed": true,             # a live `meshdev up` follows the file (not after --keep)
      "version": 3,                 # the version the session last applied (null: no session)
      "last_reload": {...} | null,  # ok, version, serving, sidecars, elapsed_ms, errors, at
      "last_rolls": {"web": {...}},  # per service whose code was saved: ok, replaced,
                                     # elapsed_ms, error, kept, superseded, at
                                     # (docs/code-loop.md)
      "weights": {"backend/items": {"backend.v1": 70, "backend.v2": 30}},  # splits applied
      "pods": [
        {"name": "backend-v1-0", "service": "backend", "subset": "v1", "protocol": "http",
         "state": "running", "ready": true, "address": "127.0.9.3",
         "admin_url": "http://127.0.9.3:15000", "config_version": 3, "config_hash": "9f2c...",
         "current": true, "detail": "",
         "spiffe_id": "spiffe://cluster.local/ns/demo/sa/backend" | null,
         "cert_expires": "2026-12-04T09:30:00Z" | null, "mtls": "STRICT" | null}
      ]
    }

`current` is true when the pod serves the content of the session's latest version (a sidecar
whose config did not change keeps its older version number with the same content).

The security fields come from the sidecar itself, as the rest: `spiffe_id` and `mtls` from
the config it serves, `cert_expires` from its GET /certs (Envoy's shape), asked only of a
sidecar whose config names an identity.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import aiohttp

from meshdev.common.workload_certs import CERTS_PATH, timestamp, workload_leaves
from meshdev.runtime.base import PodState, Runtime
from meshdev.runtime.paths import BY_KEY, live_session_pid


@dataclass(frozen=True)
class _Probe:
    """What one sidecar said: /ready, /config_dump and, when it has an identity, /certs."""

    ready: bool = False
    dump: dict[str, Any] = field(default_factory=dict)
    cert_expires: str | None = None


async def gather_status(
    mesh_name: str, runtime: Runtime | None, state: dict[str, Any] | None
) -> dict[str, Any]:
    pods: list[PodState] = await runtime.pod_states() if runtime is not None else []
    wanted = {p["name"]: p for p in (state or {}).get("pods", [])}
    # Straight to the loopback addresses: a user's HTTP_PROXY must not catch these.
    async with aiohttp.ClientSession(trust_env=False) as session:
        probes = await asyncio.gather(*(_probe(session, p.admin_url) for p in pods))
    health: dict[str, dict[str, Any]] = (state or {}).get("health") or {}
    rows = []
    for pod, probe in zip(pods, probes, strict=True):
        ready, dump = probe.ready, probe.dump
        expect = wanted.get(pod.pod, {})
        healed = health.get(str(expect.get("key", pod.pod)), {})
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
                "restarts": healed.get("restarts", pod.restarts),
                "exit_code": healed.get("exit_code"),
                "last_exit": _iso_time(healed.get("last_exit")),
                "detail": pod.detail,
                "spiffe_id": _spiffe_id(dump),
                "cert_expires": probe.cert_expires,
                "mtls": _mtls(dump),
            }
        )
    # Pods of the plan that are down, waiting for their restart: listed all the same.
    seen = {row["name"] for row in rows}
    for key in (state or {}).get("down") or ():
        if key in seen or key not in health:
            continue
        healed = health[key]
        next_try = healed.get("next_try_in")
        rows.append(
            {
                "name": key,
                "service": None,
                "subset": None,
                "protocol": None,
                "state": healed.get("state", "exited"),
                "ready": False,
                "address": "",
                "admin_url": "",
                "config_version": None,
                "config_hash": None,
                "current": False,
                "restarts": healed.get("restarts", 0),
                "exit_code": healed.get("exit_code"),
                "last_exit": _iso_time(healed.get("last_exit")),
                "detail": f"next try in {next_try:g} s" if next_try is not None else "",
                "spiffe_id": None,
                "cert_expires": None,
                "mtls": None,
            }
        )
    return {
        "mesh": mesh_name,
        # As docs/status.md says: null when nothing of the mesh runs (an idle engine is no mesh).
        "runtime": runtime.kind if runtime is not None and rows else None,
        "running": bool(rows),
        "file": (state or {}).get("file"),
        "ingress_url": (state or {}).get("ingress_url"),
        "followed": live_session_pid(state) is not None,
        "version": (state or {}).get("version"),
        "last_reload": (state or {}).get("last_reload"),
        "last_rolls": (state or {}).get("last_rolls") or {},
        # The splits the session applied: with the canary key's, they are not the file's.
        "weights": (state or {}).get("weights") or {},
        "pods": rows,
    }


def _iso_time(seconds: object) -> str | None:
    """A wall-clock time in seconds as ISO 8601 UTC (None stays None)."""
    if not isinstance(seconds, int | float):
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _config(dump: dict[str, Any]) -> dict[str, Any]:
    config = dump.get("config")
    return config if isinstance(config, dict) else {}


def _spiffe_id(dump: dict[str, Any]) -> str | None:
    """The identity the sidecar's config names (what its certificate must name)."""
    value = _config(dump).get("spiffe_id")
    return value if isinstance(value, str) else None


def _mtls(dump: dict[str, Any]) -> str | None:
    """The mode of the sidecar's inbound listener; None for the gateway, which has none."""
    listeners = _config(dump).get("listeners")
    for lst in listeners if isinstance(listeners, list) else ():
        if isinstance(lst, dict) and lst.get("kind") == "inbound":
            mode = lst.get("mtls", "DISABLE")
            return mode if isinstance(mode, str) else None
    return None


def cert_expiry(answer: object, spiffe_id: str) -> str | None:
    """When the workload certificate in an Envoy GET /certs answer ends, as ISO 8601 UTC: the
    first of a cert_chain that names `spiffe_id` (else the first of any cert_chain); None when
    the answer holds none, or is not Envoy's shape. Envoy's whole-day `days_until_expiration`
    is not turned into a moment here: a table of exact times would lie by up to a day."""
    for leaf in workload_leaves(answer, spiffe_id):
        moment = timestamp(leaf.get("expiration_time"))
        if moment is not None:
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


async def _probe(session: aiohttp.ClientSession, admin_url: str) -> _Probe:
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with session.get(f"{admin_url}/ready", timeout=timeout) as resp:
            ready = resp.status == 200
        async with session.get(f"{admin_url}/config_dump", timeout=timeout) as resp:
            dump = await resp.json() if resp.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return _Probe()
    dump = dump if isinstance(dump, dict) else {}
    identity = _spiffe_id(dump)
    if identity is None:
        # No identity, no certificate: a mesh without TLS pays nothing more.
        return _Probe(ready, dump)
    try:
        async with session.get(f"{admin_url}{CERTS_PATH}", timeout=timeout) as resp:
            certs = await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        # What it said of readiness and config still holds; only the expiry is unknown.
        certs = None
    return _Probe(ready, dump, cert_expiry(certs, identity))


def _reload_lines(reload: dict[str, Any], file: object, weights: object = None) -> list[str]:
    """The last reload: a save's, or one the dashboard's canary key (`w`) applied. The key
    shifts weights in the running config only, so its version matches no save of the file:
    the line says where it came from, and the next one the weights the sidecars run."""
    count = f"{reload.get('serving')}/{reload.get('sidecars')} sidecars"
    extra: list[str] = []
    if reload.get(BY_KEY):
        name = PurePath(file).name if isinstance(file, str) and file else "the mesh file"
        if reload.get("ok"):
            line = (
                f"last reload: applied v{reload['version']} to {count} in "
                f"{reload.get('elapsed_ms')} ms by the dashboard's canary key (w); "
                f"{name} unchanged, a save resets it"
            )
            if splits := _splits(weights):
                extra.append(f"  weights applied: {splits}")
        else:
            # Not a rejected save: no file was read; some sidecars did not take the push.
            line = (
                f"last reload: the dashboard's canary key (w) failed: v{reload['version']} "
                f"on {count}; {name} unchanged"
            )
    elif reload.get("ok"):
        line = (
            f"last reload: applied v{reload['version']} to {count} in {reload.get('elapsed_ms')} ms"
        )
    else:
        line = "last reload: rejected"
    return [line, *extra, *(f"  {e}" for e in reload.get("errors", []))]


def _splits(weights: object) -> str:
    """`backend/items backend.v1 70 / backend.v2 30; ...` from the state's `weights`."""
    if not isinstance(weights, dict):
        return ""
    return "; ".join(
        f"{route} " + " / ".join(f"{name} {w}" for name, w in split.items())
        for route, split in sorted(weights.items())
        if isinstance(split, dict)
    )


def render_table(status: dict[str, Any]) -> str:
    lines = [
        f"mesh {status['mesh']} ({status['runtime'] or 'not running'})"
        + (f"  ingress {status['ingress_url']}" if status.get("ingress_url") else "")
        + (f"  version v{status['version']}" if status.get("version") else "")
    ]
    if status["pods"] and status.get("file") and not status.get("followed", True):
        # After `up --keep` or a killed `up` the pods serve on, but nothing else happens:
        # without this line a save looks applied to whoever reads the table.
        lines.append(
            f"no `meshdev up` follows {status['file']}: saves are not applied and pods that "
            "exit stay down; `meshdev up` starts the mesh anew, `meshdev down` removes it"
        )
    reload = status.get("last_reload")
    if reload:
        lines += _reload_lines(reload, status.get("file"), status.get("weights"))
    for service, roll in sorted((status.get("last_rolls") or {}).items()):
        if roll.get("superseded"):
            lines.append(f"last code roll of {service}: cut short by a newer save, rolling it")
        elif roll.get("ok"):
            lines.append(
                f"last code roll of {service}: {len(roll.get('replaced', []))} pods "
                f"in {roll.get('elapsed_ms')} ms"
            )
        else:
            error = str(roll.get("error") or "").splitlines()
            lines.append(f"last code roll of {service}: failed, old pods serve")
            lines += [f"  {e}" for e in error]
    if not status["pods"]:
        lines.append("no pods are running")
        return "\n".join(lines)
    header: tuple[str, ...] = ("POD", "STATE", "READY", "ADDRESS", "ADMIN", "CONFIG")
    # Only a mesh with identities shows them: the table of one without TLS stays as it was.
    secured = any(p.get("spiffe_id") for p in status["pods"])
    if secured:
        header += ("MTLS", "CERT EXPIRES")
    rows = [header]
    for p in status["pods"]:
        cfg = "-" if p["config_version"] is None else f"v{p['config_version']}"
        if p["config_version"] is not None and status.get("version") and not p["current"]:
            cfg += " (stale)"
        row: tuple[str, ...] = (
            p["name"],
            p["state"] + (f" ({p['detail']})" if p["detail"] else ""),
            "yes" if p["ready"] else "no",
            p["address"],
            p["admin_url"],
            cfg,
        )
        if secured:
            row += (p.get("mtls") or "-", p.get("cert_expires") or "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
