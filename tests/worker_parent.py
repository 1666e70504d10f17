"""A gateway stand-in for test_opcua_workers: connects an OpcUaWorkerSource (2 workers) to the
endpoint in argv[1], prints the workers' pids as one JSON line, then reads samples until killed."""

from __future__ import annotations

import asyncio
import json
import sys

from bridge.connectors.opcua import OpcUaAddress, OpcUaSourceSettings
from bridge.connectors.opcua._worker import OpcUaWorkerSource
from bridge.simulators.plant import PLANT_NAMESPACE
from bridge.types import SourceTag


async def main(endpoint: str) -> None:
    tags = [
        SourceTag(
            f"P{p}.Speed", OpcUaAddress.model_validate(f"nsu={PLANT_NAMESPACE};s=Pump{p:02d}.Speed")
        )
        for p in (1, 2)
    ]
    settings = OpcUaSourceSettings.model_validate(
        {"endpoint": endpoint, "sessions": 2, "workers": 2, "timeout_s": 2}
    )
    source = OpcUaWorkerSource("parent", settings, tags)
    await source.connect()
    print("PIDS " + json.dumps(source.pids), flush=True)
    async for _ in source.samples():
        pass


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
