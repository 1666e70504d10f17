"""What the write-back action tests share: the signals of a PLC simulator holding a pump's
temperature, its float32 setpoint and its running coil (frozen: only writes change them), and
a whole gateway run in-process on a mapping file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from support import wait_until

from bridge.config.actions import ModbusTarget
from bridge.prepare import prepare
from bridge.runtime.pipeline import Gateway, build_gateway
from bridge.simulators.plc.register_map import Signal

__all__ = [
    "FROZEN",
    "SETPOINT",
    "first_readings",
    "holding",
    "plc_signals",
    "running_gateway",
]

FROZEN = 3600.0  # the simulator's update interval: its values hold still during a test
SETPOINT = 1200.0


def plc_signals() -> tuple[Signal, ...]:
    return (
        Signal("Temp", "holding", 0, "uint16", "ABCD", "", lambda t: 20.0),
        Signal("Setpoint", "holding", 1, "float32", "ABCD", "", lambda t: SETPOINT),
        Signal("Running", "coil", 0, "bool", "ABCD", "", lambda t: 1.0),
        Signal("I0", "input", 0, "uint16", "ABCD", "", lambda t: 0.0),
        Signal("D0", "discrete", 0, "bool", "ABCD", "", lambda t: 0.0),
    )


def holding(address: int, type_: str) -> ModbusTarget:
    """A holding register of source ``plc`` (the panel writes and reads through it)."""
    return ModbusTarget.model_validate(
        {"source": "plc", "table": "holding", "address": address, "type": type_}
    )


@contextlib.asynccontextmanager
async def running_gateway(path: Path) -> AsyncIterator[Gateway]:
    gateway = await build_gateway(prepare(path))
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    try:
        await asyncio.wait_for(gateway.started.wait(), 30)
        yield gateway
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def first_readings(gateway: Gateway, tags: Sequence[str]) -> None:
    """Wait for the first reading of each of the pump's ``tags``, before anything triggers."""
    await wait_until(
        lambda: all(gateway.table.get(f"pump.{t}").updated_mono is not None for t in tags),
        10,
        what="first readings",
    )
