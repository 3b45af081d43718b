"""The `meshdev` command: parse arguments, build objects, hand over. No logic lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from meshdev import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from meshdev.config import Mesh
    from meshdev.session import Session

# Subcommands import what they use: `meshdev sidecar` (one per pod) must start fast and small.

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
    from meshdev.config import MeshInvalid, load_mesh

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


def _load_or_exit(file: str) -> Mesh:
    from meshdev.config import MeshInvalid, load_mesh

    try:
        return load_mesh(file)
    except MeshInvalid as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)


def _mesh_name(file: str, name: str | None) -> str:
    """The mesh's name, even from a file that no longer validates (down must still work)."""
    import yaml

    from meshdev.config import MeshInvalid, load_mesh
    from meshdev.runtime.paths import mesh_following

    if name:
        return name
    # The mesh a live `up` runs from this file, whatever the file says now: a save in
    # progress names nothing, a rejected save may name another mesh.
    following = mesh_following(Path(file))
    if following is not None:
        return following
    try:
        return load_mesh(file).name
    except MeshInvalid as exc:
        try:
            data = yaml.safe_load(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None
        found = data.get("name") if isinstance(data, dict) else None
        if isinstance(found, str):
            return found
        raise click.ClickException(f"{exc.problems[0]}; pass --name NAME") from None


@main.command()
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option("--headless", is_flag=True, help="No dashboard: print progress and a ready line.")
@click.option(
    "--runtime",
    "runtime_kind",
    type=click.Choice(["docker", "process"]),
    help="Where pods run (default: docker when an engine answers, else local processes).",
)
@click.option("--base-image", help="Base of every image meshdev builds (or MESHDEV_BASE_IMAGE).")
@click.option("--keep", is_flag=True, help="Leave the mesh running when meshdev exits.")
@click.option("--no-watch", is_flag=True, help="Do not re-apply the file when it changes.")
@click.option(
    "--web",
    "web_port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve the dashboard in a browser on 127.0.0.1:PORT instead of this terminal, "
    "which then prints progress as with --headless.",
)
@click.option(
    "--no-capture",
    is_flag=True,
    help="Docker: do not capture the pods' traffic with iptables (for an engine that refuses "
    "NET_ADMIN); apps reach services through HTTP_PROXY, as on the process runtime.",
)
def up(
    file: str,
    headless: bool,
    runtime_kind: str | None,
    base_image: str | None,
    keep: bool,
    no_watch: bool,
    web_port: int | None,
    no_capture: bool,
) -> None:
    """Build and start the mesh in FILE, then follow FILE: every save is re-applied.

    Serves until Ctrl-C (or SIGTERM, or q in the dashboard), then removes everything it
    started, unless --keep.
    """
    from meshdev.common.loop import run
    from meshdev.runtime.base import RuntimeFailure
    from meshdev.runtime.select import base_image as pick_base_image
    from meshdev.runtime.select import make_runtime
    from meshdev.session import Session, run_headless

    mesh = _load_or_exit(file)
    _refuse_a_second_up(mesh.name)

    def say(line: str) -> None:
        click.echo(line)

    try:
        runtime = make_runtime(
            runtime_kind,
            mesh,
            Path(file),
            pick_base_image(base_image, mesh),
            say,
            capture=not no_capture,
        )
        session = Session(mesh, Path(file), runtime, say, watch=not no_watch)
        if web_port is not None:
            code = run(_headless_with_web(session, keep, web_port, say))
        elif headless:
            code = run(run_headless(session, keep=keep))
        else:
            from meshdev.tui.launch import run_dashboard

            code = run_dashboard(session, keep=keep)
    except RuntimeFailure as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


def _refuse_a_second_up(mesh_name: str) -> None:
    """Exit when a live `meshdev up` runs this mesh already: this one would take its pods
    for leftovers of a crashed run, remove them and fight it for their addresses."""
    from meshdev.runtime.paths import live_session_pid, read_state

    state = read_state(mesh_name)
    pid = live_session_pid(state)
    if pid is None or state is None:
        return
    raise click.ClickException(
        f"mesh {mesh_name} is already running: `meshdev up` (pid {pid}) serves it from "
        f"{state.get('file', '?')}; stop that one first (Ctrl-C there, or `meshdev down "
        f"--name {mesh_name}`), or give this mesh another name"
    )


async def _headless_with_web(
    session: Session, keep: bool, port: int, say: Callable[[str], None]
) -> int:
    """`up --web`: the mesh as with --headless, its dashboard served to browsers meanwhile
    (each tab a `meshdev watch --mesh FILE`, which finds the pods in the session's state)."""
    from meshdev.session import run_headless
    from meshdev.tui.logic.commands import Commands
    from meshdev.tui.remote_keys import KeyService
    from meshdev.tui.web import HOST, WebDashboard, WebError, watch_command

    # The tabs' demo keys act here, on this session (each tab is a process of its own).
    commands = Commands(session)
    tab = ["--mesh", str(session.mesh_file), "--keys", f"http://{HOST}:{port}/"]
    keys = KeyService(commands, session.token)
    dashboard = WebDashboard(watch_command(tab), port, f"meshdev: {session.mesh.name}", keys)
    try:
        url = await dashboard.start()
    except WebError as exc:
        raise click.ClickException(str(exc)) from None
    say(f"web dashboard: {url} (it shows the mesh once it is ready)")

    async def before_stop() -> None:
        # As the terminal dashboard does: no key acts, and no load runs, while the mesh goes.
        keys.close()
        await commands.stop_load()

    try:
        return await run_headless(session, keep=keep, before_stop=before_stop)
    finally:
        keys.close()
        await commands.stop_load()
        await dashboard.stop()


def _mesh_targets(file: str, name: str | None = None) -> list[str]:
    """The NAME=ADMIN_URL of every pod of the `meshdev up` running the mesh in `file`."""
    from meshdev.runtime.paths import read_state

    mesh_name = _mesh_name(file, name)
    state = read_state(mesh_name)
    pods = state.get("pods") if state is not None else None
    if not isinstance(pods, list) or not pods:
        raise click.ClickException(
            f"no `meshdev up` of mesh {mesh_name} is running (or it has no pods yet): "
            f"start it with `meshdev up {file}`"
        )
    return [f"{p['name']}={p['admin_url']}" for p in pods if p.get("admin_url")]


@main.command()
@click.argument("admin_urls", nargs=-1, metavar="[NAME=]ADMIN_URL...")
@click.option(
    "--mesh",
    "mesh_file",
    type=click.Path(dir_okay=False),
    help="Follow the `meshdev up` running this mesh file (its pods and their states, its "
    "reloads, its logs), instead of ADMIN_URLs.",
)
@click.option(
    "--interval",
    type=float,
    default=0.25,
    show_default=True,
    help="Seconds between views (0.05 to 60).",
)
@click.option(
    "--web",
    "web_port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve the dashboard to browsers on 127.0.0.1:PORT instead of this terminal.",
)
# `up --web` gives it to each tab: where that `up` acts on the demo keys (tui/remote_keys.py).
@click.option("--keys", "keys_url", hidden=True)
def watch(
    admin_urls: tuple[str, ...],
    mesh_file: str | None,
    interval: float,
    web_port: int | None,
    keys_url: str | None,
) -> None:
    """Open the dashboard on proxies that already run: meshdev sidecars, or Envoys.

    Give each proxy's admin URL (e.g. http://127.0.0.1:9901), optionally named:
    frontend=http://127.0.0.1:15000, or --mesh FILE for the pods of a running `meshdev up`.
    meshdev's sidecars are streamed; a proxy without /stats/stream (an Envoy) is polled at
    /stats?format=json. Watching starts and stops nothing: q only closes the dashboard.
    """
    from meshdev.telemetry.io.source import check_interval
    from meshdev.telemetry.io.targets import TargetError, parse_targets

    if bool(admin_urls) == bool(mesh_file):
        raise click.UsageError("give either ADMIN_URLs or --mesh FILE")
    if keys_url is not None:
        from meshdev.tui.remote_keys import check_keys_url

        try:
            check_keys_url(keys_url)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        check_interval(interval)
        if web_port is None and keys_url is not None and mesh_file:
            # A tab of `up --web`, maybe opened while that `up` starts: its pods come with
            # the session's state (tui/session_watch.py), not here.
            targets = []
        elif web_port is None:
            targets = parse_targets(list(admin_urls) or _mesh_targets(str(mesh_file)))
        else:
            parse_targets(admin_urls)  # refused here, not in every browser tab
    except (TargetError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if web_port is not None:
        from meshdev.common.loop import run
        from meshdev.tui.web import WebDashboard, WebError, serve_until_signal, watch_command

        args = ["--mesh", str(mesh_file)] if mesh_file else list(admin_urls)
        dashboard = WebDashboard(
            watch_command([*args, "--interval", str(interval)]), web_port, "meshdev watch"
        )
        try:
            sys.exit(run(serve_until_signal(dashboard, click.echo)))
        except WebError as exc:
            raise click.ClickException(str(exc)) from None
    from meshdev.tui.launch import run_watch

    # The mesh file's model (security policies, ...) when it was given and still loads.
    mesh = None
    if mesh_file:
        from meshdev.config import MeshInvalid, load_mesh

        try:
            mesh = load_mesh(mesh_file)
        except (MeshInvalid, OSError) as exc:
            # Watching needs only the running pods; the model adds the policies' names.
            click.echo(f"{mesh_file} does not load ({exc}): no policy names shown", err=True)
            mesh = None
    session_of = _mesh_name(mesh_file, None) if mesh_file else None
    sys.exit(run_watch(targets, interval, mesh, session_of, keys_url if session_of else None))


@main.command()
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option("--name", help="The mesh's name, if FILE is gone or broken.")
@click.option("--json", "as_json", is_flag=True, help="The stable JSON form (docs/status.md).")
def status(file: str, name: str | None, as_json: bool) -> None:
    """Every pod and the gateway: state, readiness, address, admin URL, config version."""
    from meshdev.common.loop import run
    from meshdev.runtime.detect import running_runtime
    from meshdev.runtime.paths import read_state
    from meshdev.status import gather_status, render_table

    mesh_name = _mesh_name(file, name)
    state = read_state(mesh_name)
    runtime = running_runtime(mesh_name, Path(file), state)
    result = run(gather_status(mesh_name, runtime, state))
    click.echo(json.dumps(result, indent=2) if as_json else render_table(result))


@main.command()
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option("--name", help="The mesh's name, if FILE is gone or broken.")
@click.option(
    "--json", "as_json", is_flag=True, help="Each trace with all its spans (docs/traces.md)."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    metavar="N",
    help="Show at most N traces.",
)
@click.option("--slow", is_flag=True, help="Slowest first (by total duration), not newest.")
@click.option(
    "--failed",
    is_flag=True,
    help="Only traces in which some hop failed: a 5xx, a response flag, an error tag.",
)
def traces(
    file: str, name: str | None, as_json: bool, limit: int, slow: bool, failed: bool
) -> None:
    """The recent traces of the mesh `meshdev up` runs from FILE (default ./mesh.yaml).

    The mesh's `meshdev up` keeps the traces of every sidecar's spans (the newest 500); this
    reads them and lists them, newest first: when, the trace id, the route, the services the
    request crossed, the total time, the span count, and the status the caller got with
    Envoy's response flags. No collector is needed. Without a live `up` (a mesh left running
    with --keep), each sidecar's own ring is read: its last 256 spans. --json prints every
    trace with its spans (parent ids, timings, tags). Exit 1 when nothing of the mesh answers.
    """
    from meshdev.cli.traces import (
        RINGS_ONLY,
        empty_reason,
        gather,
        pick,
        problems,
        render_table,
        trace_json,
    )
    from meshdev.common.trace_wire import RELAY_NODE
    from meshdev.runtime.paths import read_state, trace_relay
    from meshdev.telemetry.io.targets import TargetError, parse_targets

    mesh_name = _mesh_name(file, name)
    relay = trace_relay(mesh_name)
    store, outcomes = gather([(RELAY_NODE, relay[0])], relay[1]) if relay else (None, {})
    from_rings = not any(c.outcome == "ok" for c in outcomes.values())
    if from_rings:
        # No live `up`, or one that did not answer: what the sidecars still hold.
        for line in problems(outcomes):
            click.echo(f"warning: {line}; reading the sidecars' own rings", err=True)
        try:
            targets = parse_targets(_mesh_targets(file, name))
        except TargetError as exc:
            raise click.ClickException(str(exc)) from None
        store, outcomes = gather(targets)
    assert store is not None
    state = read_state(mesh_name) or {}
    for line in problems(outcomes):
        click.echo(f"warning: {line}", err=True)
    chosen = pick(store, slow=slow, failed=failed, limit=limit)
    if as_json:
        click.echo(json.dumps([trace_json(t) for t in chosen], indent=2))
    elif chosen:
        click.echo(render_table(chosen))
        if from_rings:
            click.echo(RINGS_ONLY, err=True)
    if not chosen:
        ingress = state.get("ingress_url")
        reason = empty_reason(outcomes, file, ingress if isinstance(ingress, str) else None)
        if failed and len(store):
            reason = f"no failed trace among the {len(store)} kept"
        click.echo(reason, err=True)
        if not any(c.outcome == "ok" for c in outcomes.values()):
            sys.exit(1)


@main.command()
@click.argument("file", default=DEFAULT_FILE, type=click.Path(dir_okay=False))
@click.option("--name", help="The mesh's name, if FILE is gone or broken.")
def down(file: str, name: str | None) -> None:
    """Remove every container, network and process of the mesh, also of a crashed run."""
    from meshdev.common.loop import run
    from meshdev.runtime.detect import remove_everything

    mesh_name = _mesh_name(file, name)
    removed = run(remove_everything(mesh_name, Path(file), echo=click.echo))
    click.echo(
        f"mesh {mesh_name}: removed {len(removed)}"
        if removed
        else f"mesh {mesh_name}: nothing to remove"
    )


@main.command()
@click.option(
    "--config",
    "config_file",
    required=True,
    help="The sidecar's rendered config: a JSON or YAML file, or env:NAME for JSON in an "
    "environment variable.",
)
def sidecar(config_file: str) -> None:
    """Run one sidecar proxy (the data plane). The control plane starts these for you.

    The admin token for state-changing endpoints comes from env MESHDEV_ADMIN_TOKEN.
    """
    from meshdev.sidecar.main import serve

    serve(config_file, os.environ.get("MESHDEV_ADMIN_TOKEN", ""))


def _ports_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give port numbers separated by commas") from None
    bad = [p for p in ports if not 1 <= p <= 65535]
    if bad:
        raise click.BadParameter(f"not a port: {bad[0]}")
    return ports


@main.command("capture-init")
@click.option("--proxy-uid", default=1337, show_default=True, help="The sidecar's user id.")
@click.option("--outbound-port", default=15001, show_default=True)
@click.option("--inbound-port", default=15006, show_default=True)
@click.option(
    "--exclude-inbound-ports",
    default="",
    callback=_ports_option,
    help="Comma-separated ports whose incoming connections bypass the sidecar.",
)
@click.option(
    "--exclude-outbound-ports",
    default="",
    callback=_ports_option,
    help="Comma-separated ports the app reaches directly.",
)
@click.option(
    "--hosts-file",
    default=None,
    help="The pod's hosts file: written with --host names, then handed to --proxy-uid.",
)
@click.option("--host", "hosts", multiple=True, metavar="NAME=ADDRESS")
def capture_init(
    proxy_uid: int,
    outbound_port: int,
    inbound_port: int,
    exclude_inbound_ports: tuple[int, ...],
    exclude_outbound_ports: tuple[int, ...],
    hosts_file: str | None,
    hosts: tuple[str, ...],
) -> None:
    """Capture a pod's TCP traffic for its sidecar (iptables, in the pod's network namespace).

    The Docker runtime runs this once per pod, as root with NET_ADMIN, before the pod's app
    starts (Istio's istio-init); the long-running sidecar then needs no privilege.
    """
    from meshdev.sidecar.capture.hosts import write_hosts
    from meshdev.sidecar.capture.iptables import CaptureFailed, CaptureRules, apply

    addresses: dict[str, str] = {}
    for item in hosts:
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            raise click.BadParameter(f"{item!r}: give NAME=ADDRESS", param_hint="--host")
        addresses[name] = address
    rules = CaptureRules(
        proxy_uid, outbound_port, inbound_port, exclude_inbound_ports, exclude_outbound_ports
    )
    try:
        if hosts_file is not None:
            write_hosts(hosts_file, addresses)
            # The sidecar rewrites it as services come and go.
            os.chown(hosts_file, proxy_uid, proxy_uid)
        apply(rules)
    except (CaptureFailed, OSError) as exc:
        raise click.ClickException(f"traffic capture failed: {exc}") from exc
    click.echo(
        f"capture: outbound TCP -> :{outbound_port} (but uid {proxy_uid}), inbound TCP -> "
        f":{inbound_port}; {len(addresses)} service names"
    )


# ---- meshdev load: the built-in load generator (the work is in meshdev/cli/load.py) ----


def _duration_option(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from meshdev.config.durations import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("load")
@click.argument("url")
@click.option(
    "--rps",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="Requests per second, sent at a constant rate (open loop).",
)
@click.option(
    "--duration",
    required=True,
    callback=_duration_option,
    help="How long to send, like 10s or 500ms.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Most requests in flight (connections); default max(64, rps/2).",
)
@click.option("--path-mix", help="Weighted paths to send instead of URL's: '/items=9,/=1'.")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    help="A header for every request, 'name: value' (repeatable).",
)
@click.option("--method", default="GET", show_default=True, help="The HTTP method.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def load(
    url: str,
    rps: float,
    duration: float,
    concurrency: int | None,
    path_mix: str | None,
    headers: tuple[str, ...],
    method: str,
    as_json: bool,
) -> None:
    """Send load to URL at a constant rate and report latency percentiles and outcomes.

    Latency is measured from each request's intended send time, so a stall of the target shows
    in every request it held up. Exit 0 when every request succeeded (a 2xx or 3xx answer), 1
    when any did not: a 4xx (a path the mesh does not route, a rate limit, a denial), a 5xx or
    no answer at all (refused, reset, timeout), so a fault demo exits 1 too; 2 for bad
    arguments.
    """
    from meshdev.cli.load import load_command
    from meshdev.loadgen import LoadSpecError, parse_header, parse_path_mix

    try:
        mix = list(parse_path_mix(path_mix)) if path_mix else None
        parsed = [parse_header(h) for h in headers]
    except LoadSpecError as exc:
        raise click.BadParameter(str(exc)) from None
    sys.exit(load_command(url, rps, duration, concurrency, mix, parsed, method, as_json, True))


def _register_bridges() -> None:
    from meshdev.cli.bridges import export, import_

    main.add_command(export)
    main.add_command(import_)


_register_bridges()
