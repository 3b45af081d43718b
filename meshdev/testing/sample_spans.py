"""Spans as sidecars answer them (GET /spans, meshdev/common/trace_wire.py), for tests.

    spans = request_spans(1)                 # ingress -> frontend -> backend, 200
    spans = request_spans(2, status=503, flags="UO")
    by_node = split_by_node(spans)           # what each sidecar's ring holds
    server = SpansServer(by_node)            # a loopback admin API serving them (async)

`request_spans(n)` is a pure function of `n`: the same ids and times on every run, so tables
and snapshots of them are stable. The hops are those of the example mesh, named and tagged as
docs/tracing.md says the sidecars make them: the gateway's SERVER and CLIENT spans
(`frontend/web`), frontend's SERVER span (`frontend/inbound`, cluster `inbound|8080`) and its
CLIENT span to backend (`backend/items`, one per try), and backend's SERVER span; parent ids
without shared spans (each hop its own id, the callee's SERVER span the child of the caller's
CLIENT span).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web

from meshdev.common import trace_wire as tw
from meshdev.common.trace_wire import SpansAnswer, ZipkinSpan

EPOCH_US = 1_700_000_000_000_000  # the same fixed time sample_views.py uses, in µs


def _id(n: int, hop: int) -> str:
    return f"{n:08x}{hop:08x}"


def trace_id(n: int) -> str:
    # Ids that differ in their first digits, as random ones do: the table shows those.
    return hashlib.sha256(f"trace {n}".encode()).hexdigest()[:32]


def span(
    trace: str,
    span_id: str,
    parent: str | None,
    *,
    kind: tw.SpanKind,
    service: str,
    name: str,
    start: int,
    duration: int,
    status: int = 200,
    flags: str = "-",
    route: str = "",
    cluster: str = "",
    node: str = "",
    path: str = "/items",
    attempt: int | None = None,
) -> ZipkinSpan:
    tags = {
        tw.TAG_METHOD: "GET",
        tw.TAG_URL: f"http://{service}{path}",
        tw.TAG_PROTOCOL: "HTTP/1.1",
        tw.TAG_STATUS: str(status),
        tw.TAG_FLAGS: flags,
        tw.TAG_COMPONENT: "proxy",
        tw.TAG_NODE: node or service,
        tw.TAG_REQUEST_ID: f"req-{trace[:8]}",
    }
    if route:
        tags[tw.TAG_ROUTE] = route
    if cluster:
        tags[tw.TAG_CLUSTER] = cluster
    if attempt is not None:
        tags[tw.TAG_ATTEMPT] = str(attempt)
    if status >= 500:
        tags[tw.TAG_ERROR] = "true"
    out: ZipkinSpan = {
        "traceId": trace,
        "id": span_id,
        "name": name,
        "kind": kind,
        "timestamp": start,
        "duration": max(1, duration),
        "localEndpoint": {"serviceName": service},
        "tags": tags,
    }
    if parent is not None:
        out["parentId"] = parent
    return out


def request_spans(
    n: int,
    *,
    status: int = 200,
    flags: str = "-",
    backend_ms: float = 4.0,
    tries: int = 1,
    path: str = "/items",
    route: str = "items",
    start_us: int | None = None,
) -> list[ZipkinSpan]:
    """One request through ingress -> frontend -> backend.v1 as five (+ retries) spans.
    `status`/`flags` are what backend's caller got (every hop passes the status on, and the
    flags stay on the span of the sidecar that set them); with
    `tries` > 1 the first tries failed with 503 and were retried by frontend's sidecar."""
    t = trace_id(n)
    at = start_us if start_us is not None else EPOCH_US + n * 1_000_000
    back = round(backend_ms * 1000)
    per_try = back + 300
    front_total = 300 + tries * per_try + 200
    total = front_total + 600
    spans: list[ZipkinSpan] = [
        span(t, _id(n, 1), None, kind="SERVER", service="ingress", name="frontend/web",
             start=at, duration=total, route="web", cluster="frontend", node="ingress",
             status=status, path=path),
        span(t, _id(n, 2), _id(n, 1), kind="CLIENT", service="ingress",
             name="frontend/web", start=at + 100, duration=total - 200, route="web",
             cluster="frontend", node="ingress", status=status, path=path),
        span(t, _id(n, 3), _id(n, 2), kind="SERVER", service="frontend",
             name="frontend/inbound", start=at + 300, duration=front_total,
             cluster="inbound|8080", node="frontend-0", status=status, path=path),
    ]  # fmt: skip
    cursor = at + 600
    for i in range(1, tries + 1):
        last = i == tries
        code = status if last else 503
        client_id, server_id = _id(n, 2 + 2 * i), _id(n, 3 + 2 * i)
        spans.append(
            span(t, client_id, _id(n, 3), kind="CLIENT", service="frontend",
                 name=f"backend/{route}", start=cursor, duration=per_try, status=code,
                 flags=flags if last else "-", route=route, cluster="backend.v1",
                 node="frontend-0", path=path, attempt=i)
        )  # fmt: skip
        spans.append(
            span(t, server_id, client_id, kind="SERVER", service="backend",
                 name="backend/inbound", start=cursor + 150, duration=back, status=code,
                 cluster="inbound|8080", node="backend-v1-0", path=path)
        )  # fmt: skip
        cursor += per_try
    if flags in ("UO", "UH", "UF", "NR", "FI", "RL"):
        # The caller's sidecar answered itself: the request never reached backend.
        spans = [s for s in spans if s["localEndpoint"]["serviceName"] != "backend"]
    return spans


def split_by_node(spans: Iterable[ZipkinSpan]) -> dict[str, list[ZipkinSpan]]:
    """Each span under the sidecar that made it (its node_id tag)."""
    out: dict[str, list[ZipkinSpan]] = {}
    for s in spans:
        out.setdefault(s["tags"].get(tw.TAG_NODE, ""), []).append(s)
    return out


def answer(
    node: str,
    spans: Sequence[ZipkinSpan],
    since: int = 0,
    first: int = 0,
    dropped: int = 0,
    page: int = 1000,
) -> SpansAnswer:
    """What a sidecar's GET /spans?since=N answers when its ring holds `spans` numbered
    from `first`: at most `page` of them (docs/tracing.md)."""
    end = first + len(spans)
    start = min(max(since, first), end)
    out = list(spans[start - first : start - first + page])
    return {
        "node": node,
        "first": start,
        "next": start + len(out),
        "dropped": dropped,
        "spans": out,
    }


class SpansServer:
    """A loopback HTTP server that plays one sidecar's admin API per path prefix:
    /<node>/spans answers as that sidecar would; nodes in `missing` answer 404 (an older
    sidecar, an Envoy). `asked` records every `since` each node was asked for."""

    def __init__(
        self, by_node: Mapping[str, Sequence[ZipkinSpan]], missing: Iterable[str] = ()
    ) -> None:
        self.rings: dict[str, list[ZipkinSpan]] = {k: list(v) for k, v in by_node.items()}
        self.firsts: dict[str, int] = dict.fromkeys(self.rings, 0)
        self.missing = set(missing)
        self.page = 1000
        self.asked: dict[str, list[int]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    def admin_url(self, node: str) -> str:
        return f"{self.url}/{node}"

    def targets(self) -> list[tuple[str, str]]:
        return [(n, self.admin_url(n)) for n in [*self.rings, *sorted(self.missing)]]

    def add(self, node: str, spans: Iterable[ZipkinSpan]) -> None:
        self.rings.setdefault(node, []).extend(spans)
        self.firsts.setdefault(node, 0)

    def wrap(self, node: str, keep: int) -> None:
        """The ring forgets all but its newest `keep` spans, as a full ring does."""
        ring = self.rings[node]
        gone = max(0, len(ring) - keep)
        self.rings[node] = ring[gone:]
        self.firsts[node] += gone

    async def _spans(self, request: web.Request) -> web.StreamResponse:
        node = request.match_info["node"]
        if node in self.missing or node not in self.rings:
            return web.Response(status=404, text="not found\n")
        raw = request.query.get("since", "0")
        since = int(raw) if raw.isdigit() else 0
        self.asked.setdefault(node, []).append(since)
        body: Any = answer(node, self.rings[node], since, self.firsts[node], page=self.page)
        return web.Response(text=json.dumps(body), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{node}" + tw.SPANS_PATH, self._spans)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
