"""Authorization: Envoy's RBAC HTTP filter as Istio configures it from AuthorizationPolicy.

A listener's policies (`Listener.authorization`) are compiled once per config into an
`RbacEngine`; the pipeline asks it about every request of that listener:

- any matching DENY policy denies (the first one, in config order, is the one named);
- otherwise, with no ALLOW policy the request is allowed;
- otherwise it is allowed only when an ALLOW policy matches.

A policy matches when any of its rules does (an ALLOW policy without rules matches nothing:
Istio's allow-nothing); a rule when every field it gives does (a rule without fields matches
every request); a `not_*` field when the request matches none of its values.

Values are Istio's patterns: exact, `prefix*`, `*suffix`, and `*`, which for principals means
"any principal" (a request without one, i.e. without a verified peer certificate, matches no
principal pattern and so satisfies every `not_principals`), and for paths any path. Methods are
exact (a gRPC call's is POST). Paths are matched without the query string, after Istio's
default path normalization (BASE: percent-encoded unreserved characters decoded, backslashes
made slashes, dot segments removed), so `/public/../admin` cannot slip past a rule on `/admin`.

A denial is reported as Envoy's %RESPONSE_CODE_DETAILS%:
`rbac_access_denied_matched_policy[<DENY policy>]`, or `[none]` when no ALLOW policy matched.

The same policies on a tcp_proxy listener are Envoy's network RBAC filter, checked once per
connection (`RbacEngine(policies, connections=True)`, `check_connection`), with Istio's rules
for HTTP-only fields on TCP traffic: a DENY rule loses its methods and paths (so it denies
more), an ALLOW rule that has any is dropped (so it allows less).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from meshdev.common.sidecar_config import AuthzPolicy, AuthzRule

DENIED_BODY: Final = b"RBAC: access denied"
NO_POLICY_MATCHED: Final = "rbac_access_denied_matched_policy[none]"


def denied_details(policy: str) -> str:
    return f"rbac_access_denied_matched_policy[{policy}]"


class Patterns:
    """One field's values, grouped by kind so a match is a set look-up and two C-level
    `startswith`/`endswith` calls whatever the number of values."""

    __slots__ = ("any", "exact", "prefixes", "suffixes")

    def __init__(self, values: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        self.any = False
        for value in values:
            # Istio's order: "*" alone, then a leading "*", then a trailing one.
            if value == "*":
                self.any = True
            elif value.startswith("*"):
                suffixes.append(value[1:])
            elif value.endswith("*"):
                prefixes.append(value[:-1])
            else:
                exact.add(value)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)

    def matches(self, value: str) -> bool:
        # An empty tuple matches nothing in startswith/endswith.
        return (
            self.any
            or value in self.exact
            or value.startswith(self.prefixes)
            or value.endswith(self.suffixes)
        )

    def matches_principal(self, principal: str | None) -> bool:
        if principal is None:
            return False
        # Istio renders "*" as the regex `.+`: an empty principal is not "any principal".
        return self.matches(principal) if principal else principal in self.exact


def _patterns(values: tuple[str, ...]) -> Patterns | None:
    return Patterns(values) if values else None


def _methods(values: tuple[str, ...]) -> frozenset[str] | None:
    return frozenset(values) if values else None


class Rule:
    """One compiled rule; a field not given is None and is not checked."""

    __slots__ = (
        "methods",
        "not_methods",
        "not_paths",
        "not_principals",
        "paths",
        "principals",
    )

    def __init__(self, rule: AuthzRule, *, http: bool = True) -> None:
        """`http=False`: the rule of a connection, which has no method or path to match."""
        self.principals = _patterns(rule.principals)
        self.not_principals = _patterns(rule.not_principals)
        self.methods = _methods(rule.methods) if http else None
        self.not_methods = _methods(rule.not_methods) if http else None
        self.paths = _patterns(rule.paths) if http else None
        self.not_paths = _patterns(rule.not_paths) if http else None

    @property
    def reads_principal(self) -> bool:
        return self.principals is not None or self.not_principals is not None

    @property
    def reads_path(self) -> bool:
        return self.paths is not None or self.not_paths is not None

    def matches(self, method: str, path: str, principal: str | None) -> bool:
        p = self.principals
        if p is not None and not p.matches_principal(principal):
            return False
        p = self.not_principals
        if p is not None and p.matches_principal(principal):
            return False
        m = self.methods
        if m is not None and method not in m:
            return False
        m = self.not_methods
        if m is not None and method in m:
            return False
        p = self.paths
        if p is not None and not p.matches(path):
            return False
        p = self.not_paths
        return p is None or not p.matches(path)


def _names_http(rule: AuthzRule) -> bool:
    return bool(rule.methods or rule.not_methods or rule.paths or rule.not_paths)


class RbacEngine:
    """A listener's policies, compiled (see the module doc); `connections`: a tcp_proxy
    listener's, with Istio's rules for HTTP-only fields."""

    __slots__ = ("_allow", "_deny", "_has_allow", "_reads_path", "reads_principal")

    def __init__(self, policies: Iterable[AuthzPolicy], *, connections: bool = False) -> None:
        deny: list[tuple[str, tuple[Rule, ...]]] = []
        allow: list[Rule] = []
        has_allow = False
        for policy in policies:
            if not connections:
                rules = tuple(Rule(r) for r in policy.rules)
            elif policy.action == "DENY":
                rules = tuple(Rule(r, http=False) for r in policy.rules)
            else:
                rules = tuple(Rule(r) for r in policy.rules if not _names_http(r))
            if policy.action == "DENY":
                if rules:
                    deny.append((denied_details(policy.name), rules))
            else:
                has_allow = True
                # Which ALLOW policy matched is never reported: their rules are one list.
                allow.extend(rules)
        self._deny = tuple(deny)
        self._allow = tuple(allow)
        self._has_allow = has_allow
        every = [r for _, rules in deny for r in rules] + allow
        # The pipeline looks the peer up (a certificate decode on TLS) only when a rule asks.
        self.reads_principal = any(r.reads_principal for r in every)
        self._reads_path = any(r.reads_path for r in every)

    def check(self, method: str, path: str, principal: str | None) -> str | None:
        """None when the request may pass, else why not (Envoy's response code details)."""
        if self._reads_path:
            path = normalize_path(path)
        for details, rules in self._deny:
            for rule in rules:
                if rule.matches(method, path, principal):
                    return details
        if not self._has_allow:
            return None
        for rule in self._allow:
            if rule.matches(method, path, principal):
                return None
        return NO_POLICY_MATCHED

    def check_connection(self, principal: str | None) -> str | None:
        """`check` for a connection of an engine built with `connections=True`."""
        return self.check("", "", principal)


# RFC 3986's unreserved characters: their percent-encodings mean the same path.
_UNRESERVED_ESCAPE: Final = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")


def normalize_path(path: str) -> str:
    """The path as Istio's default normalization (BASE, Envoy's normalize_path) makes it."""
    if "%" in path:
        path = _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)
    if "\\" in path:
        path = path.replace("\\", "/")
    # A dot segment follows a slash (or opens a relative path): most paths skip the split.
    if "/." not in path and not path.startswith("."):
        return path
    return _remove_dot_segments(path)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on a path's "/"-separated segments."""
    absolute = path.startswith("/")
    segments = path.split("/")[1:] if absolute else path.split("/")
    out: list[str] = []
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        if seg in {".", ".."}:
            if seg == ".." and out:
                out.pop()
            # A trailing dot segment still names a directory: "/a/b/.." is "/a/".
            if i == last:
                out.append("")
        else:
            out.append(seg)
    joined = "/".join(out)
    return "/" + joined if absolute else joined
