"""A gateway's Sparkplug B path as its own process, for the kill -9 test; also the wiring
(store writer -> outbox -> relay -> edge node) that the in-process tests use.

    python tests/sparkplug_child.py SETTINGS_JSON STORE_URL

Writes one prediction per slot every 50 ms and relays them. Prints "ready" once running;
SIGTERM stops it cleanly (NDEATH, then DISCONNECT); SIGKILL leaves the broker to send the will.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from pathlib import Path

import structlog
from durable_path import DurablePath, durable_path

from bridge.connectors.mqtt.sparkplug.config import SparkplugSettings
from bridge.connectors.mqtt.sparkplug.edge import SparkplugEdgeNode
from bridge.destination import DestinationContext
from bridge.types import Prediction, PredictionSlot, Quality

GATEWAY = "gw-sparkplug"
SHA = "ab" * 32
SLOTS = (
    PredictionSlot("pump-a", "flow", "2.1.0", SHA, unit="m3/h"),
    PredictionSlot("pump-a", "health", "1.0.0", SHA, labels=("healthy", "cavitation")),
    PredictionSlot("pump-b", "health", "1.0.0", SHA, labels=("healthy", "cavitation")),
)


def prediction(slot: PredictionSlot, seq: int) -> Prediction:
    """A classifier's label or a regressor's value, depending on the slot."""
    value: str | float = ("healthy", "cavitation")[seq % 2] if slot.labels else 10.0 + seq
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{slot.asset}/{slot.model}/{seq}")),
        seq=seq,
        asset=slot.asset,
        model=slot.model,
        version=slot.version,
        sha256=slot.sha256,
        value=value,
        score=0.5 + (seq % 5) / 10,
        quality=Quality.GOOD,
        timestamp=time.time(),
        input_age_s=0.1,
        drift_score=0.01 * (seq % 3),
    )


Pipeline = DurablePath[SparkplugEdgeNode]


def pipeline(
    settings: SparkplugSettings, store_url: str
) -> contextlib.AbstractAsyncContextManager[Pipeline]:
    """The gateway's durable path around the edge node, as the runtime wires it."""
    destination = SparkplugEdgeNode("sparkplug", settings, DestinationContext(GATEWAY, slots=SLOTS))
    return durable_path(destination, store_url, GATEWAY)


async def main(settings: SparkplugSettings, store_url: str) -> None:
    # stdout carries only "ready" for the parent; logs go to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with pipeline(settings, store_url) as running:
        print("ready", flush=True)
        seq = 0
        while not stop.is_set():
            seq += 1
            await running.writer.write([prediction(slot, seq) for slot in SLOTS])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


if __name__ == "__main__":
    fields = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(main(SparkplugSettings.model_validate(fields), sys.argv[2]))
