"""`meshdev export ...` and `meshdev import ...`: the command groups. Each target's commands
live beside it (bridges_kube.py: Kubernetes + Istio; bridges_envoy.py: Envoy and Compose) and
import their bridge only when run, so `meshdev --help` stays quick."""

from __future__ import annotations

import click

from meshdev.cli import bridges_envoy, bridges_grafana, bridges_kube


@click.group("export")
def export() -> None:
    """Write the mesh in FILE as what another engine runs (Kubernetes + Istio, Envoy, Compose),
    or as a Grafana dashboard."""


@click.group("import")
def import_() -> None:
    """Write a mesh.yaml from another engine's files: Istio's resources, a docker-compose.yml."""


for module in (bridges_kube, bridges_envoy, bridges_grafana):
    for command in module.EXPORT_COMMANDS:
        export.add_command(command)
    for command in module.IMPORT_COMMANDS:
        import_.add_command(command)
