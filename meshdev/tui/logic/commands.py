"""What each demo key does, with the little state the toggles need (is the load running,
which replica is failing, which route has a fault on). Each method returns the sentence the
dashboard shows; `ActionFailed` carries one that explains why nothing happened.

Plain async code against the session: no Textual here, so it is tested on its own too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text

from meshdev.common.workload_certs import spiffe_id
from meshdev.config.model import INGRESS_IDENTITY, Authorization, Match, Mesh
from meshdev.control import Pod, ReloadReport
from meshdev.security.client import client_context
from meshdev.tui.logic import actions
from meshdev.tui.logic.actions import ActionFailed
from meshdev.tui.logic.explain import explain_denial, only_unsafe_methods, scope
from meshdev.tui.logic.load_control import (
    DEFAULT_RATE,
    LoadControl,
    load_line,
    load_path,
    load_text,
)
from meshdev.tui.logic.ports import SessionPort

# What the sidecar answers a request its RBAC filter refuses (Envoy's body).
DENIED = b"RBAC: access denied"
# The probe's certificates: enough for its requests, gone soon after.
PROBE_CERT_TTL = 300.0


class Commands:
    def __init__(
        self,
        session: SessionPort,
        path: str | None = None,
        on_applied: Callable[[ReloadReport], None] | None = None,
    ) -> None:
        self.session = session
        # Told of a config a key applied (the canary shift): the dashboard's reload line
        # must then speak of that version, as its header does.
        self.on_applied = on_applied
        # None: the mesh's (load_path), read at each use, so a save that changes it applies.
        self._path = path
        self.load: LoadControl | None = None
        self.chaos_pods: set[str] = set()
        self.faulted: set[str] = set()

    def _ingress(self) -> str:
        url = self.session.ingress_url
        if url is None:
            raise ActionFailed("this mesh has no ingress: there is nowhere to send requests")
        return url

    def _mesh(self) -> Mesh:
        return self.session.control.mesh or self.session.mesh

    @property
    def path(self) -> str:
        return self._path if self._path is not None else load_path(self._mesh())

    def _load(self) -> LoadControl:
        """The load generator's control, aimed at the path of the moment (a stopped one whose
        path a save changed is replaced; a running one keeps its target until stopped)."""
        path = self.path
        load = self.load
        if load is None or (not load.running and load.url != self._ingress().rstrip("/") + path):
            rate = load.rate if load is not None else DEFAULT_RATE
            load = self.load = LoadControl(self._ingress(), path, rate)
        return load

    # -- load --------------------------------------------------------------------------------

    async def toggle_load(self) -> str:
        load = self._load()
        if load.running:
            return await load.stop()
        return load.start()

    def step_rate(self, direction: int) -> str:
        return self._load().step(direction)

    async def rate(self, direction: int) -> str:
        return self.step_rate(direction)

    def load_text(self) -> Text:
        return load_text(load_line(self.load, self.session.ingress_url, self.path))

    async def stop_load(self) -> None:
        if self.load is not None and self.load.running:
            await self.load.stop()

    # -- breaker -----------------------------------------------------------------------------

    async def trip_breaker(self) -> str:
        return await actions.trip_breaker(self._ingress().rstrip("/") + self.path)

    # -- a failing replica -------------------------------------------------------------------

    async def chaos(self, selected: str | None = None) -> str:
        """Make `selected` (or the best candidate) fail; if it fails already, heal it."""
        candidates = actions.chaos_candidates(self.session.control)
        if not candidates:
            raise ActionFailed("no pod with an app to make fail")
        by_name = {p.name: p for p in candidates}
        if selected in by_name:
            pod = by_name[selected]
        else:
            failing = [p for p in candidates if p.name in self.chaos_pods]
            pod = failing[0] if failing else candidates[0]
        if pod.name in self.chaos_pods:
            await actions.set_chaos(pod.started.inbound_url, 0.0)
            self.chaos_pods.discard(pod.name)
            return f"{pod.name} healed: it answers normally again"
        await actions.set_chaos(pod.started.inbound_url, 1.0)
        self.chaos_pods.add(pod.name)
        return f"{pod.name} now fails every request (x again heals it); watch it get ejected"

    # -- mutual TLS -------------------------------------------------------------------------

    async def plaintext(self, selected: str | None = None) -> str:
        """A plaintext request from outside the mesh straight at a secured pod's inbound
        listener: refused under STRICT, checked by authorization under PERMISSIVE. At the pod
        `selected` when it takes mTLS, else at the first STRICT one (else PERMISSIVE)."""
        mesh = self._mesh()
        secured = [
            p
            for p in self.session.control.pods.values()
            if p.spec.service
            and p.started.inbound_url
            and p.spec.protocol != "tcp"
            and mesh.mtls_mode(p.spec.service) != "DISABLE"
        ]
        if not secured:
            raise ActionFailed(
                "no pod takes mTLS: add `security: {mtls: STRICT}` to mesh.yaml and save"
            )
        strict = [p for p in secured if mesh.mtls_mode(p.spec.service) == "STRICT"]
        chosen = [p for p in secured if p.name == selected]
        pod = (chosen or strict or secured)[0]
        mode = mesh.mtls_mode(pod.spec.service)
        answer = await actions.plaintext_request(pod.started.inbound_url)
        if answer is None:
            return (
                f"plaintext to {pod.name}'s inbound listener: refused ({mode}: mTLS only); "
                "counted as no_filter_chain_match, see 5 Security"
            )
        return (
            f"plaintext to {pod.name}'s inbound listener ({mode}): answered {answer} "
            "(no identity: authorization decides; 403 means no ALLOW policy matched)"
        )

    async def unauthorized(self) -> str:
        """A request from a service of the mesh that no policy lets through to a guarded
        destination: 403 `RBAC: access denied` from the destination's sidecar, explained
        from mesh.yaml. The caller's identity is a certificate for its SPIFFE ID from the
        mesh's CA (its sidecar's very identity); without mTLS the caller has none."""
        mesh = self._mesh()
        guarded: dict[str, Pod] = {}
        for pod in self.session.control.pods.values():
            service = pod.spec.service
            if (
                service
                and mesh.authorization.get(service)
                and pod.started.inbound_url
                and pod.spec.protocol != "tcp"
            ):
                guarded.setdefault(service, pod)
        if not guarded:
            raise ActionFailed(
                "no service has an authorization policy: add one under `authorization:` in "
                "mesh.yaml (the example has one, commented out) and save"
            )
        ca = self.session.control.ca
        tried: list[str] = []
        for service, pod in sorted(guarded.items()):
            mtls = ca is not None and mesh.mtls_mode(service) != "DISABLE"
            # Every other identity of the mesh, the gateway's last; no identity without mTLS.
            callers = [s for s in sorted(mesh.services) if s != service] + [INGRESS_IDENTITY]
            for caller in callers if mtls else [None]:
                tls = None
                if ca is not None and caller is not None:
                    tls = client_context(ca.issue(spiffe_id(mesh.name, caller), PROBE_CERT_TTL))
                for method, path in actions.probe_requests(mesh.authorization[service]):
                    answer = await actions.request_as(pod.started.inbound_url, method, path, tls)
                    if answer is None or answer.status != 403:
                        continue
                    if not answer.body.startswith(DENIED):
                        continue  # the app's own 403, not the sidecar's
                    who = f"as {caller}" if caller else "without an identity (no mTLS)"
                    # The method too: a DENY of POST alone did not refuse this GET.
                    cause = explain_denial(
                        mesh, service, [caller] if caller else [], Match(path=path, method=method)
                    )
                    why = f": {cause.meaning}" if cause is not None else ""
                    return f"{method} {path} to {pod.name} {who}: 403 RBAC: access denied{why}"
            tried.append(service)
        raise ActionFailed(nothing_refused(mesh, tried))

    # -- fault at runtime --------------------------------------------------------------------

    async def fault(self, route_key: str | None) -> str:
        if not route_key or "/" not in route_key:
            raise ActionFailed("select a route first (traffic tab)")
        vhost, route = route_key.split("/", 1)
        on = route_key not in self.faulted
        admins = [p.started.admin_url for p in self.session.control.pods.values()]
        errors = await actions.runtime_modify(
            admins, self.session.token, actions.fault_values(vhost, route, on)
        )
        if errors:
            raise ActionFailed(f"fault not switched on {len(errors)} sidecars: {errors[0]}")
        if on:
            self.faulted.add(route_key)
            return (
                f"fault on: {route_key} aborts {actions.FAULT_ABORT_PERCENT}% with 503 "
                "(runtime, no reload)"
            )
        self.faulted.discard(route_key)
        return f"fault off: {route_key} follows mesh.yaml again"

    # -- canary ------------------------------------------------------------------------------

    async def canary(self, prefer: Sequence[str] = ()) -> str:
        shifted = actions.shift_canary(self._mesh(), prefer)
        if shifted is None:
            raise ActionFailed("no route in mesh.yaml splits traffic by weight")
        mesh, split = shifted
        report = await self.session.control.apply(mesh)
        # The control plane's version moved, failed or not: the session's last reload (and
        # state file) and the dashboard must say which one applied, not the last save's.
        self.session.record(report, by_key=True)
        if self.on_applied is not None:
            self.on_applied(report)
        if not report.ok:
            raise ActionFailed(f"canary shift not applied: {report.summary()}")
        return f"canary {split}: {report.summary()} (mesh.yaml unchanged; a save resets it)"


def nothing_refused(mesh: Mesh, services: Sequence[str]) -> str:
    """Why the `a` probe found no request to refuse at these (guarded) services. A DENY
    policy limited to methods that change things (POST, DELETE, ...) refuses none of the
    probe's safe requests, and the probe does not send those methods (one that a policy
    let through would reach the app): the sentence names such policies and what they do
    refuse, rather than asking for a DENY policy the mesh already has."""
    unsafe = [
        (service, i, p)
        for service in services
        for i, p in enumerate(mesh.authorization.get(service, ()))
        if p.action == "DENY" and only_unsafe_methods(p, actions.SAFE_METHODS)
    ]
    safe = " or ".join(sorted(actions.SAFE_METHODS, key=lambda m: m != "GET"))
    if not unsafe:
        return (
            f"every caller may call {', '.join(services)} on the paths its policies name: "
            "no request to deny (add a DENY policy, or an ALLOW one for a single caller)"
        )
    takes = "; ".join(
        f"DENY {p.name} (authorization.{service}[{i}]) {_takes(p)}{_whom(p)}, "
        f"so such a {_example(p)} to {service} gets 403 RBAC: access denied"
        for service, i, p in unsafe
    )
    return (
        f"no {safe} to {', '.join(services)} is refused, whoever calls: {takes}. This key "
        f"sends {safe} only (a request let through would reach the app and could change it)"
    )


def _takes(p: Authorization) -> str:
    """`takes only POST`, `takes every method but GET, HEAD` (of a DENY of unsafe methods)."""
    to = p.to
    if to is not None and to.methods:
        return f"takes only {scope(p)}"
    return f"takes every method but {', '.join(to.not_methods if to is not None else ())}"


def _example(p: Authorization) -> str:
    """A method the policy takes (it takes some: it is a DENY of unsafe methods only)."""
    to = p.to
    if to is not None and to.methods:
        return to.methods[0]
    return next(
        (m for m in ("POST", "PUT", "DELETE", "PATCH") if to is None or m not in to.not_methods),
        "request of another method",
    )


def _whom(p: Authorization) -> str:
    """Whom and where a policy takes, as far as mesh.yaml says: ` from web to /items*`."""
    out = ""
    src = p.from_
    if src is not None and src.services:
        out += f" from {', '.join(src.services)}"
    elif src is not None and (src.principals or src.not_services or src.not_principals):
        out += " from the callers its `from` names"
    if p.to is not None and p.to.paths:
        out += f" to {', '.join(p.to.paths)}"
    return out
