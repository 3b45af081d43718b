"""The HTTP methods a mesh rule may name: those a sidecar can be asked at all.

Istio takes any string where a method goes (an AuthorizationPolicy's `methods`, a
VirtualService's `method` match), and only Kiali warns (KIA0102) on one that is no HTTP
method. meshdev refuses it instead: its sidecars' HTTP/1.1 parser (llhttp) answers a request
with any method outside this list 400 before a route or a policy looks at it, so a rule naming
one would never match, and `FETCH` for `PATCH` is a typo to catch. Methods are case-sensitive
(RFC 9110, 9.1): `get` is not GET.
"""

from __future__ import annotations

import difflib
from typing import Final

# RFC 9110's methods and RFC 5789's PATCH.
STANDARD_METHODS: Final = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
)
# The other methods llhttp parses on an HTTP/1.1 request: WebDAV's and its extensions',
# UPnP's, caches' PURGE and the safe QUERY.
EXTENSION_METHODS: Final = (
    "ACL",
    "BIND",
    "CHECKOUT",
    "COPY",
    "LINK",
    "LOCK",
    "M-SEARCH",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "NOTIFY",
    "PROPFIND",
    "PROPPATCH",
    "PURGE",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "SOURCE",
    "SUBSCRIBE",
    "UNBIND",
    "UNLINK",
    "UNLOCK",
    "UNSUBSCRIBE",
)
KNOWN_METHODS: Final = frozenset(STANDARD_METHODS + EXTENSION_METHODS)


def method_problem(method: str) -> str | None:
    """Why `method` can never be a request's method, or None when it can."""
    if method in KNOWN_METHODS:
        return None
    if method == "*":
        return "'*' is not an HTTP method: leave the methods out to match every method"
    upper = method.upper()
    if upper in KNOWN_METHODS:
        return f"{method!r} is not an HTTP method; methods are upper case, like {upper}"
    # A standard method is the likelier meaning: look for one first.
    close = difflib.get_close_matches(upper, STANDARD_METHODS, n=1, cutoff=0.6)
    close = close or difflib.get_close_matches(upper, EXTENSION_METHODS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown method {method!r}{hint}: a sidecar answers any method but the standard ones "
        f"({', '.join(STANDARD_METHODS)}) and the registered extensions it parses (WebDAV's, "
        "PURGE, QUERY, ...) with 400, before a route or policy sees it"
    )
