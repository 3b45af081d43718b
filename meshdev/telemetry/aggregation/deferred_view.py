"""A `MeshView` whose security parts (`edges`, `pod_security`) are worked out when first read.

Only the Security tab and the route detail read them, and no event is derived from them, yet
at 41 sidecars working them out was a sixth of every view's aggregation. The aggregator hands
such a view the work to do (bound to that view's inputs, so what it reads is what a view built
at once would have read); the first read does it, later reads and copies get the same tuples.
A view nobody asks for them costs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshdev.telemetry.aggregation.view import EdgeStats, MeshView, PodSecurity

SecurityParts = tuple[tuple[EdgeStats, ...], tuple[PodSecurity, ...]]

# The slots `MeshView` keeps its values in, reached past the properties below that shadow
# them (the dataclass's own `__init__`, `replace` and `__eq__` go through the properties).
_EDGES: Any = MeshView.__dict__["edges"]
_PODS: Any = MeshView.__dict__["pod_security"]


class DeferredSecurityView(MeshView):
    __slots__ = ("_pending",)

    def __init__(self, *args: Any, security: Callable[[], SecurityParts] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        object.__setattr__(self, "_pending", security)

    def _settle(self) -> None:
        # Unset while the dataclass's `__init__` (of a copy, say) is still filling the fields.
        pending: Callable[[], SecurityParts] | None = getattr(self, "_pending", None)
        if pending is not None:
            edges, pods = pending()
            _EDGES.__set__(self, edges)
            _PODS.__set__(self, pods)
            object.__setattr__(self, "_pending", None)  # the inputs it holds can go

    @property
    def edges(self) -> tuple[EdgeStats, ...]:
        self._settle()
        result: tuple[EdgeStats, ...] = _EDGES.__get__(self)
        return result

    @edges.setter
    def edges(self, value: tuple[EdgeStats, ...]) -> None:
        # Only the dataclass's `__init__` gets here: `MeshView.__setattr__` refuses the rest.
        _EDGES.__set__(self, value)

    @property
    def pod_security(self) -> tuple[PodSecurity, ...]:
        self._settle()
        result: tuple[PodSecurity, ...] = _PODS.__get__(self)
        return result

    @pod_security.setter
    def pod_security(self, value: tuple[PodSecurity, ...]) -> None:
        _PODS.__set__(self, value)

    @property
    def security_pending(self) -> bool:
        """True until the security parts were worked out (for tests of the deferral)."""
        return getattr(self, "_pending", None) is not None
