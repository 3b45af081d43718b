"""`meshdev export kubernetes` and `meshdev import istio` (see bridges.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

# A Kubernetes namespace is a DNS label.
_NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# What an earlier export wrote and a new one may replace (meshdev.bridges.kube.export).
_EXPORTED = re.compile(r"^(00-namespace|ingress|ratelimit|service-[a-z0-9-]+)\.yaml$|^README\.txt$")


def _namespace(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _NAMESPACE.match(value):
        raise click.BadParameter("a namespace is lower case letters, digits and -, up to 63")
    return value


def _prepare(out: Path) -> None:
    """An empty or new folder, or one an earlier export wrote (whose files go first, so a
    removed service leaves no file behind for `kubectl apply -f` to bring back)."""
    from meshdev.bridges.kube.readme import MARKER

    if not out.exists():
        out.mkdir(parents=True)
        return
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    readme = out / "README.txt"
    ours = readme.is_file() and readme.read_text(encoding="utf-8").startswith(MARKER)
    strangers = [e for e in entries if not _EXPORTED.match(e)]
    if not ours or strangers:
        listed = ", ".join(strangers or entries)
        raise click.ClickException(
            f"{out} holds files no earlier export wrote ({listed}): give an empty or new folder"
        )
    for name in entries:
        (out / name).unlink()


@click.command("kubernetes")
@click.argument("file", default="mesh.yaml", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder to write (new, empty, or an earlier export's).",
)
@click.option(
    "--namespace",
    callback=_namespace,
    help="The Kubernetes namespace (default: the mesh's name).",
)
@click.option(
    "--image-prefix",
    default="",
    metavar="REGISTRY/",
    help="Prefix of the images built from the mesh's folders (the registry to push to).",
)
def export_kubernetes(file: str, out: Path, namespace: str | None, image_prefix: str) -> None:
    """Write the mesh in FILE as Kubernetes Deployments and Services with Istio's resources.

    One YAML file per service, plus the namespace, the ingress and local rate limits, and a
    README.txt saying how to build, push and `kubectl apply -f` them. What Istio cannot say
    is printed as a warning naming the mesh file's field, and listed in README.txt.
    """
    from meshdev.bridges.kube.export import ExportError, export_mesh
    from meshdev.config import MeshInvalid, load_mesh

    try:
        mesh = load_mesh(file)
    except MeshInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    try:
        result = export_mesh(
            mesh,
            namespace,
            image_prefix,
            # Absolute: README.txt is read from the output folder, wherever the export ran.
            mesh_dir=str(Path(file).resolve().parent),
            out_dir=str(out),
        )
    except ExportError as exc:
        raise click.ClickException(str(exc)) from None
    _prepare(out)
    for name, text in result.files.items():
        (out / name).write_text(text, encoding="utf-8")
    for gap in result.gaps:
        click.echo(f"warning: {gap}", err=True)
    click.echo(
        f"wrote {len(result.files)} files to {out} (namespace {result.namespace}); "
        f"next: {out / 'README.txt'}"
    )


def _read(paths: tuple[Path, ...]) -> list[tuple[str, str]]:
    files: list[tuple[str, str]] = []
    for path in paths:
        members = (
            sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for member in members:
            try:
                files.append((str(member), member.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise click.ClickException(f"{member}: {exc}") from None
    return files


@click.command("istio")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The mesh.yaml to write.",
)
@click.option("--name", help="The mesh's name (default: the namespace's, or the export's).")
@click.option(
    "--namespace",
    callback=_namespace,
    help="Whose resources to read (default: the namespace the files name, else default).",
)
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
def import_istio(
    files: tuple[Path, ...], out: Path, name: str | None, namespace: str | None, force: bool
) -> None:
    """Write a mesh.yaml from Istio's and Kubernetes' YAML FILES (or folders of them).

    Deployments and Services become services (a Deployment's `version` label a subset),
    VirtualServices routes (a gateway's the ingress), DestinationRules policies,
    PeerAuthentication and AuthorizationPolicy security. Every field mesh.yaml cannot say is
    printed with its document and path, and listed atop the written file.
    """
    from meshdev.bridges.kube.importer import ImportFailed
    from meshdev.bridges.kube.importer import import_istio as run

    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; --force overwrites it")
    try:
        result = run(_read(files), name=name, namespace=namespace, output=str(out))
    except ImportFailed as exc:
        raise click.ClickException(str(exc)) from None
    out.write_text(result.text, encoding="utf-8")
    for note in result.notes:
        click.echo(f"not carried over: {note}", err=True)
    services = len(result.mesh.services)
    click.echo(
        f"wrote {out}: mesh {result.mesh.name}, {services} service{'s' if services != 1 else ''}"
        f"; next: meshdev validate {out}"
    )


EXPORT_COMMANDS: list[click.Command] = [export_kubernetes]
IMPORT_COMMANDS: list[click.Command] = [import_istio]
