"""Rules across fields that types cannot say: references, weights, regexes, ports, identities.

Every rule adds a located problem and goes on, so the user sees all of them in one run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from pathlib import Path as FsPath

from meshdev.common.http_methods import method_problem
from meshdev.common.sidecar_config import collector_problem
from meshdev.common.workload_certs import principal
from meshdev.config.durations import format_duration
from meshdev.config.model import (
    INGRESS_IDENTITY,
    MAX_CERT_TTL,
    MIN_CERT_TTL,
    Authorization,
    AuthzOperation,
    AuthzSource,
    Match,
    Mesh,
    Route,
    Service,
    env_prefix,
)
from meshdev.config.problems import Path, Problem
from meshdev.config.yamlsource import SourceMap

# A value of an authorization field: (key, index, as written, as matched: a service's is its
# principal).
_Entry = tuple[str, int, str, str]

# The sidecar shares each pod's network namespace (admin, outbound, inbound; as Istio).
SIDECAR_PORTS = {15000: "admin", 15001: "outbound", 15006: "inbound"}


class _Check:
    def __init__(self, mesh: Mesh, file: str, source: SourceMap, base_dir: FsPath | None) -> None:
        self.mesh = mesh
        self.file = file
        self.source = source
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def add(self, path: Path, message: str, *, at_key: bool = False) -> None:
        pos = self.source.key_pos(path) if at_key else self.source.value_pos(path)
        self.problems.append(Problem(self.file, pos, path, message))

    def unknown(
        self, path: Path, kind: str, name: str, choices: list[str], *, at_key: bool
    ) -> None:
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = (
            f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(choices))}"
        )
        self.add(path, f"unknown {kind} {name!r}{hint}", at_key=at_key)

    # -- destinations ---------------------------------------------------------------------

    def destinations(self) -> list[str]:
        names = list(self.mesh.services)
        for svc_name, svc in self.mesh.services.items():
            names += [f"{svc_name}.{v}" for v in svc.versions]
        return names

    def check_destination(self, path: Path, name: str, *, at_key: bool = False) -> None:
        service, _, subset = name.partition(".")
        if service not in self.mesh.services:
            self.unknown(path, "service", service, list(self.mesh.services), at_key=at_key)
        elif subset and subset not in self.mesh.services[service].versions:
            versions = list(self.mesh.services[service].versions)
            if not versions:
                self.add(
                    path,
                    f"service {service!r} has no versions; give it versions: to split it",
                    at_key=at_key,
                )
            else:
                close = difflib.get_close_matches(subset, versions, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(versions)}"
                self.add(path, f"unknown version {subset!r} of {service}; {hint}", at_key=at_key)

    # -- rules ----------------------------------------------------------------------------

    def run(self) -> list[Problem]:
        for name, svc in self.mesh.services.items():
            self.service(("services", name), svc)
        if self.mesh.ingress is not None:
            ing = self.mesh.ingress
            if ing.port in SIDECAR_PORTS:
                self.add(
                    ("ingress", "port"),
                    f"port {ing.port} clashes with the gateway's {SIDECAR_PORTS[ing.port]} port",
                )
            seen: dict[str, int] = {}
            for i, ir in enumerate(ing.routes):
                path: Path = ("ingress", "routes", i)
                self.match((*path, "match"), ir.match)
                if ir.to not in self.mesh.services:
                    self.unknown(
                        (*path, "to"), "service", ir.to, list(self.mesh.services), at_key=False
                    )
                elif self.is_tcp(ir.to):
                    self.add(
                        (*path, "to"),
                        f"{ir.to} is a tcp service: the gateway routes HTTP by path, and other "
                        f"pods reach {ir.to} at ${env_prefix(ir.to)}_SERVICE_HOST instead",
                    )
                self.unique_name(path, ir.name or f"r{i}", seen, i)
        for dest, routes in self.mesh.routes.items():
            if dest not in self.mesh.services:
                self.unknown(
                    ("routes", dest), "service", dest, list(self.mesh.services), at_key=True
                )
            seen = {}
            for i, r in enumerate(routes):
                self.route(("routes", dest, i), r)
                self.unique_name(("routes", dest, i), r.name or f"r{i}", seen, i)
                if dest in self.mesh.services:
                    self.route_protocol(("routes", dest, i), dest, i, r)
        for dest, pol in self.mesh.policies.items():
            path = ("policies", dest)
            tcp = self.is_tcp(dest)
            if dest not in self.mesh.services:
                self.unknown(path, "service", dest, list(self.mesh.services), at_key=True)
            if tcp and pol.hash_header:
                self.add(
                    (*path, "hash_header"),
                    f"{dest} is a tcp service: connections have no headers; lb: ring_hash "
                    "hashes the client's address (Envoy's hash_policy source_ip)",
                )
            elif pol.lb == "ring_hash" and not pol.hash_header and not tcp:
                self.add((*path, "lb"), "ring_hash needs hash_header: the header to hash on")
            if pol.hash_header and pol.lb != "ring_hash":
                self.add((*path, "hash_header"), "hash_header only applies to lb: ring_hash")
            if tcp and pol.include_attempt_count:
                self.add(
                    (*path, "include_attempt_count"),
                    f"{dest} is a tcp service: connections have no answers to carry "
                    "x-envoy-attempt-count",
                )
        self.tcp_ports()
        self.security()
        self.tracing()
        for dest, policies in self.mesh.authorization.items():
            self.authorization(dest, policies)
        if self.mesh.base_image is not None and not self.mesh.base_image.strip():
            self.add(("base_image",), "must not be empty")
        return self.problems

    # -- tracing --------------------------------------------------------------------------

    def tracing(self) -> None:
        tracing = self.mesh.tracing
        for key in ("zipkin", "otlp"):
            url = getattr(tracing, key)
            if url is None:
                continue
            problem = collector_problem(url)
            if problem is not None:
                self.add(("tracing", key), problem)
            elif key == "zipkin" and url.rstrip("/").endswith("/v1/traces"):
                self.add(("tracing", key), "this is an OTLP path (/v1/traces): give it as otlp")
            elif key == "otlp" and "/api/v2/spans" in url:
                self.add(
                    ("tracing", key), "this is a Zipkin path (/api/v2/spans): give it as zipkin"
                )

    # -- security -------------------------------------------------------------------------

    def security(self) -> None:
        sec = self.mesh.security
        if sec is not None and not MIN_CERT_TTL <= sec.cert_ttl <= MAX_CERT_TTL:
            low = sec.cert_ttl < MIN_CERT_TTL
            bound = format_duration(MIN_CERT_TTL if low else MAX_CERT_TTL)
            self.add(
                ("security", "cert_ttl"),
                f"must be at least {bound}" if low else f"must be at most {bound} (a year)",
            )
        gateway = sec is not None and self.mesh.ingress is not None
        if gateway and INGRESS_IDENTITY in self.mesh.services:
            self.add(
                ("services", INGRESS_IDENTITY),
                f"with security, {principal(self.mesh.name, INGRESS_IDENTITY)} is the ingress "
                "gateway's identity: give this service another name",
                at_key=True,
            )
        for dest, pol in self.mesh.policies.items():
            if sec is None and pol.mtls not in (None, "DISABLE"):
                self.add(
                    ("policies", dest, "mtls"),
                    "mutual TLS needs the mesh's CA and workload certificates: add a security "
                    "section (security: {} takes Istio's defaults)",
                )

    def authorization(self, dest: str, policies: tuple[Authorization, ...]) -> None:
        path: Path = ("authorization", dest)
        known = dest in self.mesh.services
        if not known:
            self.unknown(path, "service", dest, list(self.mesh.services), at_key=True)
        seen: dict[str, int] = {}
        for i, pol in enumerate(policies):
            if pol.name in seen:
                self.add(
                    (*path, i, "name"),
                    f"duplicate policy name {pol.name!r} (also policy {seen[pol.name]})",
                )
            else:
                seen[pol.name] = i
            if pol.from_ is not None:
                self.authz_source((*path, i, "from"), dest if known else None, pol.from_)
            if pol.to is not None:
                self.authz_operation((*path, i, "to"), dest, pol.to)

    def authz_source(self, path: Path, dest: str | None, src: AuthzSource) -> None:
        if not (src.services or src.not_services or src.principals or src.not_principals):
            self.add(
                path,
                "give services, principals, not_services or not_principals; leave `from` out "
                "to match every caller",
            )
            return
        callers = [*self.mesh.services, INGRESS_IDENTITY]
        for key in ("services", "not_services"):
            for j, name in enumerate(getattr(src, key)):
                if name not in callers:
                    self.unknown((*path, key, j), "service", name, callers, at_key=False)
        # An exact principal of this mesh's namespace names a service: check it as one.
        ours = principal(self.mesh.name, "")
        for key in ("principals", "not_principals"):
            for j, value in enumerate(getattr(src, key)):
                where = (*path, key, j)
                problem = _pattern_problem(value, "principal")
                if value.startswith("spiffe://"):
                    problem = (
                        "principals are SPIFFE IDs without the scheme, as Istio writes them; "
                        f"did you mean {value.removeprefix('spiffe://')!r}?"
                    )
                if problem is not None:
                    self.add(where, problem)
                elif "*" not in value and not value.startswith(ours):
                    self.add(
                        where,
                        f"no workload of mesh {self.mesh.name!r} has this principal; theirs "
                        f"are {ours}<service>",
                    )
                elif "*" not in value and value.removeprefix(ours) not in callers:
                    self.unknown(where, "service", value.removeprefix(ours), callers, at_key=False)

        # `services` are principals: one list, and `not_services` one with `not_principals`.
        def entries(services: str, principals: str) -> list[_Entry]:
            return [
                *(
                    (services, j, n, principal(self.mesh.name, n))
                    for j, n in enumerate(getattr(src, services))
                ),
                *((principals, j, v, v) for j, v in enumerate(getattr(src, principals))),
            ]

        self.contradictions(
            path,
            entries("services", "principals"),
            entries("not_services", "not_principals"),
            lambda v: _pattern_problem(v, "principal") is None,
            "caller",
        )
        if dest is not None and self.mesh.mtls_mode(dest) == "DISABLE":
            if self.mesh.security is None:
                why = "the mesh has no security section (security: {} turns mTLS on)"
            elif (pol := self.mesh.policies.get(dest)) is not None and pol.mtls is not None:
                why = f"policies.{dest}.mtls is DISABLE"
            else:
                why = "security.mtls is DISABLE"
            self.add(
                path,
                f"names callers by identity, which only mutual TLS proves, but {dest} takes "
                f"plaintext only: {why}",
            )

    def authz_operation(self, path: Path, dest: str, op: AuthzOperation) -> None:
        if not (op.methods or op.not_methods or op.paths or op.not_paths):
            self.add(
                path,
                "give methods, paths, not_methods or not_paths; leave `to` out to match every "
                "request",
            )
            return
        if self.is_tcp(dest):
            self.add(
                path,
                f"{dest} is a tcp service: its connections have no method or path, only a "
                "caller; leave `to` out",
            )
            return
        for key in ("methods", "not_methods"):
            for j, meth in enumerate(getattr(op, key)):
                if (problem := method_problem(meth)) is not None:
                    self.add((*path, key, j), problem)
        for key in ("paths", "not_paths"):
            for j, value in enumerate(getattr(op, key)):
                problem = _pattern_problem(value, "path")
                if problem is None and not value.startswith(("/", "*")):
                    problem = "must start with / (or be a *suffix pattern)"
                if problem is None and "?" in value:
                    effect = "never matches" if key == "paths" else "excludes nothing"
                    bare = value.partition("?")[0]
                    if value.endswith("*") and not bare.endswith("*"):
                        bare += "*"
                    problem = (
                        f"{value!r} {effect}: a request's path is matched without its query "
                        "string (as Istio's), and authorization cannot look at the query; "
                        f"give {bare!r}"
                    )
                if problem is not None:
                    self.add((*path, key, j), problem)
        for key, valid in (
            ("methods", lambda v: method_problem(v) is None),
            ("paths", lambda v: _pattern_problem(v, "path") is None and _plain_path(v)),
        ):
            self.contradictions(
                path,
                [(key, j, v, v) for j, v in enumerate(getattr(op, key))],
                [(f"not_{key}", j, v, v) for j, v in enumerate(getattr(op, f"not_{key}"))],
                valid,
                "request",
            )

    def contradictions(
        self,
        path: Path,
        wanted: list[_Entry],
        excluded: list[_Entry],
        valid: Callable[[str], bool],
        noun: str,
    ) -> None:
        """Values a field asks for that its `not_` field excludes: a caller (or request) must
        match both, so it never matches there; when none is left, the section never matches.
        Values with problems of their own were reported already and are left out."""
        covered: list[tuple[_Entry, _Entry]] = []
        for entry in wanted:
            if not valid(entry[3]):
                continue
            for other in excluded:
                if valid(other[3]) and _covers(other[3], entry[3]):
                    covered.append((entry, other))
                    break
        for (key, j, written, _), (okey, k, owritten, _) in covered:
            shown = f" ({owritten!r})" if owritten != written else ""
            outcome = (
                f"this `{path[-1]}` matches no {noun} at all, so the policy never applies"
                if len(covered) == len(wanted)
                else f"no {noun} matches it here"
            )
            self.add(
                (*path, key, j), f"{written!r} is also excluded by {okey}[{k}]{shown}: {outcome}"
            )

    # -- protocols ------------------------------------------------------------------------

    def is_tcp(self, service: str) -> bool:
        svc = self.mesh.services.get(service.partition(".")[0])
        return svc is not None and svc.protocol == "tcp"

    def route_protocol(self, path: Path, dest: str, index: int, r: Route) -> None:
        """A route's policies and destinations must fit its destination's protocol: a tcp
        destination's route is Envoy's tcp_proxy, picked per connection with nothing to read."""
        tcp = self.is_tcp(dest)
        targets: list[tuple[Path, str]] = []
        if isinstance(r.to, str):
            targets = [((*path, "to"), r.to)]
        elif r.to is not None:
            targets = [((*path, "to", t), t) for t in r.to]
        for where, target in targets:
            service = target.partition(".")[0]
            if service not in self.mesh.services or self.is_tcp(service) == tcp:
                continue
            if tcp:
                why = f"{dest} is a tcp service; its connections cannot go to http {service}"
            else:
                why = f"{service} is a tcp service; {dest}'s HTTP requests cannot go to it"
            self.add(where, why, at_key=not isinstance(r.to, str))
        if not tcp:
            return
        why = f"{dest} is a tcp service: connections are relayed as bytes (Envoy's tcp_proxy)"
        if index > 0:
            self.add(path, f"{why}, so its first route takes every connection; give one route")
        if any(getattr(r.match, k) is not None for k in ("prefix", "path", "regex", "method")):
            self.add((*path, "match"), f"{why}, with no path or method to match")
        elif r.match.headers:
            self.add((*path, "match", "headers"), f"{why}, with no headers to match")
        if "timeout" in r.model_fields_set:
            self.add(
                (*path, "timeout"),
                f"{why}, with no request to time; policies.{dest}.idle_timeout closes idle ones",
            )
        for key, what in (
            ("retries", "no request to retry (a failed connect closes the connection)"),
            ("fault", "no request to abort or delay"),
            ("rate_limit", "no request to count"),
        ):
            if getattr(r, key) is not None:
                self.add((*path, key), f"{why}, with {what}")

    def tcp_ports(self) -> None:
        """Each pod's sidecar listens for every other tcp service on the pod's own address at
        that service's port, beside the pod's app: those ports must differ (the gateway has no
        app, so no such listener, and its port meets none of them)."""
        services = list(self.mesh.services.items())
        for i, (name, svc) in enumerate(services):
            if svc.protocol != "tcp":
                continue
            for j, (other, osvc) in enumerate(services):
                if other == name or osvc.port != svc.port:
                    continue
                if osvc.protocol == "tcp" and j < i:
                    continue  # the pair was reported at the earlier one
                self.add(
                    ("services", name, "port"),
                    f"port {svc.port} is also {other}'s port: {other}'s pods reach tcp service "
                    f"{name} at their own address on this port, where {other}'s app listens",
                )

    def unique_name(self, path: Path, name: str, seen: dict[str, int], index: int) -> None:
        if name in seen:
            self.add((*path, "name"), f"duplicate route name {name!r} (also route {seen[name]})")
        else:
            seen[name] = index

    def service(self, path: Path, svc: Service) -> None:
        if svc.build and svc.image:
            self.add((*path, "image"), "give build or image, not both")
        own = bool(svc.build or svc.image or svc.command)
        versions = svc.versions.values()
        each_version = bool(svc.versions) and all(v.build or v.image or v.command for v in versions)
        if not own and not each_version:
            self.add(path, "give build (a folder), image, or command")
        if svc.port in SIDECAR_PORTS:
            self.add(
                (*path, "port"),
                f"port {svc.port} clashes with the sidecar's {SIDECAR_PORTS[svc.port]} port "
                "in the same pod",
            )
        if svc.versions and svc.replicas is not None:
            total = sum(v.replicas for v in svc.versions.values())
            if total != svc.replicas:
                self.add(
                    (*path, "replicas"),
                    f"replicas is {svc.replicas} but the versions add up to {total}; "
                    "give replicas per version",
                )
        self.build_folder((*path, "build"), svc.build)
        for vname, ver in svc.versions.items():
            vpath = (*path, "versions", vname)
            self.build_folder((*vpath, "build"), ver.build)
            if ver.build and ver.image:
                self.add((*vpath, "image"), "give build or image, not both")
        if svc.calls is not None:
            self.calls((*path, "calls"), svc.calls)
        if svc.health_path is not None and not svc.health_path.startswith("/"):
            self.add((*path, "health_path"), "must start with /")
        if svc.liveness_path is not None and not svc.liveness_path.startswith("/"):
            self.add((*path, "liveness_path"), "must start with /")
        if svc.liveness_path is not None and svc.protocol == "tcp":
            self.add((*path, "liveness_path"), "a tcp service is not asked over HTTP")
        if svc.health_path is not None and svc.protocol == "tcp":
            self.add(
                (*path, "health_path"),
                "a tcp service is not asked over HTTP: it is ready when its port accepts",
            )
        self.watch((*path, "watch"), svc)

    def watch(self, path: Path, svc: Service) -> None:
        """Patterns of the app's code. One matching nothing is no problem: the file it names
        may be created later, and a save then rolls the service."""
        if not svc.watch:
            return
        versions = svc.versions.values()
        has_code = bool(svc.build or svc.command) or any(v.build or v.command for v in versions)
        if not has_code:
            self.add(
                path,
                "this service runs an image only: no code of it is here to watch; "
                "give it build: or command:",
            )
        for i, pattern in enumerate(svc.watch):
            parts = pattern.replace("\\", "/").split("/")
            if not pattern.strip():
                self.add((*path, i), "give a path or a glob, e.g. '*.py' or 'src/'")
            elif pattern.startswith(("/", "~")) or FsPath(pattern).is_absolute():
                self.add(
                    (*path, i),
                    "must be relative to the service's folder (its build folder, else the "
                    "mesh file's)",
                )
            elif ".." in parts:
                self.add((*path, i), "must stay inside the service's folder (no ..)")

    def calls(self, path: Path, calls: tuple[str, ...]) -> None:
        """Istio's Sidecar egress hosts name services: no subsets (a caller reaches a version
        through the service's routes), no other mesh's hosts, each once."""
        services = list(self.mesh.services)
        seen: set[str] = set()
        for i, name in enumerate(calls):
            where = (*path, i)
            service, dot, _ = name.partition(".")
            if name in seen:
                self.add(where, f"{name!r} is listed twice")
            elif dot and service in self.mesh.services:
                self.add(
                    where,
                    f"calls names services, not versions: give {service!r} (its routes pick "
                    "the version)",
                )
            elif name not in self.mesh.services:
                self.unknown(where, "service", name, services, at_key=False)
            seen.add(name)

    def build_folder(self, path: Path, build: str | None) -> None:
        if build is None or self.base_dir is None:
            return
        folder = (self.base_dir / build).resolve()
        if not folder.is_dir():
            self.add(path, f"folder not found: {folder}")

    def route(self, path: Path, r: Route) -> None:
        self.match((*path, "match"), r.match)
        if isinstance(r.to, str):
            self.check_destination((*path, "to"), r.to)
        elif r.to is not None:
            if not r.to:
                self.add((*path, "to"), "give at least one destination")
            for dest in r.to:
                self.check_destination((*path, "to", dest), dest, at_key=True)
            if r.to and sum(r.to.values()) == 0:
                self.add((*path, "to"), "weights sum to 0; at least one must be positive")
        if r.retries is not None:
            rt = r.retries
            if rt.retriable_status_codes and "retriable-status-codes" not in rt.retry_on:
                self.add(
                    (*path, "retries", "retriable_status_codes"),
                    "has no effect unless retry_on includes retriable-status-codes",
                )
            if rt.per_try_timeout and r.timeout and rt.per_try_timeout > r.timeout:
                self.add(
                    (*path, "retries", "per_try_timeout"),
                    "is longer than the route's timeout, which covers all tries",
                )
        if r.fault is not None and r.fault.abort is None and r.fault.delay is None:
            self.add((*path, "fault"), "give abort, delay, or both")
        abort = r.fault.abort if r.fault is not None else None
        if abort is not None and abort.status is None and abort.grpc_status is None:
            self.add((*path, "fault", "abort"), "give status, grpc_status, or both")

    def match(self, path: Path, m: Match) -> None:
        kinds = [k for k in ("prefix", "path", "regex") if getattr(m, k) is not None]
        if len(kinds) > 1:
            self.add(path, f"give one of prefix, path, regex (not {' and '.join(kinds)})")
        for k in ("prefix", "path"):
            v = getattr(m, k)
            if v is not None and not v.startswith("/"):
                self.add((*path, k), "must start with /")
        if m.path is not None and m.path.startswith("/") and "?" in m.path:
            bare, _, query = m.path.partition("?")
            self.add(
                (*path, "path"),
                f"{m.path!r} never matches: a path is compared with the request's path once its "
                f"query string is removed (as Envoy's); give {bare!r}. mesh.yaml has no "
                "query-parameter match; only a prefix is compared with the query included "
                f"(prefix: {m.path} takes {m.path}&b=2, not {bare}?b=2&{query})",
            )
        if m.regex is not None:
            self.regex((*path, "regex"), m.regex)
        methods = (m.method,) if isinstance(m.method, str) else (m.method or ())
        for i, meth in enumerate(methods):
            if (problem := method_problem(meth)) is not None:
                where = (*path, "method") if isinstance(m.method, str) else (*path, "method", i)
                self.add(where, problem)
        for name, hm in m.headers.items():
            hpath = (*path, "headers", name)
            given = [
                k for k in ("exact", "prefix", "regex", "present") if getattr(hm, k) is not None
            ]
            if len(given) != 1:
                self.add(hpath, "give exactly one of exact, prefix, regex, present")
            if hm.regex is not None:
                self.regex((*hpath, "regex"), hm.regex)

    def regex(self, path: Path, pattern: str) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.add(path, f"regex does not compile: {exc}")


def _pattern_problem(value: str, what: str) -> str | None:
    """Istio's string patterns: exact, `prefix*`, `*suffix` or `*`; a `*` elsewhere would be
    taken literally and so match nothing anyone meant."""
    if not value:
        return "must not be empty"
    if value == "*" or "*" not in value:
        return None
    if value.count("*") == 1 and (value.startswith("*") or value.endswith("*")):
        return None
    return f"{value!r}: a {what} is exact, prefix*, *suffix or *"


def _plain_path(value: str) -> bool:
    return value.startswith(("/", "*")) and "?" not in value


def _covers(excluded: str, wanted: str) -> bool:
    """Whether the pattern `excluded` matches every value the pattern `wanted` does (both
    Istio's: exact, prefix*, *suffix or *)."""
    if excluded == "*":
        return True
    if wanted == "*":
        return False
    if excluded.endswith("*"):
        prefix = excluded[:-1]
        return not wanted.startswith("*") and wanted.removesuffix("*").startswith(prefix)
    if excluded.startswith("*"):
        suffix = excluded[1:]
        return not wanted.endswith("*") and wanted.removeprefix("*").endswith(suffix)
    return excluded == wanted


def semantic_problems(
    mesh: Mesh, file: str, source: SourceMap, base_dir: FsPath | None
) -> list[Problem]:
    return _Check(mesh, file, source, base_dir).run()
