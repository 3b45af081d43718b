"""The `meshdev` command: parse arguments, build objects, hand over. No logic lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from meshdev import __version__
from meshdev.config import MeshInvalid, load_mesh

DEFAULT_FILE = "mesh.yaml"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="meshdev")
def main() -> None:
    """meshdev: a local service mesh with Envoy's semantics, live reload and a dashboard.

    \b
    Start here:
      meshdev init              write a starter mesh.yaml
      meshdev validate          check it (every error with its line:col)
      meshdev up                run it and open the dashboard
    """


@main.command()
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(file: str, as_json: bool) -> None:
    """Check FILE (default ./mesh.yaml) without starting anything.

    Exit 0 with a one-line summary, or exit 1 with every problem as FILE:LINE:COL path: reason.
    """
    try:
        mesh = load_mesh(file)
    except MeshInvalid as exc:
        if as_json:
            out = {"ok": False, "file": file, "errors": [p.to_json() for p in exc.problems]}
            click.echo(json.dumps(out, indent=2))
        else:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            n = len(exc.problems)
            click.echo(f"{n} problem{'s' if n != 1 else ''} in {file}", err=True)
        sys.exit(1)
    summary = {
        "services": len(mesh.services),
        "pods": mesh.pod_count(),
        "routes": mesh.route_count(),
    }
    if as_json:
        click.echo(json.dumps({"ok": True, "file": file, "name": mesh.name, **summary}, indent=2))
    else:
        click.echo(
            f"OK: {_n(summary['services'], 'service')}, {_n(summary['pods'], 'pod')}, "
            f"{_n(summary['routes'], 'route')}"
        )


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@main.command()
def schema() -> None:
    """Print the JSON Schema of mesh.yaml (for editors: yaml-language-server)."""
    from meshdev.config.schema import mesh_json_schema

    click.echo(json.dumps(mesh_json_schema(), indent=2))


@main.command()
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def init(file: str, force: bool) -> None:
    """Write a commented starter mesh.yaml to FILE (default ./mesh.yaml)."""
    from meshdev.templates import template

    target = Path(file)
    if target.exists() and not force:
        raise click.ClickException(f"{file} exists; pass --force to overwrite it")
    if not target.parent.is_dir():
        raise click.ClickException(f"folder {target.parent} does not exist")
    target.write_text(template("mesh.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    click.echo(f"wrote {file}; next: meshdev validate {file} && meshdev up {file}")


@main.command()
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The sidecar's rendered config (JSON or YAML).",
)
def sidecar(config_file: str) -> None:
    """Run one sidecar proxy (the data plane). The control plane starts these for you.

    The admin token for state-changing endpoints comes from env MESHDEV_ADMIN_TOKEN.
    """
    from meshdev.sidecar.loop import run
    from meshdev.sidecar.main import run_sidecar

    token = os.environ.get("MESHDEV_ADMIN_TOKEN", "")
    sys.exit(run(run_sidecar(config_file, token)))
