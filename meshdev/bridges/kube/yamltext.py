"""YAML in and out, as kubectl and people read it: keys in the order written, no anchors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

# libyaml's loader when installed: Istio's CRDs and large manifests load several times faster.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        # One labels dict used by several objects must be written out each time: kubectl
        # takes anchors, but a reader should not have to follow them.
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text (a README-like annotation) stays readable as a block.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def dump_all(documents: Iterable[Any]) -> str:
    return yaml.dump_all(
        documents,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        explicit_start=True,
    )


def load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_Loader))
