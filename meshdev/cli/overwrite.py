"""What an export may write over: a file missing, or one an earlier export wrote. A user's own
docker-compose.yml, README.txt or dashboard.json in the output place is refused, not replaced."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
import yaml


def _parsed(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None


def is_bootstrap(path: Path) -> bool:
    """An Envoy bootstrap meshdev wrote: its node names the mesh."""
    doc = _parsed(path)
    node = doc.get("node") if isinstance(doc, dict) else None
    metadata = node.get("metadata") if isinstance(node, dict) else None
    return isinstance(metadata, dict) and "mesh" in metadata


def is_compose_file(path: Path) -> bool:
    """A docker-compose.yml meshdev wrote: its containers carry dev.meshdev.* labels."""
    doc = _parsed(path)
    services = doc.get("services") if isinstance(doc, dict) else None
    for svc in services.values() if isinstance(services, dict) else []:
        labels = svc.get("labels") if isinstance(svc, dict) else None
        if isinstance(labels, dict) and any(str(k).startswith("dev.meshdev.") for k in labels):
            return True
    return False


def is_dashboard(path: Path) -> bool:
    """A Grafana dashboard meshdev wrote: its uid is meshdev-<mesh>."""
    doc = _parsed(path)
    return isinstance(doc, dict) and str(doc.get("uid", "")).startswith("meshdev-")


def starts_with(marker: str) -> Callable[[Path], bool]:
    def check(path: Path) -> bool:
        try:
            return path.read_text(encoding="utf-8").startswith(marker)
        except (OSError, UnicodeDecodeError):
            return False

    return check


def refuse_strangers(targets: Iterable[tuple[Path, Callable[[Path], bool]]]) -> None:
    """Stop before writing anything when a target exists and is not an earlier export's."""
    strangers = [str(p) for p, ours in targets if p.exists() and not (p.is_file() and ours(p))]
    if strangers:
        raise click.ClickException(
            f"{', '.join(strangers)} exist{'s' if len(strangers) == 1 else ''} and no earlier "
            "export wrote it: remove it or give another place"
        )
