"""Envoy's grpc_stats filter counters of one cluster:
`cluster.<c>.grpc.<service>.<method>.{success,failure,total}` and `.<grpc-status>` (the numeric
code), made per method on first use. A client picks the paths, so past MAX_METHODS methods new
ones share `grpc.unknown.unknown.` (as with Envoy's stats_for_all_methods off)."""

from __future__ import annotations

from typing import Final

from meshdev.sidecar.stats.store import Counter, Store


class _Method:
    __slots__ = ("codes", "failure", "prefix", "store", "success", "total")

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.success = store.counter(prefix + "success")
        self.failure = store.counter(prefix + "failure")
        self.total = store.counter(prefix + "total")
        self.codes: dict[int, Counter] = {}

    def charge(self, code: int) -> None:
        self.total.value += 1
        if code == 0:
            self.success.value += 1
        else:
            self.failure.value += 1
        counter = self.codes.get(code)
        if counter is None:
            counter = self.codes[code] = self.store.counter(f"{self.prefix}{code}")
        counter.value += 1


class GrpcStats:
    """The grpc_stats counters of one cluster, made per method on first use."""

    __slots__ = ("_cluster", "_methods", "_store")

    # A client picks the paths: past this many methods, new ones share one set.
    MAX_METHODS: Final = 256

    def __init__(self, store: Store, cluster: str) -> None:
        self._store = store
        self._cluster = cluster
        self._methods: dict[str, _Method] = {}

    def charge(self, path: str, code: int) -> None:
        method = self._methods.get(path)
        if method is None:
            service, _, name = path.lstrip("/").partition("/")
            if not service or not name or "/" in name or len(self._methods) >= self.MAX_METHODS:
                service, name = "unknown", "unknown"
            method = self._methods[path] = _Method(
                self._store, f"cluster.{self._cluster}.grpc.{service}.{name}."
            )
        method.charge(code)
