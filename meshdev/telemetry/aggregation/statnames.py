"""What an Envoy stat name means to the dashboard, decided once per name and cached.

Scopes (`cluster.<c>.`, `vhost.<v>.route.<r>.`, `http.<prefix>.`) are split by the sidecar's
own `TagExtractor`, which knows that `backend.v1` and `inbound|8080` are single names; this
module only maps the stat that follows the scope onto what the dashboard counts.

Response flags a stat stands for (Envoy's %RESPONSE_FLAGS%): the same suffix means the same
flag in a route's scope and in a cluster's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from meshdev.common.stattags import (
    CLUSTER_LABEL,
    HTTP_PREFIX_LABEL,
    RATELIMIT_PREFIX_LABEL,
    ROUTE_LABEL,
    VHOST_LABEL,
    TagExtractor,
)

# Scope kinds.
ROUTE: Final = 1
CLUSTER: Final = 2
LISTENER: Final = 3

# What a stat counts.
TOTAL: Final = 1
RETRY: Final = 2
CODE: Final = 3  # arg: "503"
CLASS: Final = 4  # arg: "5" (upstream_rq_5xx)
FLAG: Final = 5  # arg: "UO"
TIME: Final = 6  # the latency histogram
# A route's downstream side (meshdev's `vhost.<v>.route.<r>.downstream_rq_*`): every request
# the route got, with the status its caller saw, local answers (429, 503 UO, faults) included.
DS_TOTAL: Final = 7
DS_CODE: Final = 8
DS_CLASS: Final = 9
# Upgraded (WebSocket) connections per route (meshdev's `vhost.<v>.route.<r>.
# downstream_cx_upgrades_total` / `_active`, the listener's Envoy stats by route): upgrade
# requests taken (a counter), and those open now (a gauge).
UPG_TOTAL: Final = 10
UPG_ACTIVE: Final = 11
# A cluster's connections (Envoy's `cluster.<c>.upstream_cx_total`) and the bytes they moved
# (`upstream_cx_rx_bytes_total` / `_tx_bytes_total`, arg "rx" / "tx"): what a tcp cluster
# shows instead of requests.
CX_TOTAL: Final = 12
CX_BYTES: Final = 13
# The grpc-status gRPC callers of a route got (meshdev's `vhost.<v>.route.<r>.grpc.<code>`),
# arg: the code ("14").
GRPC_CODE: Final = 14
_ROUTE_ONLY: Final = frozenset({DS_TOTAL, DS_CODE, DS_CLASS, UPG_TOTAL, UPG_ACTIVE, GRPC_CODE})
_CLUSTER_ONLY: Final = frozenset({CX_TOTAL, CX_BYTES})

FLAG_STATS: Final[dict[str, str]] = {
    "upstream_rq_pending_overflow": "UO",
    "upstream_cx_overflow": "UO",
    "upstream_rq_retry_overflow": "UO",
    "upstream_rq_timeout": "UT",
    "upstream_cx_connect_fail": "UF",
    "upstream_cx_none_healthy": "UH",
    "upstream_rq_retry_limit_exceeded": "URX",
    "http_local_rate_limit.rate_limited": "RL",
    "fault.aborts_injected": "FI",
    "fault.delays_injected": "DI",
    "no_route": "NR",
}
# Circuit-breaker overflows: each is one trip of a cluster's breaker.
TRIP_STATS: Final = frozenset(
    {"upstream_rq_pending_overflow", "upstream_cx_overflow", "upstream_rq_retry_overflow"}
)

# What the dashboard asks /stats/stream for (`?filter=`): the stats it reads and no others,
# so neither side spends time on gauges, outlier counters, cluster latency histograms, or
# `_5xx`-style class counters (the stream has every status code's own counter; classes
# matter only for a polled Envoy, which is read unfiltered). The security view's (security.py)
# are read by name, not through `meaning`: the RBAC filter's decisions, and TLS handshakes
# and their failures on inbound listeners and on clusters.
STREAM_FILTER: Final = (
    r"(?:^(?!cluster\.).*\.upstream_rq_time"
    r"|(?<!\.retry)\.upstream_rq_(?:total|retry|\d{3})"
    r"|^vhost\..*\.downstream_rq_(?:total|\d{3})"
    r"|^vhost\..*\.downstream_cx_upgrades_(?:total|active)"
    r"|^vhost\..*\.grpc\.\d{1,2}"
    r"|^cluster\..*\.upstream_cx_(?:total|rx_bytes_total|tx_bytes_total)"
    r"|^http\..*\.rbac\.(?:allowed|denied)"
    r"|^listener\..*\.(?:ssl\.(?:handshake|connection_error|fail_verify_error|fail_verify_san"
    r"|fail_verify_no_cert)|no_filter_chain_match)"
    r"|^cluster\..*\.ssl\.(?:handshake|connection_error|fail_verify_error|fail_verify_san)"
    r"|(?:^|\.)(?:" + "|".join(re.escape(k) for k in FLAG_STATS) + r"))$"
)

_CODE = re.compile(r"(up|down)stream_rq_(\d{3})")
_CLASS = re.compile(r"(up|down)stream_rq_([1-5])xx")

# (scope kind, scope key, what, arg, is a breaker trip). The key is a cluster or listener
# prefix (str) or a route (vhost, route): `Any` keeps the hot loop free of casts.
Meaning = tuple[int, Any, int, str, bool]


def _what(stat: str) -> tuple[int, str] | None:
    if stat == "upstream_rq_total":
        return TOTAL, ""
    if stat == "downstream_rq_total":
        return DS_TOTAL, ""
    if stat == "downstream_cx_upgrades_total":
        return UPG_TOTAL, ""
    if stat == "downstream_cx_upgrades_active":
        return UPG_ACTIVE, ""
    if stat == "upstream_rq_retry":
        return RETRY, ""
    if stat == "upstream_cx_total":
        return CX_TOTAL, ""
    if stat == "upstream_cx_rx_bytes_total":
        return CX_BYTES, "rx"
    if stat == "upstream_cx_tx_bytes_total":
        return CX_BYTES, "tx"
    if stat == "upstream_rq_time":
        return TIME, ""
    if stat.startswith("grpc.") and stat[5:].isdigit():
        return GRPC_CODE, stat[5:]
    flag = FLAG_STATS.get(stat)
    if flag is not None:
        return FLAG, flag
    if m := _CODE.fullmatch(stat):
        return (CODE if m.group(1) == "up" else DS_CODE), m.group(2)
    if m := _CLASS.fullmatch(stat):
        return (CLASS if m.group(1) == "up" else DS_CLASS), m.group(2)
    return None


class StatNames:
    """Classifies stat names; `learn` teaches it configured names (needed only for odd ones)."""

    def __init__(self) -> None:
        self._known: tuple[frozenset[str], ...] = (frozenset(),) * 4
        self._tags = TagExtractor()
        self._cache: dict[str, Meaning | None] = {}

    def learn(
        self,
        clusters: Iterable[str] = (),
        vhosts: Iterable[str] = (),
        routes: Iterable[str] = (),
        http_prefixes: Iterable[str] = (),
    ) -> None:
        known = tuple(
            old | frozenset(new)
            for old, new in zip(self._known, (clusters, vhosts, routes, http_prefixes), strict=True)
        )
        if known != self._known:
            self._known = known
            c, v, r, p = known
            self._tags = TagExtractor(clusters=c, virtual_hosts=v, routes=r, http_prefixes=p)
            self._cache.clear()

    def meaning(self, name: str) -> Meaning | None:
        try:
            return self._cache[name]
        except KeyError:
            m = self._cache[name] = self._classify(name)
            return m

    def _classify(self, name: str) -> Meaning | None:
        labels = dict(self._tags.extract(name).labels)
        scope: tuple[int, object, str] | None = None
        if CLUSTER_LABEL in labels:
            c = labels[CLUSTER_LABEL]
            scope = (CLUSTER, c, f"cluster.{c}.")
        elif ROUTE_LABEL in labels and VHOST_LABEL in labels:
            v, r = labels[VHOST_LABEL], labels[ROUTE_LABEL]
            scope = (ROUTE, (v, r), f"vhost.{v}.route.{r}.")
        elif HTTP_PREFIX_LABEL in labels:
            p = labels[HTTP_PREFIX_LABEL]
            scope = (LISTENER, p, f"http.{p}.")
        elif RATELIMIT_PREFIX_LABEL in labels:
            p = labels[RATELIMIT_PREFIX_LABEL]
            scope = (LISTENER, p, f"{p}.")
        elif name in FLAG_STATS:
            scope = (LISTENER, "", "")
        if scope is None or not name.startswith(scope[2]):
            return None
        kind, key, head = scope
        stat = name[len(head) :]
        what = _what(stat)
        if what is None:
            return None
        if (
            (kind == LISTENER and what[0] != FLAG)
            or (kind != ROUTE and what[0] in _ROUTE_ONLY)
            or (kind != CLUSTER and what[0] in _CLUSTER_ONLY)
        ):
            return None
        return kind, key, what[0], what[1], stat in TRIP_STATS
