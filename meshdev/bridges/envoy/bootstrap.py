"""One pod's SidecarConfig as one Envoy v3 bootstrap: node, admin, runtime, static resources.

The admin API listens on the pod's loopback, where only the pod's own containers reach it:
Envoy's admin takes POSTs (/runtime_modify, /quitquitquit, ...) from anyone who reaches it,
with no token like meshdev's. What is read from outside (the dashboard's `meshdev watch`)
goes through a listener of its own, `meshdev_admin` (as Istio serves its stats on 15090),
which passes GET and HEAD on to the admin API and refuses every other method. Its own
traffic is kept out of the stats, so a dashboard polling through it does not watch itself.
"""

from __future__ import annotations

from meshdev.bridges.envoy import proto
from meshdev.bridges.envoy.clusters import CERT_DIR, cluster
from meshdev.bridges.envoy.listeners import listener
from meshdev.bridges.envoy.notes import Notes
from meshdev.bridges.envoy.proto import Json
from meshdev.bridges.envoy.routes import ClusterFacts
from meshdev.bridges.envoy.tracing import collector_clusters
from meshdev.common import sidecar_config as sc

ADMIN_VIEW = "meshdev_admin"
# Istio's stats port, which is also a listener passing reads on to the admin API.
ADMIN_VIEW_PORT = 15090
READ_ONLY_BODY = "the admin API is read-only from outside the pod: POST from inside it\n"


def admin_view(address: str, port: int, admin_address: str) -> tuple[Json, Json]:
    """The read-only listener in front of the admin API, and its cluster."""
    reads = {
        "name": ":method",
        "string_match": {"safe_regex": {"regex": "GET|HEAD"}},
    }
    hcm = {
        "stat_prefix": ADMIN_VIEW,
        "codec_type": "AUTO",
        "route_config": {
            "name": ADMIN_VIEW,
            "virtual_hosts": [
                {
                    "name": ADMIN_VIEW,
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/", "headers": [reads]},
                            # /stats/stream-like long reads: no route timeout.
                            "route": {"cluster": ADMIN_VIEW, "timeout": "0s"},
                        },
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {
                                "status": 405,
                                "body": {"inline_string": READ_ONLY_BODY},
                            },
                        },
                    ],
                }
            ],
        },
        "http_filters": [{"name": proto.ROUTER_FILTER, "typed_config": proto.typed(proto.ROUTER)}],
    }
    view = {
        "name": ADMIN_VIEW,
        "address": proto.socket_address(address, port),
        "filter_chains": [
            {"filters": [{"name": proto.HCM_FILTER, "typed_config": proto.typed(proto.HCM, hcm)}]}
        ],
    }
    upstream = {
        "name": ADMIN_VIEW,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_VIEW,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": proto.socket_address(admin_address, sc.ADMIN_PORT)
                            }
                        }
                    ]
                }
            ],
        },
    }
    return view, upstream


def bootstrap(
    cfg: sc.SidecarConfig,
    notes: Notes,
    *,
    admin_address: str,
    view: tuple[str, int] | None = None,
) -> Json:
    """`admin_address`: where the admin API binds (the pod's loopback); `view`: where the
    read-only admin listener binds, if the admin API is to be read from outside the pod."""
    facts = ClusterFacts(cfg.clusters)
    listeners = [listener(lst, cfg, facts, notes) for lst in cfg.listeners]
    clusters = [cluster(c, notes) for c in cfg.clusters] + collector_clusters(cfg)
    out: Json = {
        "node": {
            "id": cfg.node,
            "cluster": cfg.service or "ingress",
            "metadata": {"mesh": cfg.mesh, **({"subset": cfg.subset} if cfg.subset else {})},
        },
        "admin": {"address": proto.socket_address(admin_address, cfg.admin.port)},
        # An admin layer, so that POST /runtime_modify (the fault keys) works as on meshdev.
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
    }
    notes.add(
        "admin",
        "Envoy's admin API takes POSTs (/runtime_modify, /quitquitquit) without meshdev's "
        "token: it listens on the pod's loopback only"
        + (
            f", and is read from outside through the GET-only listener {ADMIN_VIEW}" if view else ""
        ),
    )
    if view is not None:
        address, port = view
        view_listener, view_cluster = admin_view(address, port, admin_address)
        listeners.append(view_listener)
        clusters.append(view_cluster)
        out["stats_config"] = {
            "stats_matcher": {
                "exclusion_list": {
                    "patterns": [
                        {"prefix": f"cluster.{ADMIN_VIEW}."},
                        {"prefix": f"http.{ADMIN_VIEW}."},
                        {"prefix": f"listener.{address}_{port}."},
                    ]
                }
            }
        }
    out["static_resources"] = {"listeners": listeners, "clusters": clusters}
    if any(c.tls is not None for c in cfg.clusters) or any(
        lst.mtls != "DISABLE" for lst in cfg.listeners
    ):
        notes.add(
            "security",
            f"Envoy reads the workload certificate, its key and the mesh's CA certificate from "
            f"{CERT_DIR}/cert.pem, key.pem and ca.pem: meshdev's CA does not put them there, "
            "and nothing renews them at half their cert_ttl as meshdev does",
        )
    if cfg.service_addresses or cfg.hosts_file:
        notes.add(
            "service_addresses",
            "the services' virtual addresses are a capture-time hosts file; Envoy writes none",
        )
    return out
