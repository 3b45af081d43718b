"""Clusters: meshdev's rendered clusters as Envoy's, endpoints exactly as the plan placed them.

Endpoints given as IP addresses make a STATIC cluster; endpoints given by name (a compose
service, say) make a STRICT_DNS one, which resolves every name and balances over all of them
(a STATIC cluster refuses anything but an IP). Policies map field for field: lb_policy,
connect_timeout, the DEFAULT priority's circuit-breaker thresholds, consecutive-5xx outlier
detection, and HTTP/2 (h2c) to the endpoints as Istio sets it for grpc/http2 ports.
"""

from __future__ import annotations

import ipaddress

from meshdev.bridges.envoy import proto
from meshdev.bridges.envoy.notes import Notes
from meshdev.bridges.envoy.proto import Json
from meshdev.common import sidecar_config as sc

LB_POLICIES = {
    "round_robin": "ROUND_ROBIN",
    "least_request": "LEAST_REQUEST",
    "random": "RANDOM",
    "ring_hash": "RING_HASH",
}
# Where the mesh's workload certificate, key and CA certificate are read from when mutual TLS
# is on (see docs/bridges-envoy.md: meshdev delivers them to its own sidecars on POST /certs;
# for Envoy they must be put there).
CERT_DIR = "/etc/envoy/certs"
CERT_FILE = f"{CERT_DIR}/cert.pem"
KEY_FILE = f"{CERT_DIR}/key.pem"
CA_FILE = f"{CERT_DIR}/ca.pem"


def policy_field(cluster: str) -> str:
    """The mesh.yaml policy a cluster's settings come from: `backend.v1` -> policies.backend;
    an inbound cluster takes its pod's service's (named by the caller)."""
    return f"policies.{cluster.split('.', 1)[0]}"


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def tls_context(spiffe_ids: tuple[str, ...]) -> Json:
    """The certificates a sidecar presents and the CA and identities it accepts (Istio's
    ISTIO_MUTUAL), as files."""
    return {
        "tls_certificates": [
            {"certificate_chain": {"filename": CERT_FILE}, "private_key": {"filename": KEY_FILE}}
        ],
        "validation_context": {
            "trusted_ca": {"filename": CA_FILE},
            "match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": s}} for s in spiffe_ids
            ],
        },
    }


def cluster(c: sc.Cluster, notes: Notes) -> Json:
    field = policy_field(c.name)
    dns = any(not is_ip(e.address) for e in c.endpoints)
    out: Json = {
        "name": c.name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": proto.duration(c.connect_timeout),
        "lb_policy": LB_POLICIES[c.lb],
        "load_assignment": {
            "cluster_name": c.name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": proto.socket_address(e.address, e.port),
                                # Shown by /clusters as the host's hostname: the pod.
                                "hostname": e.pod,
                            }
                        }
                        for e in c.endpoints
                    ]
                }
            ]
            if c.endpoints
            else [],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": c.circuit_breaker.max_connections,
                    "max_pending_requests": c.circuit_breaker.max_pending_requests,
                    "max_requests": c.circuit_breaker.max_requests,
                    "max_retries": c.circuit_breaker.max_retries,
                }
            ]
        },
    }
    if dns:
        # Compose networks (and most container networks) resolve names to IPv4 only.
        out["dns_lookup_family"] = "V4_ONLY"
    od = c.outlier_detection
    if od is not None:
        percent = round(od.max_ejection_percent)
        if percent != od.max_ejection_percent:
            notes.add(
                f"{field}.outlier_detection.max_ejection_percent",
                f"Envoy takes a whole percent: {od.max_ejection_percent:g} becomes {percent}",
            )
        out["outlier_detection"] = {
            "consecutive_5xx": od.consecutive_5xx,
            "interval": proto.duration(od.interval),
            "base_ejection_time": proto.duration(od.base_ejection_time),
            "max_ejection_percent": percent,
            # Envoy also ejects by success rate unless told not to; meshdev only counts
            # consecutive 5xx.
            "enforcing_success_rate": 0,
        }
    if c.http2:
        out["typed_extension_protocol_options"] = {
            proto.UPSTREAM_HTTP: proto.typed(
                proto.UPSTREAM_HTTP, {"explicit_http_config": {"http2_protocol_options": {}}}
            )
        }
    if c.tls is not None:
        context = tls_context(c.tls.spiffe_ids)
        if c.http2:
            context["alpn_protocols"] = ["h2"]
        out["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": proto.typed(proto.UPSTREAM_TLS, {"common_tls_context": context}),
        }
    return out
