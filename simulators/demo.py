"""`bridge demo`: the simulated plant, PLC and MES plus the gateway, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click
import structlog

from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, run_gateway
from simulators.mes.server import MesReceiver
from simulators.plant.server import PlantSimulator
from simulators.plc.server import PlcSimulator

__all__ = ["DEFAULT_MAPPING", "run_demo"]

log = structlog.get_logger(__name__)

DEFAULT_MAPPING = Path(__file__).resolve().parents[1] / "mappings" / "demo.yaml"
MES_LOG = Path("var/demo/mes-calls.jsonl")
STATUS_EVERY_S = 5.0


async def run_demo(mapping: Path | None, duration: float | None) -> None:
    prepared = prepare(mapping or DEFAULT_MAPPING)
    MES_LOG.parent.mkdir(parents=True, exist_ok=True)
    plant = PlantSimulator(port=4840, pumps=8, faulty=(3,))
    plc = PlcSimulator(port=5020)
    mes = MesReceiver(port=8081, log_path=MES_LOG)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)

    async with contextlib.AsyncExitStack() as stack:
        for sim in (mes, plc, plant):
            await sim.start()
            stack.push_async_callback(sim.stop)
        started: asyncio.Queue[Gateway] = asyncio.Queue(1)
        gateway_task = asyncio.create_task(run_gateway(prepared, stop, started), name="gateway")
        getter = asyncio.create_task(started.get())
        await asyncio.wait({gateway_task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if gateway_task.done():
            getter.cancel()
            await gateway_task  # raises what went wrong at start-up
            return
        gateway = getter.result()
        _banner(prepared.mapping.gateway.api.port, gateway)
        status = asyncio.create_task(_status(gateway, stop))
        try:
            await gateway_task
        finally:
            status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await status
    click.echo(
        f"demo stopped; MES receiver got {len(mes.calls)} calls "
        f"({mes.duplicate_count} duplicate keys), log in {MES_LOG}"
    )


def _banner(api_port: int, gateway: Gateway) -> None:
    api = f"http://127.0.0.1:{api_port}"
    click.echo(
        "\nbridge demo is running (Ctrl+C to stop)\n"
        f"  REST API       {api}/docs   e.g. {api}/api/v1/predictions/latest\n"
        "  OPC UA (HMI)   opc.tcp://127.0.0.1:4850   Objects/Predictions/<asset>/<model>/Value\n"
        "  Plant (sim)    opc.tcp://127.0.0.1:4840   8 pumps, pump-03 develops a bearing fault\n"
        "  PLC (sim)      modbus tcp 127.0.0.1:5020\n"
        f"  MES receiver   http://127.0.0.1:8081/calls   log: {MES_LOG}\n",
        err=True,
    )


async def _status(gateway: Gateway, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(STATUS_EVERY_S)
        latest = sorted(gateway.fanout.latest.values(), key=lambda p: (p.model, p.asset))
        cells = [
            f"{p.asset}={p.value if p.value is not None else '-'}"
            + (f"({p.score:.2f})" if p.score is not None else "")
            + ("" if p.quality.name == "GOOD" else f"[{p.quality.label}]")
            for p in latest
        ]
        click.echo(
            f"predictions: {' '.join(cells)}  | tag updates: {gateway.table.updates}", err=True
        )
