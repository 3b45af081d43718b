"""The security half of an export: mutual TLS as PeerAuthentication (the namespace's, then
each service's own mode), authorization as one AuthorizationPolicy per mesh-file policy."""

from __future__ import annotations

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.export_workloads import Doc, Target, labels, metadata
from meshdev.bridges.kube.report import Gaps
from meshdev.config.durations import format_duration
from meshdev.config.model import CERT_TTL, INGRESS_IDENTITY, Authorization, Mesh

SECURITY = "security.istio.io/v1"


def peer_authentications(mesh: Mesh, target: Target, gaps: Gaps) -> list[Doc]:
    """The namespace's mode, always: without a security section meshdev's hops are
    plaintext, where Istio's default would be PERMISSIVE mTLS."""
    annotations: dict[str, str] = {}
    sec = mesh.security
    if sec is not None and sec.cert_ttl != CERT_TTL:
        annotations[kc.CERT_TTL_ANNOTATION] = format_duration(sec.cert_ttl)
        gaps.add(
            "security.cert_ttl",
            "Istio's workload certificates' lifetime is istiod's setting "
            "(DEFAULT_WORKLOAD_CERT_TTL; 24h), not a resource's: set it when installing Istio",
        )
    return [
        {
            "apiVersion": SECURITY,
            "kind": "PeerAuthentication",
            "metadata": metadata(
                kc.MESH_WIDE_PEER_AUTHENTICATION, target.namespace, labels(mesh), annotations
            ),
            "spec": {"mtls": {"mode": sec.mtls if sec is not None else "DISABLE"}},
        }
    ]


def service_peer_authentication(mesh: Mesh, service: str, target: Target) -> Doc | None:
    policy = mesh.policies.get(service)
    if policy is None or policy.mtls is None:
        return None
    return {
        "apiVersion": SECURITY,
        "kind": "PeerAuthentication",
        "metadata": metadata(service, target.namespace, labels(mesh, app=service)),
        "spec": {
            "selector": {"matchLabels": {kc.APP: service}},
            "mtls": {"mode": policy.mtls},
        },
    }


def _principal(mesh: Mesh, target: Target, service: str) -> str:
    # meshdev's gateway is sa/ingress of the mesh; Istio's is its own account in its namespace.
    if service == INGRESS_IDENTITY:
        return kc.GATEWAY_PRINCIPAL
    return kc.principal(target.namespace, service)


def principals(
    mesh: Mesh, target: Target, services: tuple[str, ...], raw: tuple[str, ...]
) -> list[str]:
    """`services` and `principals` are one list in meshdev; principals of the mesh's own
    namespace move to the cluster's (an exact one names a service, as the loader checks)."""
    own = kc.principal(mesh.name, "")
    out = [_principal(mesh, target, s) for s in services]
    for p in raw:
        if p.startswith(own) and "*" not in p:
            out.append(_principal(mesh, target, p.removeprefix(own)))
        elif p.startswith(own):
            out.append(kc.principal(target.namespace, "") + p.removeprefix(own))
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def authorization_policy(mesh: Mesh, service: str, a: Authorization, target: Target) -> Doc:
    rule: Doc = {}
    src = a.from_
    if src is not None:
        source: Doc = {}
        given = principals(mesh, target, src.services, src.principals)
        if given:
            source["principals"] = given
        denied = principals(mesh, target, src.not_services, src.not_principals)
        if denied:
            source["notPrincipals"] = denied
        rule["from"] = [{"source": source}]
    op = a.to
    if op is not None:
        operation: Doc = {}
        for key, value in (
            ("methods", op.methods),
            ("notMethods", op.not_methods),
            ("paths", op.paths),
            ("notPaths", op.not_paths),
        ):
            if value:
                operation[key] = list(value)
        rule["to"] = [{"operation": operation}]
    return {
        "apiVersion": SECURITY,
        "kind": "AuthorizationPolicy",
        "metadata": metadata(f"{service}-{a.name}", target.namespace, labels(mesh, app=service)),
        "spec": {
            "selector": {"matchLabels": {kc.APP: service}},
            "action": a.action,
            # One rule, as meshdev's policy; `{}` (no from, no to) matches every request.
            "rules": [rule],
        },
    }
