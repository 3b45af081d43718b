"""Traffic splits by route: the one thing of a running mesh that can differ from its file.

The dashboard's canary key (`w`) shifts a split's weights in the config the control plane
applies, and leaves mesh.yaml as it is. The control plane writes the weights it applied into
the session's state (`weights`, control.py), so that whatever reads that state from another
process (`meshdev status`, a `watch --mesh` dashboard) can lay them over the file's model and
explain what the sidecars run, not what the file says.

A route is named as its stats are: `<destination>/<name>`, `r<index>` for an unnamed one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from meshdev.config.model import Mesh

Weights = dict[str, dict[str, int]]


def route_key(destination: str, index: int, name: str | None) -> str:
    return f"{destination}/{name or f'r{index}'}"


def split_weights(mesh: Mesh | None) -> Weights:
    """Every route of `mesh` that splits by weight: its destinations and their weights."""
    if mesh is None:
        return {}
    return {
        route_key(dest, i, r.name): dict(r.to)
        for dest, routes in mesh.routes.items()
        for i, r in enumerate(routes)
        if isinstance(r.to, Mapping)
    }


def with_weights(mesh: Mesh, weights: object) -> Mesh:
    """`mesh` with the splits `weights` names (as `split_weights` gives them, read back from
    JSON) in place of its own. A route that is not in `mesh`, or whose destinations are not
    the same ones (the file was saved since), keeps the file's; anything malformed is left
    out."""
    if not isinstance(weights, Mapping) or not weights:
        return mesh
    routes = dict(mesh.routes)
    changed = False
    for dest, dest_routes in mesh.routes.items():
        new = list(dest_routes)
        for i, r in enumerate(dest_routes):
            given = weights.get(route_key(dest, i, r.name))
            if not isinstance(r.to, Mapping) or not isinstance(given, Mapping):
                continue
            if set(given) != set(r.to) or not all(
                isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in given.values()
            ):
                continue
            split = {name: int(given[name]) for name in r.to}  # the file's order
            if split != dict(r.to):
                new[i] = r.model_copy(update={"to": MappingProxyType(split)})
                changed = True
        routes[dest] = tuple(new)
    if not changed:
        return mesh
    return mesh.model_copy(update={"routes": MappingProxyType(routes)})
