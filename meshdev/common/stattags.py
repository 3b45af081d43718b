"""Envoy's tag extraction: `cluster.backend.v1.upstream_rq_503` -> Prometheus name and labels.

Envoy cuts tag values out of dotted stat names with regexes that assume a value is one dotless
token. Ours often are not (`backend.v1`, subsets; `inbound|8080`), so the split point is found
from the other side: the stat suffixes are a known set (`upstream_*`, `circuit_breakers.*`,
...), so the value is everything between the scope and the first known suffix. Names from the
current config are tried first; they matter only for names a suffix scan would cut wrongly.

The result is Envoy's: `envoy_cluster_upstream_rq{envoy_response_code="503",
envoy_cluster_name="backend.v1"}`, so a query written against Envoy reads meshdev too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from meshdev.common.sidecar_config import SidecarConfig

NAMESPACE = "envoy_"

CLUSTER_LABEL = "envoy_cluster_name"
VHOST_LABEL = "envoy_virtual_host"
ROUTE_LABEL = "envoy_route"
VCLUSTER_LABEL = "envoy_virtual_cluster"
HTTP_PREFIX_LABEL = "envoy_http_conn_manager_prefix"
LISTENER_LABEL = "envoy_listener_address"
RATELIMIT_PREFIX_LABEL = "envoy_local_http_ratelimit_prefix"
TCP_PREFIX_LABEL = "envoy_tcp_prefix"
RESPONSE_CODE_LABEL = "envoy_response_code"
RESPONSE_CODE_CLASS_LABEL = "envoy_response_code_class"

# Envoy's two response-code extractors: `_rq_503` -> `_rq` + code, `_rq_5xx` -> `_rq_xx` + class.
_RESPONSE_CODE = re.compile(r"_rq_(\d{3})$")
_RESPONSE_CODE_CLASS = re.compile(r"_rq_(\d)xx$")
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_]")

# First token of a stat that follows a cluster / http / listener / route name. Deliberately no
# words a subset might be called (`canary`, `internal`): those are common version names.
_CLUSTER_STAT_PREFIXES = ("upstream_", "lb_", "membership_", "update_", "assignment_")
_CLUSTER_STAT_TOKENS = frozenset(
    {
        "circuit_breakers",
        "outlier_detection",
        "health_check",
        "retry_or_shadow_abandoned",
        "bind_errors",
        "max_host_weight",
        "original_dst_host_invalid",
    }
)
_HTTP_STAT_PREFIXES = ("downstream_", "rq_", "rs_", "no_", "passthrough_internal_redirect_")
_HTTP_STAT_TOKENS = frozenset(
    {
        "fault",
        "http_local_rate_limit",
        "local_rate_limit",
        "tracing",
        "user_agent",
        "rbac",
        "ext_authz",
        "cors",
        "buffer",
        "router",
    }
)
_LISTENER_STAT_PREFIXES = ("downstream_", "no_filter_chain_", "extension_config_", "worker_")
_LISTENER_STAT_TOKENS = frozenset({"http", "server_ssl_socket_factory", "ssl"})
_ROUTE_STAT_PREFIXES = ("upstream_",)
# tcp_proxy's own stats (`tcp.<stat_prefix>.<stat>`): Envoy's, and a prefix may hold a `|`
# (`inbound|6379`) or, hand-written, a dot.
_TCP_STAT_PREFIXES = ("downstream_", "upstream_flush_", "on_demand_cluster_", "early_data_")
_TCP_STAT_TOKENS = frozenset({"idle_timeout", "max_downstream_connection_duration"})


@dataclass(frozen=True, slots=True)
class TaggedName:
    """A stat name after tag extraction."""

    # Prometheus metric family, e.g. `envoy_cluster_upstream_rq`.
    family: str
    # Label pairs in Envoy's order (response code first, then the scope's names).
    labels: tuple[tuple[str, str], ...]
    # The stat with its tag values replaced by `<label>`: the family's HELP text.
    template: str


def _first_token(stat: str) -> str:
    dot = stat.find(".")
    return stat if dot < 0 else stat[:dot]


def _matcher(prefixes: tuple[str, ...], tokens: frozenset[str]) -> Callable[[str], bool]:
    def is_stat(stat: str) -> bool:
        token = _first_token(stat)
        return token in tokens or token.startswith(prefixes)

    return is_stat


_is_plain_cluster_stat = _matcher(_CLUSTER_STAT_PREFIXES, _CLUSTER_STAT_TOKENS)
# Envoy's response-code categories of a cluster's request stats (`cluster.<c>.external.
# upstream_rq_200`, `internal.`, `canary.`), and its router's `retry.` scope (the answers it
# retried: `cluster.<c>.retry.upstream_rq_503`, Envoy's `envoy_cluster_retry_upstream_rq`).
# Those words may also name a subset (`web.canary`), so they end a cluster's name only before
# a request stat; a configured name is tried first.
_CLUSTER_CATEGORIES = (
    "external.upstream_rq_",
    "internal.upstream_rq_",
    "canary.upstream_rq_",
    "retry.upstream_rq_",
)


def _is_cluster_stat(stat: str) -> bool:
    return stat.startswith(_CLUSTER_CATEGORIES) or _is_plain_cluster_stat(stat)


_is_http_stat = _matcher(_HTTP_STAT_PREFIXES, _HTTP_STAT_TOKENS)
_is_listener_stat = _matcher(_LISTENER_STAT_PREFIXES, _LISTENER_STAT_TOKENS)
_is_route_stat = _matcher(_ROUTE_STAT_PREFIXES, frozenset())
_is_tcp_stat = _matcher(_TCP_STAT_PREFIXES, _TCP_STAT_TOKENS)


def _is_vhost_stat(stat: str) -> bool:
    return stat.startswith(("route.", "vcluster.")) or _is_route_stat(stat)


def split_value(
    rest: str, known: Iterable[str], is_stat: Callable[[str], bool]
) -> tuple[str, str] | None:
    """Split `<value>.<stat>` where the value may contain dots; None if there is no stat."""
    ordered = sorted(known, key=len, reverse=True)
    for name in ordered:
        n = len(name)
        if rest.startswith(name) and rest[n : n + 1] == "." and is_stat(rest[n + 1 :]):
            return name, rest[n + 1 :]
    dot = rest.find(".", 1)
    while dot > 0:
        if is_stat(rest[dot + 1 :]):
            return rest[:dot], rest[dot + 1 :]
        dot = rest.find(".", dot + 1)
    # An unknown stat suffix: a configured name still tells where the value ends...
    for name in ordered:
        n = len(name)
        if rest.startswith(name) and rest[n : n + 1] == "." and len(rest) > n + 1:
            return name, rest[n + 1 :]
    # ...and failing that, Envoy's own rule: the value is one token.
    dot = rest.find(".")
    if dot > 0 and dot < len(rest) - 1:
        return rest[:dot], rest[dot + 1 :]
    return None


def sanitize(name: str) -> str:
    """Envoy's Prometheus name rule: anything outside [a-zA-Z0-9_] becomes `_`."""
    return _INVALID_NAME_CHARS.sub("_", name)


class TagExtractor:
    """Turns stat names into Prometheus families and labels; results are cached per name."""

    def __init__(
        self,
        *,
        clusters: Iterable[str] = (),
        virtual_hosts: Iterable[str] = (),
        routes: Iterable[str] = (),
        http_prefixes: Iterable[str] = (),
        tcp_prefixes: Iterable[str] = (),
    ) -> None:
        self._clusters = tuple(clusters)
        self._vhosts = tuple(virtual_hosts)
        self._routes = tuple(routes)
        self._http_prefixes = tuple(http_prefixes)
        self._tcp_prefixes = tuple(tcp_prefixes)
        self._cache: dict[str, TaggedName] = {}

    @classmethod
    def for_config(cls, config: SidecarConfig) -> TagExtractor:
        return cls(
            clusters=[c.name for c in config.clusters],
            virtual_hosts=[v.name for v in config.virtual_hosts],
            routes={r.name for v in config.virtual_hosts for r in v.routes},
            http_prefixes={
                p for lst in config.listeners if lst.tcp_proxy is None for p in (lst.name, lst.kind)
            },
            tcp_prefixes={lst.tcp_proxy.stat_prefix for lst in config.listeners if lst.tcp_proxy},
        )

    def extract(self, stat_name: str) -> TaggedName:
        tagged = self._cache.get(stat_name)
        if tagged is None:
            tagged = self._cache[stat_name] = self._extract(stat_name)
        return tagged

    def _scope(self, scope: str, rest: str) -> tuple[str, tuple[str, str] | None]:
        """The label a scope's name goes into, and `rest` split into (name, stat)."""
        if scope == "cluster":
            return CLUSTER_LABEL, split_value(rest, self._clusters, _is_cluster_stat)
        if scope == "http":
            return HTTP_PREFIX_LABEL, split_value(rest, self._http_prefixes, _is_http_stat)
        if scope == "listener" and not rest.startswith("admin."):
            return LISTENER_LABEL, split_value(rest, (), _is_listener_stat)
        if scope == "vhost":
            return VHOST_LABEL, split_value(rest, self._vhosts, _is_vhost_stat)
        if scope == "tcp":
            return TCP_PREFIX_LABEL, split_value(rest, self._tcp_prefixes, _is_tcp_stat)
        return "", None

    def _extract(self, name: str) -> TaggedName:
        labels: list[tuple[str, str]] = []
        # `stripped` loses the tag values (Envoy's tag-extracted name); `template` names them.
        scope, _, rest = name.partition(".")
        label, split = self._scope(scope, rest)
        if split is not None:
            value, stat = split
            labels.append((label, value))
            prefix = [f"{scope}.<{label}>"]
            stripped_prefix = [scope]
            if scope == "vhost":
                stat = self._vhost_inner(stat, labels, prefix, stripped_prefix)
            elif scope == "listener" and stat.startswith("http."):
                stat = self._listener_http(stat, labels, prefix, stripped_prefix)
            stripped = ".".join([*stripped_prefix, stat])
            head, tail = ".".join(prefix) + ".", stat
        else:
            stripped, head, tail = name, "", name
            rl = name.find(".http_local_rate_limit.")
            if rl > 0:
                labels.append((RATELIMIT_PREFIX_LABEL, name[:rl]))
                stripped, head, tail = (
                    name[rl + 1 :],
                    f"<{RATELIMIT_PREFIX_LABEL}>.",
                    name[rl + 1 :],
                )

        m = _RESPONSE_CODE.search(stripped)
        if m:
            labels.insert(0, (RESPONSE_CODE_LABEL, m.group(1)))
            stripped = stripped[: m.start()] + "_rq"
            tail = _RESPONSE_CODE.sub(f"_rq_<{RESPONSE_CODE_LABEL}>", tail)
        elif m := _RESPONSE_CODE_CLASS.search(stripped):
            labels.insert(0, (RESPONSE_CODE_CLASS_LABEL, m.group(1)))
            stripped = stripped[: m.start()] + "_rq_xx"
            tail = _RESPONSE_CODE_CLASS.sub(f"_rq_<{RESPONSE_CODE_CLASS_LABEL}>xx", tail)
        return TaggedName(NAMESPACE + sanitize(stripped), tuple(labels), head + tail)

    def _listener_http(
        self,
        stat: str,
        labels: list[tuple[str, str]],
        template: list[str],
        stripped: list[str],
    ) -> str:
        """`http.<prefix>.<stat>` after a listener's address: the connection manager's stats
        per listener (`listener.<a>.http.<p>.downstream_rq_2xx`), Envoy's
        `envoy_listener_http_downstream_rq_xx` with both names as labels."""
        split = split_value(stat[5:], self._http_prefixes, _is_http_stat)
        if split is None:
            return stat
        labels.append((HTTP_PREFIX_LABEL, split[0]))
        template.append(f"http.<{HTTP_PREFIX_LABEL}>")
        stripped.append("http")
        return split[1]

    def _vhost_inner(
        self,
        stat: str,
        labels: list[tuple[str, str]],
        template: list[str],
        stripped: list[str],
    ) -> str:
        """`route.<r>.<stat>` / `vcluster.<vc>.<stat>` after the virtual host's name."""
        for kind, label, known in (
            ("route", ROUTE_LABEL, self._routes),
            ("vcluster", VCLUSTER_LABEL, ()),
        ):
            if stat.startswith(kind + "."):
                split = split_value(stat[len(kind) + 1 :], known, _is_route_stat)
                if split is not None:
                    labels.append((label, split[0]))
                    template.append(f"{kind}.<{label}>")
                    stripped.append(kind)
                    return split[1]
        return stat
