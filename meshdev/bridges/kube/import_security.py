"""Istio's PeerAuthentication and AuthorizationPolicy -> mesh.yaml's security, per-service
mtls and authorization. A rule with a condition mesh.yaml cannot say is left out whole:
dropping only the condition would allow (or deny) more than Istio does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from meshdev.bridges.kube import conventions as kc
from meshdev.bridges.kube.import_docs import Path, Source
from meshdev.bridges.kube.import_traffic import Context
from meshdev.bridges.kube.import_workloads import is_name
from meshdev.common.http_methods import method_problem
from meshdev.config.durations import parse_duration
from meshdev.config.model import INGRESS_IDENTITY

Dict = dict[str, Any]
_MODES = ("STRICT", "PERMISSIVE", "DISABLE")


@dataclass
class PeerModes:
    namespace: str | None = None
    cert_ttl: str | None = None
    services: dict[str, str] = field(default_factory=dict)
    found: bool = False


def read_peer_authentications(pas: list[Source], ctx: Context) -> PeerModes:
    out = PeerModes()
    for a in pas:
        out.found = True
        mode = a.get("spec", "mtls", "mode")
        a.take("spec", "mtls", "mode")
        if a.get("spec", "portLevelMtls") is not None:
            a.note(("spec", "portLevelMtls"), "meshdev's mode is per service: left out")
        selector = a.get("spec", "selector")
        if selector is None:
            a.take("spec", "selector")
            if out.namespace is not None:
                a.note((), "a second namespace-wide PeerAuthentication: left out")
                continue
            if mode in _MODES:
                out.namespace = str(mode)
            ttl = a.annotations().get(kc.CERT_TTL_ANNOTATION)
            if ttl is not None:
                try:
                    parse_duration(ttl)
                    out.cert_ttl = ttl
                except ValueError:
                    a.note(("metadata", "annotations"), f"cert ttl {ttl!r} is no duration")
            continue
        labels = a.mapping("spec", "selector", "matchLabels")
        app = labels.get(kc.APP)
        if set(labels) != {kc.APP} or not isinstance(app, str) or app not in ctx.services:
            a.note(("spec", "selector"), "selects no one service of these files: left out")
            continue
        a.take("spec", "selector")
        if mode in _MODES:
            out.services[str(app)] = str(mode)
    return out


def name_like(text: str) -> str:
    """The nearest meshdev name (lower case, digits, -; at most 40)."""
    cut = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    return cut or "policy"


@dataclass
class Principals:
    """Who a principal is, in mesh.yaml's words: a service of these files (by its pods'
    service account), the gateway, or a pattern."""

    namespace: str
    mesh: str
    accounts: dict[str, list[str]]

    def read(self, value: str) -> tuple[list[str], list[str]] | None:
        """(services, principals), or None when mesh.yaml cannot name it."""
        if value == kc.GATEWAY_PRINCIPAL:
            return [INGRESS_IDENTITY], []
        own = kc.principal(self.namespace, "")
        if value.startswith(own):
            rest = value.removeprefix(own)
            if "*" in rest:
                return [], [kc.principal(self.mesh, "") + rest]
            services = self.accounts.get(rest)
            return (list(services), []) if services else None
        if "*" in value:
            return [], [value]
        # An exact principal of another namespace: no workload meshdev runs has it.
        return None


def _source(a: Source, p: Path, who: Principals) -> Dict | None:
    src = a.get(*p, "source")
    if not isinstance(src, dict):
        return None
    out: Dict = {}
    for key, (svc_key, principal_key) in (
        ("principals", ("services", "principals")),
        ("notPrincipals", ("not_services", "not_principals")),
    ):
        for j, value in a.items(*p, "source", key):
            found = who.read(str(value)) if _pattern(str(value)) else None
            if found is None:
                a.note(
                    (*p, "source", key, j),
                    f"{value} is no workload of these files: the rule is left out",
                )
                raise _Unsaid
            services, principals = found
            for s in services:
                if s not in out.setdefault(svc_key, []):
                    out[svc_key].append(s)
            for pr in principals:
                if pr not in out.setdefault(principal_key, []):
                    out[principal_key].append(pr)
        a.take(*p, "source", key)
    for key in src:
        if key not in ("principals", "notPrincipals"):
            a.note(
                (*p, "source", key),
                "mesh.yaml names callers by identity only: the rule is left out",
            )
            raise _Unsaid
    return out


def _operation(a: Source, p: Path) -> Dict | None:
    op = a.get(*p, "operation")
    if not isinstance(op, dict):
        return None
    out: Dict = {}
    for key, ours in (
        ("methods", "methods"),
        ("notMethods", "not_methods"),
        ("paths", "paths"),
        ("notPaths", "not_paths"),
    ):
        value = a.take(*p, "operation", key)
        if isinstance(value, list) and value:
            out[ours] = [str(v) for v in value]
            bad = [
                v
                for v in out[ours]
                if not _pattern(v)
                or (ours.endswith("methods") and method_problem(v) is not None)
                or (ours.endswith("paths") and (not v.startswith(("/", "*")) or "?" in v))
            ]
            if bad:
                a.note(
                    (*p, "operation", key),
                    f"{bad[0]!r} is no {ours.rstrip('s')} meshdev matches: the rule is left out",
                )
                raise _Unsaid
    for key in op:
        if key not in ("methods", "notMethods", "paths", "notPaths"):
            a.note(
                (*p, "operation", key),
                "mesh.yaml matches methods and paths only: the rule is left out",
            )
            raise _Unsaid
    return out


def _pattern(value: str) -> bool:
    """Istio's (and meshdev's) string patterns: exact, prefix*, *suffix or *."""
    if not value or value == "*" or "*" not in value:
        return bool(value)
    return value.count("*") == 1 and (value.startswith("*") or value.endswith("*"))


class _Unsaid(Exception):
    """A condition mesh.yaml cannot say (noted where found)."""


def read_authorization_policies(
    aps: list[Source], ctx: Context, who: Principals
) -> dict[str, list[Dict]]:
    out: dict[str, list[Dict]] = {}
    for a in aps:
        labels = a.mapping("spec", "selector", "matchLabels")
        app = labels.get(kc.APP)
        if a.get("spec", "selector") is None and a.get("spec", "targetRefs") is None:
            dests = sorted(ctx.services)
        elif set(labels) == {kc.APP} and isinstance(app, str) and app in ctx.services:
            dests = [app]
        else:
            a.note((), "selects no one service of these files: left out")
            continue
        a.take("spec", "selector")
        action = a.take("spec", "action") or "ALLOW"
        if action not in ("ALLOW", "DENY"):
            a.note(("spec", "action"), f"meshdev's policies ALLOW or DENY, not {action}: left out")
            continue
        policies: list[Dict] = []
        rules = a.get("spec", "rules")
        if not rules:
            a.take("spec", "rules")
            if action == "DENY":
                continue  # denies nothing
            # Istio's allow-nothing: an ALLOW no request matches.
            policies.append({"to": {"not_paths": ["*"]}})
        for i, rule in a.items("spec", "rules"):
            p: Path = ("spec", "rules", i)
            if not isinstance(rule, dict):
                continue
            try:
                if rule.get("when") is not None:
                    a.note((*p, "when"), "mesh.yaml has no conditions: the rule is left out")
                    raise _Unsaid
                sources = [_source(a, (*p, "from", j), who) for j, _ in a.items(*p, "from")]
                ops = [_operation(a, (*p, "to", j)) for j, _ in a.items(*p, "to")]
            except _Unsaid:
                continue
            finally:
                a.take(*p)
            # Istio's lists are alternatives: each pair is one mesh-file policy.
            for s in sources or [None]:
                for o in ops or [None]:
                    policy: Dict = {}
                    if s:
                        policy["from"] = s
                    if o:
                        policy["to"] = o
                    policies.append(policy)
        for dest in dests:
            base = a.name.removeprefix(f"{dest}-") if len(dests) == 1 else a.name
            base = base if is_name(base) else name_like(base)
            taken = {p["name"] for p in out.get(dest, [])}
            tcp = dest in ctx.services and ctx.services[dest].protocol == "tcp"
            kept = []
            for policy in policies:
                if tcp and "to" in policy:
                    a.note(("spec", "rules"), f"{dest} is a tcp service: no method or path")
                    continue
                kept.append(policy)
            if action == "ALLOW" and rules and not kept:
                # An ALLOW policy makes its workload refuse what no ALLOW rule matches: with
                # every rule left out and nothing in its place the service would take every
                # request. Kept as allowing nothing, which refuses more than Istio does.
                if tcp:
                    a.say(
                        ("spec", "rules"),
                        f"every rule is left out, so {dest} takes every caller, where Istio "
                        "refuses the ones no rule allows",
                    )
                else:
                    a.say(
                        ("spec", "rules"),
                        f"every rule is left out: kept as an ALLOW no request matches, so "
                        f"{dest} refuses what these rules allow too (Istio allows it)",
                    )
                    kept.append({"to": {"not_paths": ["*"]}})
            for policy in kept:
                name, n = base, 2
                while name in taken:
                    name = f"{base[:36]}-{n}"
                    n += 1
                taken.add(name)
                out.setdefault(dest, []).append({"name": name, "action": action, **policy})
    return out
