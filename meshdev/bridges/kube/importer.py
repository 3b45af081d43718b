"""Istio's and Kubernetes' documents -> a mesh.yaml meshdev's own loader accepts, with every
field it could not say listed by document and path (as comments atop the file, too)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.export_traffic import (
    IMPLICIT_ROUTES,
    gateway_envoy_filter,
    gateway_http,
    gateway_limits,
    parse_ingress_annotation,
)
from meshdev.bridges.kube.export_workloads import Target
from meshdev.bridges.kube.import_docs import Source
from meshdev.bridges.kube.import_security import (
    PeerModes,
    Principals,
    read_authorization_policies,
    read_peer_authentications,
)
from meshdev.bridges.kube.import_tracing import read_telemetries
from meshdev.bridges.kube.import_traffic import (
    Context,
    GatewayInfo,
    RouteDraft,
    ingress_from_spec,
    read_destination_rules,
    read_gateways,
    read_rate_limits,
    read_sidecars,
    read_virtual_services,
    suffixed,
)
from meshdev.bridges.kube.import_workloads import ImportedService, is_name, read_services
from meshdev.bridges.kube.report import Gaps, Note
from meshdev.bridges.kube.workloads import ImpliedEnv, common, service_fields
from meshdev.bridges.kube.yamltext import dump, load_all
from meshdev.config import Mesh, MeshInvalid, parse_mesh
from meshdev.config.model import Policy, Route, Tracing

Dict = dict[str, Any]

_KINDS = (
    "Namespace",
    "Service",
    "Deployment",
    "ServiceAccount",
    "DestinationRule",
    "VirtualService",
    "Gateway",
    "EnvoyFilter",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "Sidecar",
    "Telemetry",
)


class ImportFailed(Exception):
    """The documents give no mesh (no workload at all), or one the loader refuses."""


@dataclass(frozen=True)
class Imported:
    mesh: Mesh
    text: str
    notes: tuple[Note, ...]


def _documents(files: Sequence[tuple[str, str]], loose: list[Note]) -> list[Source]:
    out: list[Source] = []
    for label, text in files:
        try:
            docs = load_all(text)
        except yaml.YAMLError as exc:
            # A file that does not parse may hold any of the mesh: importing without it
            # would write a different mesh, so the import stops, pointing at the mistake.
            raise ImportFailed(f"{_where(label, exc)}: not YAML: {_problem(exc)}") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                loose.append(Note(f"{label}#{i + 1}", "", "not a Kubernetes object"))
                continue
            items = doc.get("items") if doc.get("kind") == "List" else [doc]
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    out.append(Source(label, i, item))
    return out


def _where(label: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return label
    return f"{label}:{mark.line + 1}:{mark.column + 1}"


def _problem(exc: yaml.YAMLError) -> str:
    # PyYAML's str() spans lines and names "<unicode string>" rather than the file.
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if not problem:
        return " ".join(str(exc).split())
    return f"{problem} ({context})" if context else str(problem)


def _namespace(sources: list[Source], given: str | None) -> str:
    if given:
        return given
    for s in sources:
        if s.kind == "Namespace" and s.name:
            return s.name
    # A document without one goes where kubectl's context points, usually `default`.
    named = Counter(
        s.namespace or "default" for s in sources if s.namespace != kc.GATEWAY_NAMESPACE
    )
    return named.most_common(1)[0][0] if named else "default"


def import_istio(
    files: Sequence[tuple[str, str]],
    name: str | None = None,
    namespace: str | None = None,
    output: str = "mesh.yaml",
) -> Imported:
    """`files`: (label, text) pairs; `name`: the mesh's (default: the namespace's, or what an
    export recorded); `namespace`: whose resources (default: the one the documents name)."""
    loose: list[Note] = []
    sources = _documents(files, loose)
    ns = _namespace(sources, namespace)
    kinds: dict[str, list[Source]] = {k: [] for k in _KINDS}
    gateway_filters: list[Source] = []
    for s in sources:
        gateway = s.get("spec", "workloadSelector", "labels") == kc.GATEWAY_SELECTOR
        if s.kind == "EnvoyFilter" and s.namespace == kc.GATEWAY_NAMESPACE and gateway:
            gateway_filters.append(s)
        elif s.kind == "EnvoyFilter" and s.namespace == kc.GATEWAY_NAMESPACE:
            # Istio's root namespace: its EnvoyFilters apply to the workloads they select.
            kinds["EnvoyFilter"].append(s)
        elif s.kind == "Namespace":
            (kinds["Namespace"] if s.name == ns else []).append(s)
            if s.name != ns:
                s.note((), f"not namespace {ns}, whose resources these are: left out")
        elif s.namespace not in (None, ns):
            s.note((), f"in namespace {s.namespace}, not {ns}: left out")
        elif s.kind in kinds:
            kinds[s.kind].append(s)
        else:
            s.note((), f"mesh.yaml has no place for a {s.kind or 'document without a kind'}")
    mesh_name = name
    base_image: str | None = None
    for s in kinds["Namespace"]:
        s.take("spec")
        mesh_name = mesh_name or s.annotations().get(kc.MESH_ANNOTATION)
        base_image = s.annotations().get(kc.BASE_IMAGE_ANNOTATION)
    mesh_name = mesh_name or ns
    if not is_name(mesh_name):
        raise ImportFailed(f"{mesh_name!r} is no meshdev mesh name: give --name")

    services = read_services(kinds["Service"], kinds["Deployment"])
    if not services:
        raise ImportFailed(_no_workload(files, sources, ns))
    for sa in kinds["ServiceAccount"]:
        sa.take("automountServiceAccountToken")
    ctx = Context(ns, services)
    policies = read_destination_rules(kinds["DestinationRule"], ctx)
    drafts, gateway_bound = read_virtual_services(kinds["VirtualService"], ctx)
    read_rate_limits(kinds["EnvoyFilter"], ctx, drafts)
    peers = read_peer_authentications(kinds["PeerAuthentication"], ctx)
    accounts: dict[str, list[str]] = {}
    for svc in services.values():
        for pod in svc.pods:
            if svc.name not in accounts.setdefault(pod.account, []):
                accounts[pod.account].append(svc.name)
    who = Principals(ns, mesh_name, accounts)
    authorization = read_authorization_policies(kinds["AuthorizationPolicy"], ctx, who)

    mesh: Dict = {"name": mesh_name}
    if base_image is not None:
        mesh["base_image"] = base_image
    calls = read_sidecars(kinds["Sidecar"], ctx)
    mesh["services"] = {n: _service(services[n], services) for n in sorted(services)}
    for n, called in calls.items():
        mesh["services"][n]["calls"] = called
    routes = {dest: _routes(dest, d) for dest, d in sorted(drafts.items())}
    mesh_routes = {dest: r for dest, r in routes.items() if r}
    gateways = read_gateways(kinds["Gateway"])
    pending = _ingress(gateway_bound, gateways, ctx, set(mesh_routes), mesh)
    tracing = read_telemetries(kinds["Telemetry"])
    if tracing is not None and Tracing.model_validate(tracing) != Tracing():
        mesh["tracing"] = tracing
    if mesh_routes:
        mesh["routes"] = mesh_routes
    _security(mesh, peers, policies, loose)
    kept = {d: p for d, p in sorted(policies.items()) if Policy.model_validate(p) != Policy()}
    if kept:
        mesh["policies"] = kept
    if authorization:
        mesh["authorization"] = _authorization(authorization, mesh, loose)
    _order(mesh)

    result = _validate(mesh, output)
    if pending is not None:
        result = _check_ingress(pending, mesh, result, ctx, set(mesh_routes), output)
    _gateway_filters(gateway_filters, result, ns, pending)
    notes = [*loose, *(n for s in sources for n in s.report())]
    text = _text(mesh, [f for f, _ in files], notes)
    return Imported(result, text, tuple(notes))


def _no_workload(files: Sequence[tuple[str, str]], sources: list[Source], ns: str) -> str:
    # The notes are not printed when nothing is written: the reason has to be in the error.
    if not files:
        return "no workload: no file to read (a folder is read for *.yaml, *.yml and *.json)"
    elsewhere = sorted({s.namespace or "default" for s in sources if s.kind == "Deployment"} - {ns})
    if elsewhere:
        return (
            f"no workload in namespace {ns}: these files' Deployments are in "
            f"{', '.join(elsewhere)} (--namespace picks one)"
        )
    return "no workload: these files have no Deployment meshdev can run"


def _service(svc: ImportedService, services: dict[str, ImportedService]) -> Dict:
    tcp = tuple((n, s.port) for n, s in services.items() if s.protocol == "tcp" and n != svc.name)
    own: dict[int, dict[str, str]] = {}
    for pod in svc.pods:
        implied = ImpliedEnv(svc.name, pod.subset, svc.port, tcp)
        for key in ("HOST", "PORT"):
            if key in pod.env and pod.env[key] != implied.listen()[key]:
                pod.source.note(
                    ("spec", "template", "spec", "containers"),
                    f"env {key}: meshdev sets where the app listens itself "
                    f"({key}={implied.listen()[key]})",
                )
        own[id(pod)] = implied.own(pod.env)
    out: Dict = {}
    fields = service_fields(svc.workloads(own))
    for key in ("build", "image", "command"):
        if key in fields:
            out[key] = fields[key]
    out["port"] = svc.port
    if svc.protocol != "http":
        out["protocol"] = svc.protocol
    if "replicas" in fields:
        out["replicas"] = fields["replicas"]
    health = common([p.health_path or "" for p in svc.pods])
    if health is None:
        first = svc.pods[0].health_path
        for p in svc.pods[1:]:
            if p.health_path != first:
                p.source.note(
                    ("spec", "template", "spec", "containers"),
                    f"meshdev probes one health path per service ({first or 'the port'})",
                )
        health = first
    if health and svc.protocol != "tcp":
        out["health_path"] = health
    alive = svc.pods[0].liveness_path
    for p in svc.pods[1:]:
        if p.liveness_path != alive:
            p.source.note(
                ("spec", "template", "spec", "containers"),
                f"meshdev probes one liveness path per service ({alive or 'none'})",
            )
    if alive:
        out["liveness_path"] = alive
    # Kubernetes' own default (600 s) is no choice made in these files.
    deadlines = {p.ready_timeout for p in svc.pods} - {None, 600}
    if deadlines:
        out["ready_timeout"] = f"{max(d for d in deadlines if d is not None)}s"
    if "env" in fields:
        out["env"] = fields["env"]
    excluded = svc.pods[0].excluded
    if excluded:
        out["excluded_ports"] = list(excluded)
    if "versions" in fields:
        out["versions"] = fields["versions"]
    return out


def _routes(dest: str, drafts: list[RouteDraft]) -> list[Dict]:
    out = []
    for i, d in enumerate(drafts):
        r = d.as_route(dest)
        if r.get("name") == f"r{i}":
            del r["name"]  # meshdev's own default name
        out.append(r)
    # meshdev's routes when there are none: what an export writes for a destination without.
    if [Route.model_validate(r) for r in out] == list(IMPLICIT_ROUTES):
        return []
    return out


@dataclass
class PendingIngress:
    """An exported gateway VirtualService whose annotation gave the ingress routes: they
    stand only if they still fold into its routes."""

    source: Source
    annotated: list[Dict]
    port: int
    load_path: str | None = None


def _ingress_doc(port: int, routes: list[Dict], load_path: str | None) -> Dict:
    doc: Dict = {"port": port}
    if load_path:
        doc["load_path"] = load_path
    doc["routes"] = unique_ingress_names(routes)
    return doc


def _ingress(
    bound: list[Source],
    gateways: dict[str, GatewayInfo],
    ctx: Context,
    has_routes: set[str],
    mesh: Dict,
) -> PendingIngress | None:
    ns = ctx.namespace
    routes: list[Dict] = []
    port: int | None = None
    load_path: str | None = None
    pending: PendingIngress | None = None
    for v in bound:
        v.take("spec", "gateways")
        refs = [str(g) for g in v.sequence("spec", "gateways")]
        found = [
            gateways[g.split("/")[-1]]
            for g in refs
            if g != "mesh" and g.split("/")[-1] in gateways and g.split("/")[0] in (ns, g)
        ]
        if "mesh" in refs:
            v.note(("spec", "gateways"), "also bound to the mesh: read as the gateway's only")
        if not found:
            v.note((), "bound to no Gateway of these files: left out")
            continue
        if port is not None and found[0].port != port:
            v.note(("spec", "gateways"), f"meshdev has one gateway, on port {port}")
        port = port or found[0].port
        load_path = load_path or found[0].load_path
        v.take("spec", "hosts")
        annotated = parse_ingress_annotation(v.annotations().get(kc.INGRESS_ROUTES_ANNOTATION, ""))
        if annotated and any(r.to not in ctx.services for r in annotated):
            annotated = None  # names services these files do not run: the spec decides
        if annotated and pending is None and not routes and len(bound) == 1:
            dumped = [r.model_dump(mode="json", exclude_defaults=True) for r in annotated]
            pending = PendingIngress(v, dumped, port, load_path)
            routes = dumped
            continue
        routes += ingress_from_spec(v, ctx, has_routes)
    if routes and port is not None:
        mesh["ingress"] = _ingress_doc(port, routes, load_path)
    return pending


def unique_ingress_names(routes: list[Dict]) -> list[Dict]:
    """meshdev's ingress route names (or their r<N> defaults) are unique."""
    seen: set[str] = set()
    for i, r in enumerate(routes):
        name = str(r.get("name") or f"r{i}")
        n = 2
        while name in seen:
            name = suffixed(str(r.get("name") or f"r{i}"), n)
            n += 1
        if name != (r.get("name") or f"r{i}"):
            r["name"] = name
        seen.add(name)
    return routes


def _check_ingress(
    pending: PendingIngress,
    mesh: Dict,
    result: Mesh,
    ctx: Context,
    has_routes: set[str],
    output: str,
) -> Mesh:
    v = pending.source
    assert result.ingress is not None
    expected = json.loads(json.dumps(gateway_http(result, result.ingress, Gaps())))
    if expected == v.get("spec", "http"):
        v.take("spec", "http")
        return result
    v.note(
        ("metadata", "annotations"),
        f"{kc.INGRESS_ROUTES_ANNOTATION} no longer matches spec.http (edited since the "
        "export?): the routes are read from spec.http",
    )
    routes = ingress_from_spec(v, ctx, has_routes)
    if routes:
        mesh["ingress"] = _ingress_doc(pending.port, routes, pending.load_path)
    else:
        mesh.pop("ingress", None)
    _order(mesh)
    return _validate(mesh, output)


def _gateway_filters(
    filters: list[Source], mesh: Mesh, ns: str, pending: PendingIngress | None
) -> None:
    """The gateway's rate-limit EnvoyFilter comes from the destinations' routes: read when it
    is what they give, else listed."""
    for e in filters:
        expected: Dict | None = None
        if mesh.ingress is not None and pending is not None:
            limits = gateway_limits(mesh, mesh.ingress)
            if limits:
                expected = gateway_envoy_filter(mesh, limits, Target(ns))["spec"]
        if expected is not None and json.loads(json.dumps(expected)) == e.get("spec"):
            e.take("spec")
        else:
            e.note(
                (),
                "meshdev's gateway limits the routes of the service it picked (their "
                "rate_limit), and this is not what they give: left out",
            )


def _security(mesh: Dict, peers: PeerModes, policies: dict[str, Dict], loose: list[Note]) -> None:
    modes = dict(peers.services)
    namespace = peers.namespace
    if namespace == "DISABLE" and all(m == "DISABLE" for m in modes.values()):
        security: Dict | None = None
    elif namespace is None:
        security = {}
        if not peers.found:
            loose.append(
                Note(
                    "(these files)",
                    "",
                    "no PeerAuthentication: Istio's default (PERMISSIVE mutual TLS) is "
                    "mesh.yaml's `security: {}`",
                )
            )
    else:
        security = {"mtls": namespace}
    if security is not None and peers.cert_ttl is not None:
        security["cert_ttl"] = peers.cert_ttl
    if security is not None:
        mesh["security"] = security
    for svc, mode in sorted(modes.items()):
        policies.setdefault(svc, {})["mtls"] = mode


def _authorization(
    found: dict[str, list[Dict]], mesh: Dict, loose: list[Note]
) -> dict[str, list[Dict]]:
    """Policies naming callers need mTLS on their destination (only it proves who calls)."""
    out: dict[str, list[Dict]] = {}
    security = mesh.get("security")
    for dest, policies in sorted(found.items()):
        mode = (mesh.get("policies", {}).get(dest, {}) or {}).get("mtls")
        if mode is None:
            mode = "DISABLE" if security is None else security.get("mtls", "PERMISSIVE")
        kept = []
        for p in policies:
            if "from" in p and mode == "DISABLE":
                loose.append(
                    Note(
                        f"authorization.{dest}",
                        str(p["name"]),
                        "names its callers, which only mutual TLS proves, and mTLS is off "
                        f"for {dest}: left out",
                    )
                )
                continue
            kept.append(p)
        if kept:
            out[dest] = kept
    return out


def _order(mesh: Dict) -> None:
    keys = (
        "name",
        "base_image",
        "services",
        "ingress",
        "tracing",
        "routes",
        "policies",
        "security",
        "authorization",
    )
    ordered = {k: mesh[k] for k in keys if k in mesh}
    mesh.clear()
    mesh.update(ordered)


def _validate(mesh: Dict, output: str) -> Mesh:
    try:
        return parse_mesh(dump(mesh).encode(), output)
    except MeshInvalid as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise ImportFailed(f"the imported mesh does not validate: {problems}") from None


def _text(mesh: Dict, files: list[str], notes: list[Note]) -> str:
    lines = [f"# Imported by `meshdev import istio` from {', '.join(files)}."]
    if notes:
        lines.append("# Not carried over (mesh.yaml cannot say it), by document and field:")
        # A note quoting a document's text can span lines: each must stay a comment, or
        # the mesh.yaml written would not load.
        lines += [f"#   {line}" for n in notes for line in str(n).splitlines()]
    return "\n".join(lines) + "\n" + dump(mesh)
