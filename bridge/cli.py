"""The ``bridge`` command."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import click

from bridge.errors import BridgeError, ConfigError
from bridge.logging import configure_logging

__all__ = ["main"]


class _Simulator(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _until_stopped(duration: float | None, stop: asyncio.Event) -> None:
    _stop_on_signals(stop)
    if duration is not None:
        asyncio.get_running_loop().call_later(duration, stop.set)
    await stop.wait()


def _print_issues(err: ConfigError) -> None:
    for issue in err.issues:
        click.echo(str(issue), err=True)
    click.echo(f"{len(err.issues)} problem(s) found", err=True)


@click.group()
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-json/--log-console",
    default=None,
    help="Log format; default: JSON unless stderr is a terminal.",
)
def main(log_level: str, log_json: bool | None) -> None:
    """bridge: edge gateway from OPC UA / Modbus tags to ONNX models, SCADA and MES."""
    configure_logging(log_level, log_json)


@main.command()
@click.argument("mapping", type=click.Path(path_type=Path))
def validate(mapping: Path) -> None:
    """Check a mapping (and its models) without opening any connection."""
    from bridge.prepare import prepare

    try:
        prepared = prepare(mapping)
    except ConfigError as err:
        _print_issues(err)
        sys.exit(1)
    m = prepared.mapping
    click.echo(
        f"{mapping}: OK ({len(m.sources)} sources, {len(m.assets)} assets, "
        f"{len(m.tags)} tags, {len(m.models)} models, {len(m.outputs)} outputs)"
    )


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
    from bridge.runtime.pipeline import run_gateway

    try:
        prepared = prepare(mapping)
    except ConfigError as err:
        _print_issues(err)
        sys.exit(1)

    async def go() -> None:
        stop = asyncio.Event()
        waiter = asyncio.create_task(_until_stopped(duration, stop))
        try:
            await run_gateway(prepared, stop)
        finally:
            stop.set()
            await waiter

    _run(go)


@main.command()
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option(
    "--mapping",
    type=click.Path(path_type=Path),
    default=None,
    help="Demo mapping (default: mappings/demo.yaml of this repository).",
)
def demo(duration: float | None, mapping: Path | None) -> None:
    """Simulated plant + PLC + MES and the gateway with the bundled model, all on 127.0.0.1."""
    from simulators.demo import run_demo

    _run(lambda: run_demo(mapping, duration))


@main.group()
def simulate() -> None:
    """Run one simulator on its own."""


@simulate.command("plant")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4840, show_default=True)
@click.option("--pumps", default=8, show_default=True)
@click.option("--faulty", default="3", show_default=True, help="Comma-separated pump numbers.")
@click.option("--interval", default=0.1, show_default=True, help="Update interval, seconds.")
@click.option("--duration", type=float)
def simulate_plant(
    host: str, port: int, pumps: int, faulty: str, interval: float, duration: float | None
) -> None:
    """OPC UA plant: pumps with physics, noise and a developing bearing fault."""
    from simulators.plant.server import PlantSimulator

    bad = tuple(int(x) for x in faulty.split(",") if x.strip())
    sim = PlantSimulator(host=host, port=port, pumps=pumps, faulty=bad, update_interval_s=interval)
    _run(lambda: _serve(sim, f"plant on {sim.endpoint}", duration))


@simulate.command("plc")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5020, show_default=True)
@click.option("--duration", type=float)
def simulate_plc(host: str, port: int, duration: float | None) -> None:
    """Modbus TCP PLC serving values in several encodings."""
    from simulators.plc.server import PlcSimulator

    sim = PlcSimulator(host=host, port=port)
    _run(lambda: _serve(sim, f"PLC on {host}:{port}", duration))


@simulate.command("mes")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True)
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Append every call as a JSON line to this file.",
)
@click.option("--duration", type=float)
def simulate_mes(host: str, port: int, log_path: Path | None, duration: float | None) -> None:
    """MES receiver: records calls, counts duplicate Idempotency-Keys, fails on command."""
    from simulators.mes.server import MesReceiver

    sim = MesReceiver(host=host, port=port, log_path=log_path)
    _run(lambda: _serve(sim, f"MES receiver on {sim.url}", duration))


async def _serve(sim: _Simulator, what: str, duration: float | None) -> None:
    await sim.start()
    click.echo(f"{what} (Ctrl+C to stop)")
    try:
        await _until_stopped(duration, asyncio.Event())
    finally:
        await sim.stop()


def _run(factory: Callable[[], Awaitable[None]]) -> None:
    async def go() -> None:
        await factory()

    try:
        asyncio.run(go())
    except ConfigError as err:
        _print_issues(err)
        sys.exit(1)
    except BridgeError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
