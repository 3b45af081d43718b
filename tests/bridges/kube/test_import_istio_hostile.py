"""Property: whatever a document says in a field's place (a wrong type, a value out of range),
`import istio` lists it or refuses the whole import with a message; it never crashes, and
what it writes always loads."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshdev.bridges.kube.export import export_mesh
from meshdev.bridges.kube.importer import ImportFailed, import_istio
from meshdev.bridges.kube.yamltext import dump_all, load_all
from meshdev.config import load_mesh, parse_mesh
from tests.bridges.kube.kube_meshes import RICH, mesh_of

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "istio"
SAMPLES = (
    "bookinfo.yaml",
    "bookinfo-gateway.yaml",
    "destination-rule-all.yaml",
    "virtual-service-reviews-test-v2.yaml",
    "security.yaml",
    "local-rate-limit-service.yaml",
)


def _sets() -> list[list[tuple[str, list[Any]]]]:
    exports = [
        export_mesh(load_mesh(ROOT / "examples" / "flask-app" / "mesh.yaml")),
        export_mesh(mesh_of(RICH)),
    ]
    out = [list(e.documents.items()) for e in exports]
    out.append([(n, load_all((FIXTURES / n).read_text(encoding="utf-8"))) for n in SAMPLES])
    return out


SETS = _sets()
junk: st.SearchStrategy[Any] = st.sampled_from(
    [None, 0, -1, 1.5, 70000, "x", "", "/", "1h", "*", "a*b", True, [], {}, [1], {"a": 1}, [{}]]
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(SETS) - 1), st.randoms(use_true_random=False), junk, st.integers(1, 3))
def test_hostile_fields_are_listed_or_refused_never_a_crash(
    which: int, rnd: random.Random, value: Any, changes: int
) -> None:
    files = copy.deepcopy(SETS[which])
    for _ in range(changes):
        _, docs = rnd.choice(files)
        doc = rnd.choice(docs) if docs else None
        if not isinstance(doc, dict):
            continue
        path = rnd.choice(list(_paths(doc)))
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = copy.deepcopy(value)
    try:
        result = import_istio([(name, dump_all(docs)) for name, docs in files])
    except ImportFailed as exc:
        refusal = str(exc)
    else:
        assert parse_mesh(result.text.encode(), "mesh.yaml") == result.mesh
        return
    # A refusal says why: no workload, no name (quoted as repr quotes it: '...' or "..." when
    # it holds a '), or the loader's located problem.
    assert refusal.startswith(
        ("no workload", "'", '"', "the imported mesh does not validate: mesh.yaml:")
    )
