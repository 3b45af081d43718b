"""Why a host has no route: the mesh's services outside this sidecar's `calls:`.

Istio's Sidecar resource (egress hosts) scopes a proxy's config to what its workload calls;
mesh.yaml's `calls:` does the same, and the config then names the mesh's other services
(`Egress.hidden`). A request for one of them is still Envoy's no route (404, flag NR), but its
answer and the sidecar's log say which service was missing from which list, since "404" alone
would send the user hunting through routes that are fine.
"""

from __future__ import annotations

import logging

from meshdev.common.sidecar_config import Egress
from meshdev.sidecar.router.table import strip_port

log = logging.getLogger("meshdev.sidecar.router")


class EgressScope:
    """One config's scope; says each missing destination in the log once per config."""

    __slots__ = ("_hidden", "_said", "_suffix", "service")

    def __init__(self, egress: Egress, mesh: str) -> None:
        self.service = egress.service
        self._hidden = frozenset(egress.hidden)
        self._suffix = f".{mesh}"
        self._said: set[str] = set()

    def hidden(self, authority: str) -> str | None:
        """The mesh's service `authority` names (`backend`, `backend:8080`,
        `backend.<mesh>`), if it is one this sidecar's service does not call."""
        host = strip_port(authority.lower()).removesuffix(self._suffix)
        return host if host in self._hidden else None

    def why(self, dest: str) -> str:
        return f"no route: {dest} is not in {self.service}'s calls"

    def details(self, dest: str) -> str:
        """Envoy's %RESPONSE_CODE_DETAILS% for it: one token, as Envoy's own details."""
        return f"route_not_found[{dest}_not_in_{self.service}_calls]"

    def tell(self, dest: str) -> None:
        """Log why, the first time `dest` is asked for under this config."""
        if dest in self._said:
            return
        self._said.add(dest)
        log.warning(
            "%s (services.%s.calls in the mesh file); answered 404 NR: add it there to route to it",
            self.why(dest),
            self.service,
        )
