"""The simulators' commands, added to the `bridge` CLI through the `bridge.commands` entry point:
`bridge demo` and `bridge simulate plant|plc|mes`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, TypeVar

import click

from bridge.cli import run_async, until_stopped
from bridge.simulators.demo_ports import DemoPorts

FC = TypeVar("FC", bound=Callable[..., object])

__all__ = ["demo", "simulate"]


class _Simulator(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _port_option(name: str, default: int, what: str) -> Callable[[FC], FC]:
    return click.option(
        f"--{name}-port",
        name,
        type=click.IntRange(1, 65535),
        envvar=f"BRIDGE_DEMO_{name.upper()}_PORT",
        show_envvar=True,
        default=None,
        help=f"Port of {what} [default: {default} + --port-offset].",
    )


@click.command()
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option(
    "--mapping",
    type=click.Path(path_type=Path),
    default=None,
    help="Demo mapping (default: the one bundled with bridge, mappings/demo.yaml in the source).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Where the demo keeps its store, API key and MES call log.",
)
@click.option(
    "--port-offset",
    type=click.IntRange(0, 60000),
    default=0,
    show_default=True,
    help="Added to every default port (e.g. 100: plant 4940, API 8100, ...); a port given "
    "by its own option or variable is used as it is.",
)
@_port_option("plant", DemoPorts.plant, "the simulated plant (OPC UA)")
@_port_option("plc", DemoPorts.plc, "the simulated PLC (Modbus TCP)")
@_port_option("mes", DemoPorts.mes, "the MES receiver (HTTP)")
@_port_option("api", DemoPorts.api, "the gateway's REST API")
@_port_option("hmi", DemoPorts.hmi, "the gateway's OPC UA server")
def demo(
    duration: float | None,
    mapping: Path | None,
    workdir: Path,
    port_offset: int,
    **ports: int | None,
) -> None:
    """Simulated plant + PLC + MES and the gateway with the bundled model, all on 127.0.0.1."""
    from bridge.simulators.demo import run_demo

    chosen = demo_ports(port_offset, ports)
    run_async(lambda: run_demo(mapping, duration, chosen, workdir))


def demo_ports(offset: int, given: Mapping[str, int | None]) -> DemoPorts:
    """Each port as given (option or BRIDGE_DEMO_*_PORT), else its default plus ``offset``."""
    defaults = DemoPorts()
    chosen = {}
    for name, default in defaults.items():
        port = given.get(name)
        chosen[name] = port if port is not None else default + offset
        if chosen[name] > 65535:
            raise click.BadParameter(
                f"{default} + {offset} is above 65535 (port of {name})", param_hint="--port-offset"
            )
    return DemoPorts(**chosen)


@click.group()
def simulate() -> None:
    """Run one simulator on its own."""


@simulate.command("plant")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=4840, show_default=True, help="OPC UA port.")
@click.option("--pumps", default=8, show_default=True, help="Number of pumps.")
@click.option("--faulty", default="3", show_default=True, help="Comma-separated pump numbers.")
@click.option("--interval", default=0.1, show_default=True, help="Update interval, seconds.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
def simulate_plant(
    host: str, port: int, pumps: int, faulty: str, interval: float, duration: float | None
) -> None:
    """OPC UA plant: pumps with physics, noise and a developing bearing fault."""
    from bridge.simulators.plant.server import PlantSimulator

    bad = tuple(int(x) for x in faulty.split(",") if x.strip())
    sim = PlantSimulator(host=host, port=port, pumps=pumps, faulty=bad, update_interval_s=interval)
    run_async(lambda: _serve(sim, f"plant on {sim.endpoint}", duration))


@simulate.command("plc")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5020, show_default=True, help="Modbus TCP port.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
def simulate_plc(host: str, port: int, duration: float | None) -> None:
    """Modbus TCP PLC serving values in several encodings."""
    from bridge.simulators.plc.server import PlcSimulator

    sim = PlcSimulator(host=host, port=port)
    run_async(lambda: _serve(sim, f"PLC on {host}:{port}", duration))


@simulate.command("mes")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8081, show_default=True, help="HTTP port.")
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Append every call as a JSON line to this file.",
)
@click.option("--duration", type=float, help="Stop after this many seconds.")
def simulate_mes(host: str, port: int, log_path: Path | None, duration: float | None) -> None:
    """MES receiver: records calls, counts duplicate Idempotency-Keys, fails on command."""
    from bridge.simulators.mes.server import MesReceiver

    sim = MesReceiver(host=host, port=port, log_path=log_path)
    run_async(lambda: _serve(sim, f"MES receiver on {sim.url}", duration))


async def _serve(sim: _Simulator, what: str, duration: float | None) -> None:
    await sim.start()
    click.echo(f"{what} (Ctrl+C to stop)")
    try:
        await until_stopped(duration, asyncio.Event())
    finally:
        await sim.stop()
