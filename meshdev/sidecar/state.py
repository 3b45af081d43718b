"""The data plane's live state, re-exported from the modules that hold it: `DataPlane`
(dataplane.py), the compiled config's entries (compiled.py), what outlives config swaps
(cluster_state.py, cluster_host.py) and the compiler that joins them (compiler.py)."""

from meshdev.sidecar.dataplane import STATS_SYNC_INTERVAL, DataPlane
from meshdev.sidecar.router.compiled import (
    ClusterSnapshot,
    Compiled,
    ListenerEntry,
    RouteEntry,
    VHostEntry,
)
from meshdev.sidecar.upstream.cluster import ClusterState
from meshdev.sidecar.upstream.host import Host

__all__ = [
    "STATS_SYNC_INTERVAL",
    "ClusterSnapshot",
    "ClusterState",
    "Compiled",
    "DataPlane",
    "Host",
    "ListenerEntry",
    "RouteEntry",
    "VHostEntry",
]
