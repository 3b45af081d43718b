"""The `meshdev export` / `meshdev import` commands of this bridge (see bridges.py): Envoy
bootstraps, a docker-compose.yml with Envoy sidecars, and a docker-compose.yml imported."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from meshdev.cli.overwrite import is_bootstrap, is_compose_file, refuse_strangers, starts_with

if TYPE_CHECKING:
    from meshdev.bridges.envoy.notes import Note
    from meshdev.config import Mesh

DEFAULT_FILE = "mesh.yaml"
# layout.DEFAULT_ENVOY_IMAGE, repeated so that `--help` needs no bridge import.
DEFAULT_ENVOY_IMAGE = "envoyproxy/envoy:v1.36-latest"


def _load_or_exit(file: str) -> Mesh:
    # As `meshdev validate` says them: every problem with its place, then exit 1.
    from meshdev.config import MeshInvalid, load_mesh

    try:
        return load_mesh(file)
    except MeshInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)


def _say_notes(notes: Iterable[Note], what: str) -> None:
    notes = list(notes)
    if notes:
        click.echo(f"{len(notes)} thing(s) {what}:", err=True)
        for note in notes:
            click.echo(f"  {note}", err=True)


@click.command("envoy")
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder."
)
@click.option(
    "--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True
)
def export_envoy(file: str, out_dir: str, fmt: str) -> None:
    """One Envoy v3 bootstrap per pod of FILE's mesh, written to DIR/<pod>.yaml.

    Each is what meshdev's own sidecar serves in that pod (same listeners, routes, clusters
    and limits), placed as `export compose` runs them: each pod's sidecar reached by the name
    of the pod. What Envoy cannot say the way meshdev does is listed, by field.
    """
    from meshdev.bridges.envoy.export import export_envoy as build
    from meshdev.bridges.envoy.export import write_bootstraps
    from meshdev.control import load_defaults

    mesh = _load_or_exit(file)
    result = build(mesh, defaults=load_defaults())
    kind: Literal["yaml", "json"] = "json" if fmt == "json" else "yaml"
    refuse_strangers((Path(out_dir) / p.file_name(kind), is_bootstrap) for p in result.pods)
    written = write_bootstraps(result, Path(out_dir), kind)
    click.echo(f"wrote {len(written)} Envoy bootstrap(s) to {out_dir}")
    _say_notes(result.notes, "Envoy does differently")


@click.command("compose")
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder."
)
@click.option(
    "--proxy",
    type=click.Choice(["envoy"]),
    default="envoy",
    show_default=True,
    help="The sidecars' proxy.",
)
@click.option("--envoy-image", default=DEFAULT_ENVOY_IMAGE, show_default=True)
@click.option("--base-image", help="Base of every image built (or MESHDEV_BASE_IMAGE).")
def export_compose(
    file: str, out_dir: str, proxy: str, envoy_image: str, base_image: str | None
) -> None:
    """FILE's mesh as DIR/docker-compose.yml: its apps with real Envoy sidecars.

    Writes docker-compose.yml, each pod's bootstrap in envoy/, and README.txt (how to run it,
    and the `meshdev watch` line for its sidecars' admin APIs).
    """
    from meshdev.bridges.compose.export import (
        COMPOSE_FILE,
        README_FILE,
        README_MARKER,
        write_compose,
    )
    from meshdev.bridges.compose.export import export_compose as build
    from meshdev.bridges.compose.layout import BOOTSTRAP_DIR
    from meshdev.control import load_defaults
    from meshdev.runtime.select import base_image as pick_base_image

    assert proxy == "envoy"
    mesh = _load_or_exit(file)
    out = Path(out_dir)
    result = build(
        mesh,
        mesh_dir=Path(file).parent,
        out_dir=out,
        base_image=pick_base_image(base_image, mesh),
        envoy_image=envoy_image,
        defaults=load_defaults(),
    )
    refuse_strangers(
        [
            (out / COMPOSE_FILE, is_compose_file),
            (out / README_FILE, starts_with(README_MARKER)),
            *((out / BOOTSTRAP_DIR / p.file_name("yaml"), is_bootstrap) for p in result.envoy.pods),
        ]
    )
    write_compose(result, out, file)
    click.echo(f"wrote {out / 'docker-compose.yml'}; run it: cd {out} && docker compose up --build")
    _say_notes(result.notes, "Envoy or Compose does differently (also in README.txt)")


@click.command("compose")
@click.argument("file", default="docker-compose.yml", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    "out_file",
    default=DEFAULT_FILE,
    show_default=True,
    type=click.Path(dir_okay=False),
)
@click.option("--name", help="The mesh's name (default: the Compose project's).")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def import_compose(file: str, out_file: str, name: str | None, force: bool) -> None:
    """FILE (a docker-compose.yml) as a mesh.yaml.

    The file is checked against the Compose Specification's schema; its services become mesh
    services; whatever meshdev cannot express is listed with its path, in the output too.
    """
    from meshdev.bridges.compose.import_ import (
        ComposeInvalid,
        dump_mesh,
        import_compose,
        parse_checked,
    )
    from meshdev.bridges.compose.schema import NeedsExtra

    source, target = Path(file), Path(out_file)
    if target.exists() and not force:
        raise click.ClickException(f"{out_file} exists; pass --force to overwrite it")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {file}: {exc}") from None
    try:
        result = import_compose(
            text, compose_dir=source.parent, mesh_dir=target.parent, name=name, source=file
        )
        parse_checked(result.mesh, out_file)
    except NeedsExtra as exc:
        raise click.ClickException(str(exc)) from None
    except ComposeInvalid as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    target.write_text(dump_mesh(result, file), encoding="utf-8")
    click.echo(f"wrote {out_file}: {len(result.mesh['services'])} service(s)")
    _say_notes(result.notes, "not carried over the same way (also atop the file)")


EXPORT_COMMANDS: list[click.Command] = [export_envoy, export_compose]
IMPORT_COMMANDS: list[click.Command] = [import_compose]
