"""The plant simulator's tags as an OPC UA source's ``SourceTag`` list (source tests)."""

from __future__ import annotations

from bridge.connectors.opcua import OpcUaAddress
from bridge.simulators.plant import PLANT_NAMESPACE
from bridge.simulators.plant.physics import SIGNALS
from bridge.types import SourceTag


def plant_tags(pumps: int) -> list[SourceTag]:
    """Every signal of pumps 1..``pumps``, named ``P<n>.<signal>``."""
    return [
        SourceTag(
            f"P{p}.{signal}",
            OpcUaAddress.model_validate(f"nsu={PLANT_NAMESPACE};s=Pump{p:02d}.{signal}"),
        )
        for p in range(1, pumps + 1)
        for signal in SIGNALS
    ]
