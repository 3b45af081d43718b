"""`meshdev export grafana` (see bridges.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from meshdev.cli.overwrite import is_dashboard, refuse_strangers

DEFAULT_FILE = "mesh.yaml"


@click.command("grafana")
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default="dashboard.json",
    show_default=True,
    help="Where to write the dashboard JSON.",
)
def grafana(file: str, output: str) -> None:
    """A Grafana dashboard of the mesh over the Prometheus that scrapes it (`prometheus:` in
    FILE): routes' requests/s, success and latency, breaker overflows, ejections, retries,
    rate-limited and faulted requests, reloads as annotations."""
    from meshdev.bridges.grafana.dashboard import dashboard
    from meshdev.config import MeshInvalid, load_mesh

    try:
        mesh = load_mesh(file)
    except MeshInvalid as exc:
        raise click.ClickException("\n".join(str(p) for p in exc.problems)) from None
    refuse_strangers([(Path(output), is_dashboard)])
    Path(output).write_text(json.dumps(dashboard(mesh.name), indent=2) + "\n", encoding="utf-8")
    click.echo(f"wrote {output}: import it in Grafana and pick the Prometheus of this mesh")


EXPORT_COMMANDS: list[click.Command] = [grafana]
IMPORT_COMMANDS: list[click.Command] = []
