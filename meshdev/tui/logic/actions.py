"""The one-key demo actions, each a small function against the pods' and sidecars' HTTP APIs
or the control plane. The app runs them in workers and shows the sentence they return.

- trip the breaker: a burst of concurrent requests through the ingress;
- make one replica fail: the example app's chaos knob (POST /chaos through its sidecar);
- switch a fault: Envoy's runtime layer (POST /runtime_modify on every sidecar, no reload);
- shift the canary weight: a changed mesh applied by the control plane (mesh.yaml untouched);
- call a pod as an identity of the mesh (a certificate from its CA) or as no one (plaintext).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from urllib.parse import urlencode

import aiohttp

from meshdev.config.model import Authorization, Mesh, Route
from meshdev.control import TOKEN_HEADER, ControlPlane, Pod
from meshdev.loadgen import LoadSpec, run_load
from meshdev.runtime import loopback

TIMEOUT = aiohttp.ClientTimeout(total=5)
BURST_REQUESTS = 400
BURST_SECONDS = 0.25
FAULT_ABORT_PERCENT = "50"
CANARY_STEP = 20
# Requests one authorization probe may make per destination: each is a full mTLS handshake.
MAX_PROBES = 6
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _direct() -> aiohttp.ClientSession:
    # Straight to the pods' loopback addresses: a user's HTTP_PROXY must not catch these.
    return aiohttp.ClientSession(trust_env=False)


class ActionFailed(Exception):
    """An action that could not do its job; the message says why, for the user."""


# -- trip the breaker ------------------------------------------------------------------------


async def trip_breaker(
    url: str, requests: int = BURST_REQUESTS, seconds: float = BURST_SECONDS
) -> str:
    """Send `requests` at once (within `seconds`): far over any breaker's limits."""
    spec = LoadSpec(url, rps=requests / seconds, duration=seconds, concurrency=requests)
    result = await run_load(spec)
    overflow = result.flags.get("UO", 0)
    ok = sum(n for code, n in result.status.items() if code < 400)
    text = f"burst of {result.requests} to {url}: {ok} ok"
    if overflow:
        text += f", {overflow} x 503 UO (breaker open)"
    others = {c: n for c, n in result.status.items() if c >= 400}
    if overflow and 503 in others:  # the overflowed ones are already counted, as UO
        others[503] -= overflow
    others = {c: n for c, n in others.items() if n > 0}
    if others:
        text += ", " + ", ".join(f"{c} x{n}" for c, n in sorted(others.items()))
    if result.error_count:
        text += f", {result.error_count} errors"
    return text


# -- make one replica fail -------------------------------------------------------------------


def chaos_candidates(control: ControlPlane) -> list[Pod]:
    """Replicas worth failing: pods of services with outlier detection and >= 2 pods first."""
    mesh = control.mesh
    pods = [p for p in control.pods.values() if not p.spec.is_ingress and p.started.inbound_url]

    def rank(pod: Pod) -> tuple[int, str]:
        service = pod.spec.service
        policy = mesh.policies.get(service) if mesh is not None else None
        siblings = sum(1 for p in pods if p.spec.service == service)
        watched = policy is not None and policy.outlier_detection is not None
        return (0 if watched and siblings > 1 else 1, pod.name)

    return sorted(pods, key=rank)


async def set_chaos(inbound_url: str, error_rate: float) -> None:
    """POST the example app's /chaos through the pod's sidecar (`{}` heals it)."""
    body: dict[str, float] = {"error_rate": error_rate} if error_rate else {}
    url = inbound_url.rstrip("/") + "/chaos"
    async with _direct() as http:
        try:
            async with http.post(url, json=body, timeout=TIMEOUT) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:200]
                    raise ActionFailed(f"{url} answered {resp.status}: {text}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ActionFailed(f"{url}: {exc!r}") from None


# -- switch a fault at runtime ---------------------------------------------------------------


def fault_values(vhost: str, route: str, on: bool) -> dict[str, str]:
    """Envoy's route-scoped runtime keys; empty values remove them (mesh.yaml's fault rules)."""
    prefix = f"fault.http.{vhost}.{route}.abort"
    if on:
        return {f"{prefix}.abort_percent": FAULT_ABORT_PERCENT, f"{prefix}.http_status": "503"}
    return {f"{prefix}.abort_percent": "", f"{prefix}.http_status": ""}


async def runtime_modify(
    admin_urls: Iterable[str], token: str, values: Mapping[str, str]
) -> list[str]:
    """POST /runtime_modify to every sidecar; the errors, one per sidecar that refused."""
    body = urlencode(values)
    headers = {TOKEN_HEADER: token, "content-type": "application/x-www-form-urlencoded"}
    errors: list[str] = []
    async with _direct() as http:
        for admin in admin_urls:
            url = admin.rstrip("/") + "/runtime_modify"
            try:
                async with http.post(url, data=body, headers=headers, timeout=TIMEOUT) as resp:
                    if resp.status != 200:
                        errors.append(f"{url}: {resp.status} {(await resp.text())[:200]}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors.append(f"{url}: {exc!r}")
    return errors


# -- shift the canary weight -----------------------------------------------------------------


def weighted_routes(mesh: Mesh) -> list[tuple[str, int, Route]]:
    """(destination, index, route) of every route that splits traffic by weight."""
    return [
        (svc, i, r)
        for svc, routes in mesh.routes.items()
        for i, r in enumerate(routes)
        if isinstance(r.to, Mapping) and len(r.to) >= 2
    ]


def shifted_weights(weights: Mapping[str, int], step: int) -> dict[str, int]:
    """Weights as percentages with `step` more points on the last destination (the canary),
    taken from the first; once the canary has everything, it goes back to 0."""
    names = list(weights)
    total = sum(weights.values()) or 1
    out = {n: round(w * 100 / total) for n, w in weights.items()}
    canary, first = names[-1], names[0]
    room = 100 - sum(out[n] for n in names[1:-1])
    out[canary] = 0 if out[canary] >= room else min(room, out[canary] + step)
    out[first] = room - out[canary]
    return out


def shift_canary(
    mesh: Mesh, prefer: Sequence[str] = (), step: int = CANARY_STEP
) -> tuple[Mesh, str] | None:
    """The mesh with one weighted route's canary share moved by `step`, and a description.

    `prefer`: route keys (vhost/route) to pick first, e.g. the selected one; otherwise the
    first weighted route in mesh.yaml's order.
    """
    candidates = weighted_routes(mesh)
    if not candidates:
        return None

    def key(c: tuple[str, int, Route]) -> str:
        return f"{c[0]}/{c[2].name or f'r{c[1]}'}"

    chosen = next((c for p in prefer for c in candidates if key(c) == p), candidates[0])
    svc, index, route = chosen
    assert isinstance(route.to, Mapping)
    weights = shifted_weights(route.to, step)
    new_route = route.model_copy(update={"to": MappingProxyType(weights)})
    routes = dict(mesh.routes)
    routes[svc] = (*routes[svc][:index], new_route, *routes[svc][index + 1 :])
    new_mesh = mesh.model_copy(update={"routes": MappingProxyType(routes)})
    split = " / ".join(f"{k} {v}" for k, v in weights.items())
    return new_mesh, f"{key(chosen)}: {split}"


async def plaintext_request(inbound_url: str) -> int | None:
    """The status a plaintext GET straight at a pod's inbound listener gets; None when the
    listener cuts it off (STRICT mTLS refuses plaintext)."""
    try:
        answer = await loopback.request("GET", inbound_url.rstrip("/") + "/", timeout=3)
    except (OSError, loopback.LoopbackError):
        return None
    return answer.status


def probe_requests(policies: Sequence[Authorization]) -> list[tuple[str, str]]:
    """(method, path) pairs a destination's policies speak of, in mesh.yaml's order, then a
    plain GET /: where a request some caller may not make is likely to be found. Safe methods
    only: a probe that is allowed reaches the app, which must not change anything for it."""
    pairs: list[tuple[str, str]] = []
    for p in policies:
        to = p.to
        named = to.methods if to is not None and to.methods else ("GET",)
        methods = [m for m in named if m in SAFE_METHODS]
        paths = (to.paths if to is not None and to.paths else None) or ("/",)
        pairs += [(m, _a_path(pattern)) for m in methods for pattern in paths]
    pairs.append(("GET", "/"))
    return list(dict.fromkeys(pairs))[:MAX_PROBES]


def _a_path(pattern: str) -> str:
    """A path that Istio's pattern matches: `/items*` -> /items, `*.json` -> /x.json."""
    if pattern == "*":
        return "/"
    if pattern.endswith("*"):
        return pattern[:-1] or "/"
    if pattern.startswith("*"):
        return "/probe" + pattern[1:]
    return pattern


async def request_as(
    inbound_url: str, method: str, path: str, tls: ssl.SSLContext | None
) -> loopback.LoopbackResponse | None:
    """One request straight at a pod's inbound listener, over mutual TLS when `tls` carries
    a workload certificate; None when the listener cuts it off."""
    try:
        return await loopback.request(method, inbound_url.rstrip("/") + path, timeout=3, tls=tls)
    except (OSError, ssl.SSLError, loopback.LoopbackError):
        return None
