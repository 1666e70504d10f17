"""A real asyncua server whose four pump variables (ns ``urn:t``, ``s=pumpa.V/T/P/S``, the tags
of ``pump_mapping``) change every ``period_s``, stamped like a device stamps its values, and
keep an in-memory history (HistoryRead) for the tags asked: the plant of the backfill tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from asyncua import Server, ua
from asyncua.common.node import Node
from support import LOOPBACK, free_port

__all__ = ["SHORT", "Historian", "historian"]

NS = "urn:t"
SHORT = {"vibration": "V", "bearing_temperature": "T", "discharge_pressure": "P", "speed": "S"}


@dataclass
class Historian:
    port: int
    nodes: dict[str, Node]
    count: int = 0  # writes so far


@contextlib.asynccontextmanager
async def historian(
    value: Callable[[str, int], float],
    historized: Iterable[str] = tuple(SHORT),
    period_s: float = 0.1,
) -> AsyncIterator[Historian]:
    """The server, started; ``value(tag, count)`` is what the count-th write gives ``tag``."""
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://{LOOPBACK}:{port}")
    ns = await server.register_namespace(NS)
    nodes = {
        tag: await server.nodes.objects.add_variable(
            ua.NodeId(f"pumpa.{short}", ns), f"pumpa.{short}", value(tag, 0)
        )
        for tag, short in SHORT.items()
    }
    await server.start()
    plant = Historian(port, nodes)

    async def write() -> None:
        while True:
            plant.count += 1
            # The history is kept by source time, so every value carries one.
            stamp = datetime.fromtimestamp(time.time(), UTC)
            for tag, node in nodes.items():
                variant = ua.Variant(value(tag, plant.count), ua.VariantType.Double)
                await node.write_value(ua.DataValue(variant, SourceTimestamp=stamp))
            await asyncio.sleep(period_s)

    writer: asyncio.Task[None] | None = None
    try:
        for tag in historized:
            await server.historize_node_data_change(nodes[tag], period=None, count=100_000)
        writer = asyncio.create_task(write())
        yield plant
    finally:
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await server.stop()
