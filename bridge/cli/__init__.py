"""The ``bridge`` command."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path

import click

from bridge.cli.apikeys import apikeys
from bridge.cli.audit import audit
from bridge.cli.compliance import compliance
from bridge.cli.lineage import lineage
from bridge.cli.mapping import mapping
from bridge.cli.reload import reload
from bridge.cli.report import EXIT_MAPPING, fail, print_issues
from bridge.errors import BridgeError, ConfigError
from bridge.logging import configure_logging

__all__ = ["main", "run_async", "until_stopped"]


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def until_stopped(duration: float | None, stop: asyncio.Event) -> None:
    _stop_on_signals(stop)
    if duration is not None:
        asyncio.get_running_loop().call_later(duration, stop.set)
    await stop.wait()


# Commands that keep running and report as they go (a service's log is its output); every
# other command only checks, prints or changes something: its output is the answer, and info
# logs (the store opened, Alembic's migrations) would be noise on its stderr.
SERVICE_COMMANDS = {"run", "demo", "simulate"}


def _version() -> str:
    try:
        return version("bridge-gateway")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


class _PluginGroup(click.Group):
    """Commands contributed by installed packages (the simulators' `demo` and `simulate`, ...)
    are imported when they are invoked or listed, not at start: importing them all (store,
    OPC UA, lifecycle) took ~1 s of every `bridge validate`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = {ep.name for ep in entry_points(group="bridge.commands")}
        return sorted(names | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            for ep in entry_points(group="bridge.commands", name=cmd_name):
                try:
                    command = ep.load()
                except ModuleNotFoundError as exc:
                    # The container image leaves the simulators out; their entry points stay.
                    command = _not_installed(ep.name, exc.name or ep.module)
                self.add_command(command, ep.name)
        return self.commands.get(cmd_name)


def _not_installed(name: str, module: str) -> click.Command:
    def fail() -> None:
        raise click.UsageError(
            f"`bridge {name}` is not part of this installation ({module} is not installed; "
            "the container image holds the gateway only: run it from a source checkout)"
        )

    return click.Command(
        name,
        callback=fail,
        help="(not installed here)",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


@click.group(cls=_PluginGroup)
@click.version_option(_version(), "--version", prog_name="bridge", message="%(prog)s %(version)s")
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Default: info for run, demo and simulate, warning for every other command.",
)
@click.option(
    "--log-json/--log-console",
    default=None,
    help="Log format; default: JSON unless stderr is a terminal.",
)
@click.pass_context
def main(ctx: click.Context, log_level: str | None, log_json: bool | None) -> None:
    """bridge: edge gateway from OPC UA / Modbus tags to ONNX models, SCADA and MES.

    Exit codes: 0 done, 1 refused or failed, 2 usage, 3 invalid mapping, 4 store missing or
    not found in it (see the README)."""
    service = ctx.invoked_subcommand in SERVICE_COMMANDS
    level = log_level or ("info" if service else "warning")
    configure_logging(level, log_json)
    # Alembic says "Context impl SQLiteImpl." and each migration it runs at info: of use when
    # looking into a store's upgrade, not on every command and start.
    logging.getLogger("alembic").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


@main.command()
@click.argument("mapping", type=click.Path(path_type=Path))
@click.option(
    "--no-env",
    is_flag=True,
    help="Read no environment variables (for CI, without the secrets): a ${VAR} is taken as "
    "a placeholder and listed as needed at run time; ${VAR:-default} takes its default.",
)
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def validate(mapping: Path, no_env: bool, as_json: bool) -> None:
    """Check a mapping, its models and every file it names, without opening any connection.

    Exit 0 when valid, 3 with each problem as file:line: key: message (fix: ...)."""
    from bridge.prepare import prepare

    try:
        prepared = prepare(mapping, {} if no_env else None, placeholders=no_env)
    except ConfigError as err:
        if as_json:
            problems = [
                {"file": i.file, "line": i.line, "key": i.key, "message": i.message, "fix": i.hint}
                for i in err.issues
            ]
            click.echo(json.dumps({"mapping": str(mapping), "valid": False, "problems": problems}))
        else:
            print_issues(err)
        sys.exit(EXIT_MAPPING)
    m = prepared.mapping
    if as_json:
        counts = {
            "sources": len(m.sources),
            "assets": len(m.assets),
            "tags": len(m.tags),
            "models": len(m.models),
            "outputs": len(m.outputs),
        }
        needs = {name: list(keys) for name, keys in m.needs.items()}
        click.echo(json.dumps({"mapping": str(mapping), "valid": True, **counts, "needs": needs}))
        return
    click.echo(
        f"{mapping}: OK ({len(m.sources)} sources, {len(m.assets)} assets, "
        f"{len(m.tags)} tags, {len(m.models)} models, {len(m.outputs)} outputs)"
    )
    for name, keys in sorted(m.needs.items()):
        click.echo(f"needs {name} at run time ({', '.join(keys)})")


@main.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to a file.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema of mapping files (for editors)."""
    from bridge.config import mapping_schema

    text = json.dumps(mapping_schema(), indent=2) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("mapping", type=click.Path(path_type=Path))
@click.option("--duration", type=float, help="Stop after this many seconds.")
def run(mapping: Path, duration: float | None) -> None:
    """Run the gateway with MAPPING until SIGINT/SIGTERM."""
    from bridge.prepare import prepare
    from bridge.runtime.pipeline import build_gateway

    try:
        prepared = prepare(mapping)
    except ConfigError as err:
        print_issues(err)
        sys.exit(EXIT_MAPPING)

    async def go() -> None:
        stop = asyncio.Event()
        waiter = asyncio.create_task(until_stopped(duration, stop))
        try:
            gateway = await build_gateway(prepared)
            await gateway.run(stop, reload_on_sighup=True)
        finally:
            stop.set()
            await waiter

    run_async(go)


def run_async(factory: Callable[[], Awaitable[None]]) -> None:
    async def go() -> None:
        await factory()

    try:
        asyncio.run(go())
    except BridgeError as err:
        fail(err)


main.add_command(apikeys)
main.add_command(lineage)
main.add_command(audit)
main.add_command(compliance)
main.add_command(reload)
main.add_command(mapping)
